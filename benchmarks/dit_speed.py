"""Speed of ToCa / DuCa / FORA on DiT-XL/2- and PixArt-alpha-shaped transformers (random weights, CPU).

Only the denoising loop runs: the transformer called directly with classifier-free guidance (batch 1,
so 2 rows per call) and a scheduler stepping the latents; no VAE and no text encoder. The baseline and
each method alternate in one process on the same inputs after a warm-up call. For each method it prints
the wall-clock speedup over the baseline, the exact MAC ratio from ``tc.summary`` (``torch.utils.
flop_counter`` on a meta twin), how much of the MAC reduction shows up as wall clock
(``speedup * macs_ratio``) and the cache memory held during a call.

Random weights say nothing about quality; these figures are for speed and MACs only.

Example:
    python benchmarks/dit_speed.py --steps 50 --repeats 1
    python benchmarks/dit_speed.py --model pixart-alpha --steps 20 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

import tokencache as tc
from tokencache.harness import shapes
from tokencache.harness.registry import parse_method

#: model -> (scheduler class name, CFG scale, default steps); shapes and the loop come from tokencache.harness.shapes
MODELS = {"dit-xl-2": ("DDIMScheduler", 1.5, 50), "pixart-alpha": ("DPMSolverMultistepScheduler", 4.5, 20)}


def build(model: str, steps: int) -> tuple[torch.nn.Module, Callable[[], torch.Tensor], Callable[[], torch.Tensor]]:
    """(transformer, its timed denoising loop, a 2-step warm-up loop) for a model name."""
    import diffusers

    if model not in MODELS:
        raise SystemExit(f"--model {model!r} is unknown; allowed: {sorted(MODELS)}")
    sched_name, guidance, _ = MODELS[model]
    net, family = shapes.build_model(model)
    resolution = shapes.MODELS[model][2]

    def loop(n: int) -> Callable[[], torch.Tensor]:
        sched = getattr(diffusers, sched_name)(num_train_timesteps=1000)
        run = shapes.make_loop(net, family, resolution, 1, n, guidance, scheduler=sched)
        return torch.no_grad()(run)

    return net, loop(steps), loop(2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="dit-xl-2", choices=sorted(MODELS))
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: 50 DiT DDIM, 20 PixArt DPM)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per method (alternating)")
    p.add_argument("--methods", default="toca:balanced,duca:fast,fora:balanced",
                   help="comma-separated method:preset list")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps or MODELS[args.model][2]
    methods = [(item, parse_method(item)) for item in args.methods.split(",") if item]

    net, denoise, warmup = build(args.model, steps)
    times: dict[str, list[float]] = {"baseline": []}
    info: dict[str, dict[str, Any]] = {}
    base_x = warmup()
    for r in range(args.repeats):
        t0 = time.perf_counter()
        base_x = denoise()
        times["baseline"].append(time.perf_counter() - t0)
        print(f"[repeat {r}] baseline {times['baseline'][-1]:.1f}s", file=sys.stderr)
        for label, cfg in methods:
            tc.apply(net, cfg, num_inference_steps=steps, cfg=True)
            try:
                t0 = time.perf_counter()
                x = denoise()
                times.setdefault(label, []).append(time.perf_counter() - t0)
                s = tc.summary(net)
            finally:
                tc.remove(net)
            rel = ((x - base_x).norm() / base_x.norm()).item()
            info[label] = {"macs_ratio": s.macs_ratio, "cache_bytes": s.cache_bytes, "steps_full": s.steps_full,
                           "steps_partial": s.steps_partial, "steps_aggressive": s.steps_aggressive,
                           "tokens_computed_fraction": s.tokens_computed_fraction, "rel_l2_vs_baseline": rel}
            print(f"[repeat {r}] {label} {times[label][-1]:.1f}s", file=sys.stderr)
    t_base = statistics.median(times["baseline"])
    rows = []
    for label, _ in methods:
        t = statistics.median(times[label])
        speedup = t_base / t
        mr = info[label]["macs_ratio"]
        rows.append({"method": label, "time_s": t, "speedup": speedup, "mac_reduction": 1 / mr,
                     "speedup_per_mac_reduction": speedup * mr, **info[label]})
    result = {"model": args.model, "steps": steps, "repeats": args.repeats, "threads": torch.get_num_threads(),
              "baseline_time_s": t_base, "methods": rows}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.model}, {steps} steps, CFG batch 2, {torch.get_num_threads()} threads, "
              f"baseline {t_base:.1f}s (median of {args.repeats})")
        print(f"{'method':<16}{'time s':>9}{'speedup':>9}{'MACs x':>8}{'1/MACs':>8}{'eff':>6}{'F/C/A':>10}"
              f"{'cache MiB':>11}{'relL2':>8}")
        for row in rows:
            fca = f"{row['steps_full']}/{row['steps_partial']}/{row['steps_aggressive']}"
            print(f"{row['method']:<16}{row['time_s']:>9.1f}{row['speedup']:>9.2f}{row['macs_ratio']:>8.3f}"
                  f"{row['mac_reduction']:>8.2f}{row['speedup_per_mac_reduction']:>6.2f}{fca:>10}"
                  f"{row['cache_bytes'] / 2**20:>11.1f}{row['rel_l2_vs_baseline']:>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
