"""Op-level torch profile of one denoising loop on a random-weight shape, uncached or under methods (CPU).

Where a method's loop time goes that its MAC count does not show (element-wise forecasts, gathers, scatters,
concatenations) against the matmuls themselves. One warm-up loop, then one profiled loop per entry of
``--methods`` (``baseline`` for the uncached loop); prints the top ops by self CPU time.

    python benchmarks/profile_loop.py --model flux-dev-shallow --resolution 256 --steps 10 --guidance 1.0 \
        --methods baseline,toca:fast
"""

from __future__ import annotations

import argparse
import time

import torch

import tokencache as tc
from tokencache.config import CONFIG_CLASSES
from tokencache.harness.shapes import build_model, make_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a random-weight shape of `tokencache bench --model`")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--methods", default="baseline,toca:fast", help="comma-separated: baseline or METHOD:PRESET")
    parser.add_argument("--rows", type=int, default=20, help="ops to print per loop")
    args = parser.parse_args()

    model, family = build_model(args.model)
    model.eval().requires_grad_(False)
    loop = make_loop(model, family, args.resolution, 1, args.steps, args.guidance)
    batched_cfg = args.guidance > 1.0 and family == "sd3"  # the other flow families call per context or not at all
    with torch.inference_mode():
        loop()  # warm-up
        for entry in args.methods.split(","):
            if entry != "baseline":
                method, _, preset = entry.partition(":")
                cfg = CONFIG_CLASSES[method].preset(preset or "balanced")
                tc.apply(model, cfg, num_inference_steps=args.steps, cfg=batched_cfg)
            start = time.perf_counter()
            try:
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                    loop()
            finally:
                if entry != "baseline":
                    tc.remove(model)
            print(f"=== {entry}: {time.perf_counter() - start:.2f} s (profiled)")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows,
                                            max_name_column_width=40))


if __name__ == "__main__":
    main()
