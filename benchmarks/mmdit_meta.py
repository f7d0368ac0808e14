"""Full-size MACs and cache memory of every transformer method on FLUX, SD3.5, Wan and Qwen-Image shapes.

The models are built on the ``meta`` device (no weights, no memory: FLUX.1-dev and Qwen-Image do not
fit in 24 GiB), the real denoising loop runs on meta tensors through the tokencache hooks, and
``tc.summary`` counts the exact MACs of the plan that ran and the bytes its caches held at the end of
the generation (the peak: caches only grow within a generation). No timing: see
``tokencache bench --model flux-dev-shallow`` (full width, reduced depth) for wall-clock ratios.

    .venv/bin/python benchmarks/mmdit_meta.py --out benchmarks/results/mmdit_meta.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import tokencache as tc
from tokencache.harness import registry, shapes
from tokencache.harness.bench.workloads import GUIDANCE

#: name -> resolution (the published default sizes; Wan at 480p x 5 frames)
MODELS = {"flux-dev": 1024, "sd35-medium": 1024, "sd35-large": 1024, "wan21-1.3b": 480, "wan21-14b": 480,
          "qwen-image": 1024}
METHODS = ("toca:balanced", "toca:fast", "duca:balanced", "duca:fast", "fora:balanced", "fora:fast")
#: forecasting and storage variants (TaylorSeer-like FORA, FoCa ToCa, bf16 caches computed in fp32)
VARIANTS = {
    "fora:balanced+taylor2": lambda: tc.FORAConfig.preset("balanced", forecast="taylor", forecast_order=2),
    "toca:balanced+foca": lambda: tc.ToCaConfig.preset("balanced", forecast="foca"),
    "toca:balanced+bf16-cache": lambda: tc.ToCaConfig.preset("balanced", cache_dtype="bfloat16"),
}


def measure(name: str, resolution: int, steps: int, specs: list[str]) -> list[dict]:
    model, family = shapes.build_model(name, device="meta")
    guidance = GUIDANCE[family]
    loop = shapes.make_loop(model, family, resolution, 1, steps, guidance)
    rows = []
    for spec in specs:
        cfg = VARIANTS[spec]() if spec in VARIANTS else registry.parse_method(spec)
        tc.apply(model, cfg, num_inference_steps=steps, cfg=guidance > 1.0 and family == "sd3")
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                loop()
            s = tc.summary(model)
        finally:
            tc.remove(model)
        rows.append(dict(model=name, resolution=resolution, method=spec, macs_ratio=s.macs_ratio,
                         macs_full_step=s.macs_full_step, calls=s.steps_total, cache_gib=s.cache_bytes / 2**30,
                         seconds=time.perf_counter() - t0))
        print(f"{name} {spec}: MACs {s.macs_ratio:.3f}x, cache {s.cache_bytes / 2**30:.2f} GiB", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {list(MODELS)}")
    p.add_argument("--methods", default=",".join(METHODS + tuple(VARIANTS)))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--out", default=None, help="write a markdown table here")
    args = p.parse_args()
    rows = []
    for name in args.models.split(","):
        if name not in MODELS:
            raise SystemExit(f"--models: {name!r} is unknown; allowed: {list(MODELS)}")
        rows += measure(name, MODELS[name], args.steps, [m for m in args.methods.split(",") if m])
    lines = [f"Full-size shapes on the meta device, {args.steps} steps, batch 1, tokencache {tc.__version__}, "
             f"torch {torch.__version__}. MACs: exact (flop_counter), accelerated / uncached over the generation. "
             "Cache: bytes held by the caches at the end of the generation, float32 unless stated.", "",
             "| model | resolution | method | TMACs per uncached call | MACs ratio | speed-up bound | cache (GiB) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['resolution']} | {r['method']} | {r['macs_full_step'] / 1e12:.2f} | "
                     f"{r['macs_ratio']:.3f} | {1 / r['macs_ratio']:.2f}x | {r['cache_gib']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
