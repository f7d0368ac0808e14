"""Quality study: fidelity (PSNR vs the uncached output) against measured speedup, per method.

Sweeps each method's strength on the trained reference models (tokencache.zoo), where caching
errors are realistic, and plots one curve per method. Speedups are wall-clock ratios of the same
sampling call in this process (CPU, so small models make fixed costs visible); MACs ratios are exact.

    python benchmarks/quality.py --families unet,dit --steps 50 --per-digit 2 --out benchmarks/results

Any of ``tokencache.zoo.ALL_FAMILIES`` (unet, dit, pixart, flux, wan; tier 2: dit2, unet2, pixart2) can be listed; the
transformer families are swept over ToCa, DuCa and FORA-like. For wan (5-frame clips) PSNR is over every frame,
accuracy of the middle one. Tier-2 families sample ``--per-digit`` glyphs of each letter A-Z, scored by the glyph
classifier (``unet2`` without the tier-1 searched strategies, which were searched on the tier-1 UNet).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import tokencache as tc
from tokencache import zoo
from tokencache.cli import quiet_notices
from tokencache.metrics import class_accuracy, psnr
from tokencache.search import shipped_strategies
from tokencache.zoo.wan import classified_frame


def sweeps(family: str) -> dict[str, list[tuple[str, tc.config.BaseConfig]]]:
    """method -> [(label, config)] from weakest to strongest."""
    if family in ("unet", "unet2"):

        def uniform(k: int, depth: int) -> list:
            return ["full" if i % k == 0 else depth for i in range(50)]

        return {
            "DaTo": [(f"N={k},r={r}", tc.DaToConfig(cache_plan=uniform(k, 1), prune_ratio=r))
                     for k, r in ((2, 0.3), (3, 0.4), (5, 0.4), (8, 0.5))]
            + [("fast", tc.DaToConfig.preset("fast"))],
            "DaTo (searched)": [(path.stem.rsplit("_", 1)[-1], tc.load_config(path))
                                for name, path in shipped_strategies().items()
                                if family == "unet" and name.startswith("reference_unet")],
            "DeepCache-like": [(f"N={k}", tc.DeepCacheConfig(interval=k, branch=0)) for k in (2, 3, 5, 8)],
            "ToMe-like": [(f"r={r}", tc.ToMeConfig(ratio=r)) for r in (0.3, 0.5, 0.7)],
        }
    out = {
        "ToCa": [(f"N={k}", tc.ToCaConfig.preset("balanced", interval=k)) for k in (2, 3, 4, 6)],
        "DuCa": [(p, tc.DuCaConfig.preset(p)) for p in ("quality", "balanced", "fast")],
        "FORA-like": [(f"N={k}", tc.FORAConfig(interval=k)) for k in (2, 3, 4, 6)],
    }
    return out


def timed_sample(family, pipe, digits, steps):
    """Digits ``(N, 1, 8, 8)``; video families (wan): every frame, ``(N, F, 1, 8, 8)``, so PSNR covers the clip."""
    t0 = time.perf_counter()
    output = "clips" if family in zoo.VIDEO_FAMILIES else None
    img = zoo.sample(family, pipe, digits, seed=0, num_inference_steps=steps, output=output)
    return img, time.perf_counter() - t0


def accuracy(family, img, digits, clf) -> float:
    """Class accuracy; for a clip, of its middle frame (the unshifted one, as ``zoo.evaluate`` scores it)."""
    return class_accuracy(classified_frame(img), digits, clf)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--families", default="unet,dit")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--per-digit", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per config (median)")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    quiet_notices()  # as the CLI: PixArt's clean_caption notice once per batch drowns the progress
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for family in args.families.split(","):
        tier = zoo.family_tier(family)
        digits = [d for d in range(10 if tier == 1 else len(zoo.CLASSES)) for _ in range(args.per_digit)]
        clf = zoo.load_classifier(tier=tier)
        pipe = zoo.load(family)
        zoo.sample(family, pipe, digits[:2], seed=1, num_inference_steps=2)
        base_times = []
        base = None
        for _ in range(args.repeats):
            base, t = timed_sample(family, pipe, digits, args.steps)
            base_times.append(t)
        t_base = sorted(base_times)[len(base_times) // 2]
        fam = results[family] = {"baseline_s": t_base, "baseline_acc": accuracy(family, base, digits, clf),
                                 "methods": {}}
        for method, points in sweeps(family).items():
            rows = fam["methods"][method] = []
            for label, cfg in points:
                tc.apply(pipe, cfg)
                try:
                    times = []
                    for _ in range(args.repeats):
                        img, t = timed_sample(family, pipe, digits, args.steps)
                        times.append(t)
                    s = tc.summary(pipe)
                finally:
                    tc.remove(pipe)
                t_m = sorted(times)[len(times) // 2]
                rows.append({"label": label, "speedup": t_base / t_m, "macs_ratio": s.macs_ratio,
                             "psnr": float(psnr(img, base)), "accuracy": accuracy(family, img, digits, clf)})
                print(family, method, rows[-1], flush=True)
        fam["methods"] = {m: rows for m, rows in fam["methods"].items() if rows}
        fam["comparisons"] = compare_all(fam["methods"], CLAIMS[family])
        for claim, by_axis in fam["comparisons"].items():
            for axis, points in by_axis.items():
                print(family, claim, axis, points, flush=True)
    (out / "quality.json").write_text(json.dumps(results, indent=2))
    plot(results, out / "quality.png")


#: the seeds' claims: (method, rival) pairs compared at equal speedup
CLAIMS = {"unet": [("DaTo", "DeepCache-like"), ("DaTo", "ToMe-like"), ("DaTo (searched)", "DaTo"),
                   ("DaTo (searched)", "DeepCache-like")],
          **{f: [("ToCa", "FORA-like"), ("DuCa", "FORA-like")]
             for f in ("dit", "pixart", "flux", "wan", "dit2", "pixart2", "flux2")}}
CLAIMS["unet2"] = CLAIMS["unet"][:2]


def _x(row: dict, axis: str) -> float:
    return row["speedup"] if axis == "speedup" else 1.0 / row["macs_ratio"]


def interpolate(rows: list[dict], axis: str, x: float) -> float | None:
    """PSNR of a method's curve at ``x`` (linear between its two nearest points); None outside its range."""
    pts = sorted((_x(r, axis), r["psnr"]) for r in rows)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def compare_all(methods: dict[str, list[dict]], claims: list[tuple[str, str]]) -> dict:
    """For each claim and axis: every point of the method with the rival's PSNR at the same x (or None)."""
    out: dict = {}
    for method, rival in claims:
        if method not in methods or rival not in methods:
            continue
        out[f"{method} vs {rival}"] = {
            axis: [{"label": r["label"], "x": round(_x(r, axis), 3), "psnr": round(r["psnr"], 2),
                    "rival_psnr": None if (v := interpolate(methods[rival], axis, _x(r, axis))) is None
                    else round(v, 2)} for r in methods[method]]
            for axis in ("speedup", "mac_reduction")
        }
    return out


def plot(results: dict, path: Path) -> None:
    """Two rows of panels, one column per family: PSNR vs measured speedup, and PSNR vs MAC reduction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_of = {"speedup": "measured speedup (x, wall clock)", "mac_reduction": "MAC reduction (x, exact)"}
    fig, axes = plt.subplots(2, len(results), figsize=(5.5 * len(results), 8), squeeze=False)
    for col, (family, fam) in enumerate(results.items()):
        for row, (key, label) in enumerate(axes_of.items()):
            ax = axes[row][col]
            for method, rows in fam["methods"].items():
                xs = [r["speedup"] if key == "speedup" else 1.0 / r["macs_ratio"] for r in rows]
                ys = [r["psnr"] for r in rows]
                ax.plot(xs, ys, marker="o", label=method)
                for x, y, r in zip(xs, ys, rows):
                    ax.annotate(r["label"], (x, y), fontsize=6)
            ax.set_xlabel(label)
            ax.set_ylabel("PSNR vs uncached (dB)")
            ax.set_title(f"reference {family}")
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
