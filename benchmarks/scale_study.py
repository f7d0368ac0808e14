"""The scale study: do the orderings between caching methods change when the model has more tokens?

Reads the fair-protocol results of a tier-1 and a tier-2 reference family (``benchmarks/frontier.py``,
``frontier_FAMILY.json``) and compares method groups on each, at equal measured end-to-end speedup and
at equal MAC reduction (``1 / MACs ratio``, exact, so free of the machine's timing noise; peers have no
MAC count and appear on the speed axis only):

* ``FORA-like (reuse)``: whole blocks reused between full steps;
* ``ToCa/DuCa (reuse)``: the token-level methods as their authors wrote them (cached tokens reused);
* ``FORA-like + forecast``: whole blocks forecast (Taylor 1 / FoCa, and the searched placements);
* ``ToCa/DuCa + forecast``: the token-level methods with cached tokens forecast (their presets);
* ``best peer``: every peer's points pooled (speed axis only).

A UNet pair (``--pair unet unet2``) has the same four groups with DeepCache-like caching in FORA-like's
place and DaTo (the same schedules with the top level's self-attention pruned, and pruning alone) in
ToCa/DuCa's; its token count is the top attention level's and its depth the number of UNet levels.

Each group's value at a speed is its Pareto front (PSNR vs uncached, mean over seeds) interpolated there
(``tokencache.harness.frontier.frontier_at``); the *gap* is token-level minus FORA-like, with reuse and with
forecasts. The token counts and depths come from the shipped model configs.

    python benchmarks/scale_study.py --pair dit dit2 --out benchmarks/results
    python benchmarks/scale_study.py --pair unet unet2 --name scale_study_unet
    python benchmarks/scale_study.py --pair flux flux2 --name scale_study_flux
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from frontier import speedup  # benchmarks/frontier.py, next to this script
from tokencache.harness.frontier import frontier_at, pareto_front
from tokencache.zoo.files import WEIGHTS_DIR

GROUPS: dict[str, tuple[str, ...]] = {
    "FORA-like (reuse)": ("FORA-like (reuse)",),
    "ToCa/DuCa (reuse)": ("ToCa (reuse)", "DuCa (reuse)"),
    "FORA-like + forecast": ("tokencache FORA + Taylor 1 (TaylorSeer positions)",
                             "tokencache FORA + FoCa (TaylorSeer positions)", "tokencache FORA searched placement"),
    "ToCa/DuCa + forecast": ("tokencache DuCa + Taylor 1", "tokencache DuCa presets (Taylor 1)",
                             "tokencache ToCa presets (Taylor 1)"),
}
UNET_GROUPS: dict[str, tuple[str, ...]] = {
    "DeepCache-like (reuse)": ("DeepCache-like (reuse)",),
    "DaTo (reuse)": ("DaTo (reuse)", "DaTo pruning only"),
    "DeepCache-like + forecast": ("tokencache DeepCache-like + Taylor 1", "tokencache DeepCache-like + FoCa"),
    "DaTo + forecast": ("tokencache DaTo + Taylor 1", "tokencache DaTo presets (Taylor 1)"),
}
"""The UNet pair's groups, in the same roles (whole-step caching, reuse; token-level; the same forecast)."""
SPEEDS = (1.5, 2.0, 2.5, 3.0)
MAC_CUTS = (2.0, 3.0, 4.0)


def groups_of(family: str) -> dict[str, tuple[str, ...]]:
    """The method groups of a family: `UNET_GROUPS` for the UNets, else `GROUPS`."""
    return UNET_GROUPS if family.startswith("unet") else GROUPS


def model_shape(family: str) -> dict[str, int]:
    """Tokens per self-attention and blocks of a shipped family (from its config). UNets: the top attention
    level's tokens, and the number of resolution levels as blocks."""
    meta = json.loads((WEIGHTS_DIR / f"{family}.json").read_text())
    if "unet" in meta["configs"]:
        cfg = meta["configs"]["unet"]
        return {"tokens": cfg["sample_size"] ** 2, "blocks": len(cfg["block_out_channels"]),
                "width": cfg["block_out_channels"][0], "unit": "levels"}
    if "flux" in meta["configs"]:  # FLUX: 2x2-packed latents (16x16 digits or 32x32 glyphs), double + single blocks
        cfg = meta["configs"]["flux"]
        side = (16 if meta.get("tier", 1) == 1 else 32) // 2
        return {"tokens": side * side, "blocks": cfg["num_layers"] + cfg["num_single_layers"],
                "width": cfg["num_attention_heads"] * cfg["attention_head_dim"], "unit": "blocks"}
    cfg = next(v for k, v in meta["configs"].items() if k not in ("scheduler", "text_encoder"))
    side = cfg["sample_size"] // cfg["patch_size"]
    return {"tokens": side * side, "blocks": cfg["num_layers"],
            "width": cfg["num_attention_heads"] * cfg["attention_head_dim"], "unit": "blocks"}


def group_points(
    state: dict[str, Any], groups: dict[str, tuple[str, ...]] = GROUPS
) -> tuple[dict[str, list], dict[str, list]]:
    """(group -> [(speedup, PSNR)], group -> [(MAC reduction, PSNR)]) from a frontier state."""
    speed: dict[str, list] = {g: [] for g in (*groups, "best peer")}
    macs: dict[str, list] = {g: [] for g in groups}
    for r in state["rows"].values():
        if "error" in r:
            continue
        y = statistics.mean(r["psnr"])
        x = speedup(r, state["baseline"])
        if not r["ours"]:
            speed["best peer"].append((x, y))
            continue
        for g, curves in groups.items():
            if r["curve"] in curves:
                speed[g].append((x, y))
                if r.get("macs_ratio"):
                    macs[g].append((1.0 / r["macs_ratio"], y))
    return speed, macs


def at(points: list, x: float) -> float | None:
    return frontier_at(pareto_front(points), x) if points else None


def study(pair: tuple[str, str], results: Path) -> dict[str, Any]:
    """Every group's interpolated PSNR per family, on both axes, and the token-level gaps."""
    groups = groups_of(pair[0])
    if groups is not groups_of(pair[1]):
        raise ValueError(f"pair must be two transformer or two UNet families, got {pair}")
    base, token = list(groups)[0], list(groups)[1]
    fbase, ftoken = list(groups)[2], list(groups)[3]
    out: dict[str, Any] = {"families": {}, "groups": list(groups)}
    for fam in pair:
        state = json.loads((results / f"frontier_{fam}.json").read_text())
        speed, macs = group_points(state, groups)
        st = state["settings"]
        out["families"][fam] = {
            **model_shape(fam), "images": len(st["seeds"]) * st["per_seed"], "threads": st["threads"],
            "speed": {s: {g: at(p, s) for g, p in speed.items()} for s in SPEEDS},
            "macs": {m: {g: at(p, m) for g, p in macs.items()} for m in MAC_CUTS},
        }
        for axis in ("speed", "macs"):
            for row in out["families"][fam][axis].values():
                row["gap (reuse)"] = _sub(row[token], row[base])
                row["gap (forecast)"] = _sub(row[ftoken], row[fbase])
    return out


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _f(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def report(res: dict[str, Any], out: Path, name: str) -> str:
    fams = res["families"]
    groups = res["groups"]
    flow = all(f.startswith("flux") for f in fams)
    solver = "Euler steps (flow matching), true CFG 3" if flow else "DDIM steps, CFG 3"
    lines = ["**Scale study: PSNR vs uncached (dB) of each method group's frontier, interpolated** "
             f"(fair protocol, 50 {solver}; '-': the group never reaches that point)", ""]
    for axis, label, keys in (("speed", "measured e2e speedup", SPEEDS), ("macs", "MAC reduction", MAC_CUTS)):
        cols = [*groups, *(["best peer"] if axis == "speed" else []), "gap (reuse)", "gap (forecast)"]
        unit = next(iter(fams.values())).get("unit", "blocks")
        lines += [f"| family (tokens x {unit}) | {label} | " + " | ".join(cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        for fam, f in fams.items():
            for k in keys:
                row = f[axis][k]
                lines.append(f"| {fam} ({f['tokens']} x {f['blocks']}) | {k:g}x | "
                             + " | ".join(_f(row[c], "+.1f" if c.startswith("gap") else ".1f") for c in cols) + " |")
        lines.append("")
    lines.append(f"gap = {groups[1].split(' (')[0]} minus {groups[0].split(' (')[0]} at the same point "
                 "(positive: the token-level method wins).")
    text = "\n".join(lines) + "\n"
    (out / f"{name}.md").write_text(text)
    (out / f"{name}.json").write_text(json.dumps(res, indent=1))
    plot(res, out / f"{name}.png")
    return text


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = res["families"]
    tokens = [f["tokens"] for f in fams.values()]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, axis, keys, label in ((axes[0], "speed", SPEEDS, "e2e"), (axes[1], "macs", MAC_CUTS, "MAC cut")):
        for gap, style in (("gap (reuse)", "-"), ("gap (forecast)", "--")):
            for k in keys:
                ys = [f[axis][k][gap] for f in fams.values()]
                if all(y is None for y in ys):
                    continue
                ax.plot(tokens, [float("nan") if y is None else y for y in ys], style, marker="o",
                        label=f"{gap.split('(')[1][:-1]}, {k:g}x {label}")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(tokens, [f"{t}\n({f['blocks']} {f.get('unit', 'blocks')})"
                           for t, f in zip(tokens, fams.values())])
        ax.set_xlabel("tokens per self-attention")
        token, whole = (g.split(" (")[0] for g in res["groups"][1::-1])
        ax.set_title(f"{token} minus {whole}, at equal {'speed' if axis == 'speed' else 'MACs'}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("PSNR gap (dB)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", nargs=2, default=("dit", "dit2"), metavar=("TIER1", "TIER2"))
    ap.add_argument("--results", default="benchmarks/results", help="where frontier_FAMILY.json are")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--name", default="scale_study_dit")
    args = ap.parse_args()
    res = study(tuple(args.pair), Path(args.results))
    print(report(res, Path(args.out), args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
