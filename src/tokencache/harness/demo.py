"""``tokencache demo``: every method on the bundled reference models, offline, in a few minutes.

For each reference family (an SD-style UNet, a DiT, a PixArt-style transformer, all trained on
scikit-learn's digits, a FLUX-style flow-matching model, and a Wan video model making 5-frame clips of a
moving digit, scored on the clip's middle frame) it samples a fixed seeded batch with the
baseline and with the ``balanced`` and ``fast`` presets of every method that applies, then reports
measured speedup, exact MACs ratio, PSNR vs the baseline images, Frechet distance in the digit
classifier's features and class accuracy. It writes an image grid (rows = methods), ``report.json``
and ``report.md`` to the output folder.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import registry as api
from .args import add_demo_arguments
from .progress import Progress
from .registry import BaseConfig, load_config, method_specs, parse_method
from .tables import print_table

add_arguments = add_demo_arguments


@dataclass
class DemoRow:
    family: str
    method: str
    seconds: float
    speedup: float
    macs_ratio: float
    psnr_vs_baseline: float
    fd: float
    accuracy: float
    error: str = ""


#: the presets the demo runs (``quality`` is left to ``tokencache bench``: the demo must stay under 3 minutes)
DEMO_PRESETS = ("balanced", "fast")


def methods_for(family: str) -> list[tuple[str, BaseConfig]]:
    """``(name, config)`` of the :data:`DEMO_PRESETS` of every method that applies to a zoo family, then the
    family's shipped searched strategies."""
    from ..search import shipped_strategies

    out = [(spec, parse_method(spec)) for spec in method_specs(family, DEMO_PRESETS)]
    order = {"quality": 0, "balanced": 1, "fast": 2}
    found = [(name.rsplit("_", 1)[-1], path) for name, path in shipped_strategies().items()
             if name.startswith(f"reference_{family}_")]  # e.g. reference_unet_dato50_balanced
    for label, path in sorted(found, key=lambda f: (order.get(f[0], 3), f[0])):
        cfg = load_config(path)
        out.append((f"{cfg.method}:searched-{label}", cfg))
    return out


def _save_grid(rows: dict[str, torch.Tensor], path: Path, cols: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, axes = plt.subplots(len(names), cols, figsize=(cols * 0.6 + 1.6, len(names) * 0.65 + 0.2), squeeze=False)
    for r, name in enumerate(names):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(rows[name][c, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(out_dir: str | Path, per_digit: int = 2, steps: int = 50, families: tuple[str, ...] | None = None,
             progress: bool = True) -> list[DemoRow]:
    """Run the demo and write its report; returns the rows.

    Args:
        out_dir: folder for ``grid_<family>.png``, ``report.json`` and ``report.md``.
        per_digit: images per digit (10 digits per family).
        steps: denoising steps.
        families: zoo families to run (default: all).
    """
    from .. import zoo
    from ..metrics import classifier_features

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    families = tuple(families or zoo.FAMILIES)
    clf = zoo.load_classifier()
    _, _, x_test, _ = zoo.load_digits_split()
    real_feats = classifier_features(x_test, clf)  # held-out real digits, (N, 1, 8, 8) in [0, 1]
    digits = [d for d in range(10) for _ in range(per_digit)]
    plan = [(f, name, cfg) for f in families for name, cfg in [("baseline", None), *methods_for(f)]]
    rows: list[DemoRow] = []
    with Progress("demo", len(plan), progress) as bar:
        for family in families:
            _demo_family(family, plan, per_digit, steps, digits, clf, real_feats, bar, rows, out)
    meta = {"steps": steps, "images_per_family": len(digits), "torch": torch.__version__,
            "device": "cpu", "threads": torch.get_num_threads()}
    (out / "report.json").write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2))
    (out / "report.md").write_text(to_markdown(rows, meta) + "\n")
    return rows


def _demo_family(family: str, plan: list, per_digit: int, steps: int, digits: list[int], clf, real_feats, bar: Progress,
                 rows: list[DemoRow], out: Path) -> None:
    """The baseline and every method of one family: appends to ``rows``, writes the family's grid."""
    from .. import zoo
    from ..metrics import class_accuracy, classifier_features, frechet_distance, psnr

    pipe = zoo.load(family)
    zoo.sample(family, pipe, digits[:2], seed=1, num_inference_steps=2)  # warm-up
    grid: dict[str, torch.Tensor] = {}
    base_img, base_t = None, 0.0
    for f, name, cfg in plan:
        if f != family:
            continue
        bar.update(description=f"{family} {name}")
        try:
            if cfg is not None:
                api.apply(pipe, cfg)
            t0 = time.perf_counter()
            img = zoo.sample(family, pipe, digits, seed=0, num_inference_steps=steps)
            dt = time.perf_counter() - t0
            macs = api.summary(pipe).macs_ratio if cfg is not None else 1.0
            if cfg is None:
                base_img, base_t = img, dt
            grid[name] = img[::per_digit]
            rows.append(DemoRow(
                family, name, dt, base_t / dt, macs,
                float("inf") if cfg is None else float(psnr(img, base_img)),
                float(frechet_distance(classifier_features(img, clf), real_feats)),
                float(class_accuracy(img, digits, clf)),
            ))
        except Exception as e:  # report it and go on; the exit code says something failed
            rows.append(DemoRow(family, name, 0, 0, 0, 0, 0, 0, f"{type(e).__name__}: {e}"))
        finally:
            api.remove(pipe)
            bar.advance()
    _save_grid(grid, out / f"grid_{family}.png", cols=10)


def to_markdown(rows: list[DemoRow], meta: dict) -> str:
    lines = [
        f"Reference models, {meta['images_per_family']} images per family (wan: clips, middle frame scored), "
        f"{meta['steps']} steps (DDIM; Euler for flux and wan), "
        f"CPU ({meta['threads']} threads), torch {meta['torch']}. Speedup = wall time of the same sampling "
        "call vs the baseline, measured in one process.",
        "",
        "| family | method | speedup | MACs ratio | PSNR vs baseline (dB) | FD (digits) | accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.error:
            lines.append(f"| {r.family} | {r.method} | error: {r.error} | | | | |")
        else:
            lines.append(f"| {r.family} | {r.method} | {r.speedup:.2f}x | {r.macs_ratio:.3f} | "
                         f"{r.psnr_vs_baseline:.1f} | {r.fd:.2f} | {r.accuracy:.0%} |")
    return "\n".join(lines)


def table(rows: list[DemoRow]) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, cells and error lines of the terminal table (the method first: it is never wrapped)."""
    header = ["method", "family", "speedup", "MACs ratio", "PSNR dB", "FD", "accuracy"]
    cells = [[r.method, r.family, f"{r.speedup:.2f}x", f"{r.macs_ratio:.3f}", f"{r.psnr_vs_baseline:.1f}",
              f"{r.fd:.2f}", f"{r.accuracy:.0%}"] if not r.error else [r.method, r.family, "error (below)"]
             for r in rows]
    errors = [f"{r.family} {r.method}: {r.error}" for r in rows if r.error]
    return header, cells, errors


def run(args: argparse.Namespace) -> int:
    from .args import REFERENCE_FAMILIES

    per_digit, steps = (1, 10) if args.quick else (args.per_digit, args.steps)
    for name, value in (("--per-digit", per_digit), ("--steps", steps)):
        if value < 1:
            raise ValueError(f"demo {name}={value} is invalid; allowed: an integer >= 1")
    fams = tuple(f for f in args.families.split(",") if f) if args.families else None
    bad = [f for f in fams or () if f not in REFERENCE_FAMILIES]
    if bad or fams == ():
        raise ValueError(f"demo --families={args.families!r} is invalid; allowed: a comma-separated subset of "
                         f"{list(REFERENCE_FAMILIES)}")
    rows = run_demo(args.out, per_digit=per_digit, steps=steps, families=fams, progress=not args.json)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print_table(f"tokencache demo ({steps} steps) -> {Path(args.out).resolve()}", *table(rows))
        print(f"wrote {Path(args.out) / 'report.md'}, report.json and grid_*.png")
    return 1 if any(r.error for r in rows) else 0
