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
from typing import Any

import torch

import tokencache as tc

DIT_XL2 = dict(
    num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
    sample_size=32, patch_size=2, num_embeds_ada_norm=1000,
)
PIXART_ALPHA_512 = dict(
    num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
    sample_size=64, patch_size=2, cross_attention_dim=1152, caption_channels=4096,
    norm_type="ada_norm_single", num_embeds_ada_norm=1000, use_additional_conditions=False,
)


def build(model: str) -> tuple[torch.nn.Module, Any, float, int]:
    """(transformer, scheduler, guidance scale, latent size) for a model name."""
    from diffusers import DDIMScheduler, DiTTransformer2DModel, DPMSolverMultistepScheduler, PixArtTransformer2DModel

    torch.manual_seed(0)
    if model == "dit-xl-2":
        net = DiTTransformer2DModel(**DIT_XL2).eval()
        return net, DDIMScheduler(num_train_timesteps=1000, clip_sample=False), 1.5, 32
    if model == "pixart-alpha":
        net = PixArtTransformer2DModel(**PIXART_ALPHA_512).eval()
        return net, DPMSolverMultistepScheduler(), 4.5, 64
    raise SystemExit(f"--model {model!r} is unknown; allowed: dit-xl-2, pixart-alpha")


def denoise(model: str, net: torch.nn.Module, sched: Any, guidance: float, size: int, steps: int) -> torch.Tensor:
    """One generation's denoising loop; returns the final latents."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, size, size, generator=g) * sched.init_noise_sigma
    sched.set_timesteps(steps)
    if model == "dit-xl-2":
        cond = {"class_labels": torch.tensor([207, 1000])}  # [cond; uncond], as DiTPipeline orders them
    else:
        text = torch.randn(2, 120, 4096, generator=g)
        mask = torch.ones(2, 120)
        cond = {"encoder_hidden_states": text, "encoder_attention_mask": mask}
    with torch.no_grad():
        for t in sched.timesteps:
            inp = sched.scale_model_input(torch.cat([x, x]), t)
            out = net(inp, timestep=t.expand(2), **cond).sample[:, :4]
            first, second = out.chunk(2)
            cond_eps, uncond_eps = (first, second) if model == "dit-xl-2" else (second, first)
            eps = uncond_eps + guidance * (cond_eps - uncond_eps)
            x = sched.step(eps, t, x).prev_sample
    return x


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="dit-xl-2", choices=["dit-xl-2", "pixart-alpha"])
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: 50 DiT DDIM, 20 PixArt DPM)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per method (alternating)")
    p.add_argument("--methods", default="toca:balanced,duca:fast,fora:balanced",
                   help="comma-separated method:preset list")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps or (50 if args.model == "dit-xl-2" else 20)
    classes = {"toca": tc.ToCaConfig, "duca": tc.DuCaConfig, "fora": tc.FORAConfig}
    methods = []
    for item in args.methods.split(","):
        name, _, preset = item.partition(":")
        methods.append((item, classes[name].preset(preset or "balanced")))

    net, sched, guidance, size = build(args.model)
    times: dict[str, list[float]] = {"baseline": []}
    info: dict[str, dict[str, Any]] = {}
    base_x = denoise(args.model, net, sched, guidance, size, 2)  # warm-up
    for r in range(args.repeats):
        t0 = time.perf_counter()
        base_x = denoise(args.model, net, sched, guidance, size, steps)
        times["baseline"].append(time.perf_counter() - t0)
        print(f"[repeat {r}] baseline {times['baseline'][-1]:.1f}s", file=sys.stderr)
        for label, cfg in methods:
            tc.apply(net, cfg, num_inference_steps=steps, cfg=True)
            try:
                t0 = time.perf_counter()
                x = denoise(args.model, net, sched, guidance, size, steps)
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
