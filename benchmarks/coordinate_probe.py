"""Which variable should a forecast be a polynomial in? step index vs timestep vs sigma (PSNR vs uncached).

    .venv/bin/python benchmarks/coordinate_probe.py

Same cached schedule (so the same MACs) for every coordinate; only the forecast's variable changes. On the
reference DiT and UNet with DPM-Solver++ (Karras sigmas, a non-uniform schedule; 20 steps, CFG 3), and on
the FLUX-family reference with its flow-matching Euler schedule shifted (``shift=3``, non-uniform sigmas;
20 steps, true CFG 3). 10 digits, seed 0.
"""

from __future__ import annotations

import torch

import tokencache as tc
from tokencache import zoo
from tokencache.metrics import psnr

STEPS = 20
CONFIGS = {
    "dit": lambda **kw: tc.FORAConfig(interval=3, forecast="taylor", **kw),
    "unet": lambda **kw: tc.DeepCacheConfig(interval=3, branch=0, forecast="taylor", **kw),
    "flux": lambda **kw: tc.FORAConfig(interval=3, forecast="taylor", **kw),
}


def _scheduler(family: str, pipe):
    if family == "flux":
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, shift=3.0)
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)


def main() -> None:
    torch.set_num_threads(1)
    digits = list(range(10))
    print("| model, schedule | order | step | timestep | sigma | MACs |")
    print("|---|---|---|---|---|---|")
    for fam, make in CONFIGS.items():
        pipe = zoo.load(fam)
        pipe.scheduler = _scheduler(fam, pipe)
        base = zoo.sample(fam, pipe, digits, seed=0, num_inference_steps=STEPS)
        for order in (1, 2):
            row, macs = [], 0.0
            for coord in ("step", "timestep", "sigma"):
                try:
                    tc.apply(pipe, make(forecast_order=order, forecast_coordinate=coord))
                    out = zoo.sample(fam, pipe, digits, seed=0, num_inference_steps=STEPS)
                    macs = tc.summary(pipe).macs_ratio
                    row.append(f"{psnr(out, base):.1f}")
                except ValueError as e:
                    row.append(f"n/a ({e.args[0].split(':')[0][:40]})")
                finally:
                    tc.remove(pipe)
            sched = "flow Euler shift 3" if fam == "flux" else "DPM++ Karras"
            print(f"| {fam}, {sched} | {order} | {' | '.join(row)} | {macs:.3f} |", flush=True)


if __name__ == "__main__":
    main()
