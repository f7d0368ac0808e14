#!/usr/bin/env python
"""Kernel launches per generation of every method preset at the published shapes (meta device, no GPU needed).

For each shape the denoiser is built on the ``meta`` device in bfloat16 (what the GPU benchmark runs), the
bare sampling loop of ``tokencache bench`` runs through the real hooks, and
:func:`tokencache.harness.launches.census` counts every kernel-launching aten operator per denoiser call;
``tc.summary`` gives the exact MACs ratio. The two bounds it prints are what a GPU would show at its two
extremes: launch-bound (small shapes in eager mode: speed-up ~ baseline launches / method launches) and
compute-bound (speed-up ~ 1 / MACs ratio). See ``docs/gpu.md``.

    .venv/bin/python benchmarks/launches.py --out benchmarks/results/launches
    .venv/bin/python benchmarks/launches.py --shapes dit-xl-2 --methods toca:fast --steps 10 --out /tmp/l
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's tokencache

import tokencache as tc  # noqa: E402
from tokencache.harness import registry, shapes  # noqa: E402
from tokencache.harness.bench.workloads import CHECKPOINT_GUIDANCE  # noqa: E402
from tokencache.harness.launches import census_with  # noqa: E402

#: shape -> published steps (the GPU benchmark's shapes, then SD3.5-medium)
SHAPES = {"sd15": 50, "sdxl": 30, "dit-xl-2": 50, "pixart-alpha-1024": 20, "flux-dev": 28, "sd35-medium": 28}
#: families whose loop batches CFG as ``[uncond; cond]`` in one call (declared to the method, as pipelines do)
CFG_BATCHED = ("unet", "dit", "pixart", "latte", "sd3")


def measure(name: str, steps: int, specs: list[str] | None) -> list[dict]:
    """Census of the uncached loop and of each ``method:preset`` (all that apply when ``specs`` is None)."""
    model, family = shapes.build_model(name, dtype=torch.bfloat16, device="meta")
    resolution = shapes.MODELS[name][2]
    guidance = CHECKPOINT_GUIDANCE[family]
    loop = shapes.make_loop(model, family, resolution, 1, steps, guidance)
    specs = registry.method_specs(family) if specs is None else [s for s in specs if
                                                                  registry.applies(s.split(":")[0], family)]
    rows: list[dict] = []
    base = None
    for spec in ["none", *specs]:
        cfg = None if spec == "none" else registry.parse_method(spec)
        t0 = time.perf_counter()
        c, s = census_with(model, loop, cfg, steps, cfg=guidance > 1.0 and family in CFG_BATCHED)
        base = base or c
        macs = s.macs_ratio if s is not None else 1.0
        rows.append(dict(
            shape=name, family=family, resolution=resolution, steps=steps, method=spec, calls=len(c.per_call),
            launches=c.denoiser, loop_launches=c.loop, launches_ratio=c.denoiser / base.denoiser,
            per_call={k: {"calls": n, "median": m} for k, (n, m) in c.by_kind().items()},
            macs_ratio=macs, launch_bound=base.total / c.total, compute_bound=1.0 / macs,
            cache_mib=(s.cache_bytes / 2**20) if s is not None else 0.0,
            top_ops=dict((c.ops - base.ops).most_common(8)) if spec != "none" else {},
            seconds=round(time.perf_counter() - t0, 1),
        ))
        r = rows[-1]
        print(f"{name} {spec}: {r['launches']} launches ({r['launches_ratio']:.2f}x), MACs {macs:.3f}, "
              f"{r['seconds']} s", flush=True)
    return rows


def to_markdown(rows: list[dict]) -> str:
    lines = [
        f"Kernel launches per generation, counted on the `meta` device (bfloat16, batch 1, CFG batched where the "
        f"pipeline batches it), tokencache {tc.__version__}, torch {torch.__version__}. *launches*: aten operators "
        "that issue device work inside the denoiser calls (views, allocations and detaches excluded; attention "
        "counts as one fused kernel); *per call*: calls x median launches of one call, by step kind; "
        "*launch-bound* = total launches of the uncached generation (sampler included) / the method's; "
        "*compute-bound* = 1 / MACs ratio.", "",
        "| shape | steps | method | launches | vs uncached | per call, by step kind | MACs ratio | "
        "launch-bound speed-up | compute-bound speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per = ", ".join(f"{k} {v['calls']} x {v['median']}" for k, v in r["per_call"].items())
        lines.append(f"| {r['shape']} | {r['steps']} | {r['method']} | {r['launches']} | {r['launches_ratio']:.2f}x | "
                     f"{per} | {r['macs_ratio']:.3f} | {r['launch_bound']:.2f}x | {r['compute_bound']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated subset of {list(SHAPES)}")
    p.add_argument("--methods", default=None, help="comma-separated method:preset list (default: every preset)")
    p.add_argument("--steps", type=int, default=None, help="steps of every shape (default: each one's published)")
    p.add_argument("--out", required=True, help="folder for launches.md and launches.json")
    a = p.parse_args(argv)
    names = [s for s in a.shapes.split(",") if s]
    for s in names:
        if s not in SHAPES:
            p.error(f"--shapes: {s!r} is unknown; allowed: {list(SHAPES)}")
    if a.steps is not None and a.steps < 1:
        p.error(f"--steps={a.steps} is invalid; allowed: a positive integer")
    specs = [m for m in a.methods.split(",") if m] if a.methods else None
    rows: list[dict] = []
    for s in names:
        rows += measure(s, a.steps or SHAPES[s], specs)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    text = to_markdown(rows)
    (out / "launches.md").write_text(text)
    (out / "launches.json").write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
