"""Pick searched FORA placements from a study and write them as shipped strategies.

For each MACs target, the front member with the best PSNR among those at or below the target's MACs, kept
only if it beats every seeded uniform (TaylorSeer-style) plan at or below those MACs on the search's own
samples. The evaluation on other seeds is ``benchmarks/frontier.py``.

    tokencache search --reference dit --method fora --placement --steps 50 --samples 20 --batch-size 20 \\
        --trials 500 --population 32 --guidance-scale 3 --fidelity-on image --seed 7 --out /tmp/search/dit
    python benchmarks/export_placements.py --study /tmp/search/dit/study.db --family dit
"""

from __future__ import annotations

import argparse
from pathlib import Path

import optuna
import yaml

from tokencache.search import STRATEGIES_DIR

TARGETS = (0.45, 0.35, 0.27, 0.21)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", required=True)
    ap.add_argument("--family", required=True)
    ap.add_argument("--name", default="tokencache-fora-50")
    ap.add_argument("--out", default=str(STRATEGIES_DIR))
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=args.name, storage=f"sqlite:///{args.study}")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    for target in TARGETS:
        ok = [t for t in done if t.user_attrs["metrics"]["macs"] <= target + 1e-9]
        seeded = [t for t in ok if t.user_attrs.get("preset_seed")]
        if not ok:
            continue
        best = max(ok, key=lambda t: t.user_attrs["metrics"]["psnr"])
        ref = max(seeded, key=lambda t: t.user_attrs["metrics"]["psnr"]) if seeded else None
        m, r = best.user_attrs["metrics"], ref.user_attrs["metrics"] if ref else None
        uniform = "-" if r is None else f"{r['macs']:.3f} / {r['psnr']:.2f} dB"
        print(f"MACs <= {target}: trial {best.number} {m['macs']:.3f} / {m['psnr']:.2f} dB; uniform {uniform}")
        if best.user_attrs.get("preset_seed") or (r is not None and m["psnr"] <= r["psnr"]) or args.dry_run:
            continue
        cfg = best.user_attrs["config"]
        plan = cfg["step_plan"]
        header = [
            f"# FORA-like full-step placement found by NSGA-II on the trained reference {args.family}",
            f"# (tokencache.zoo '{args.family}'), 50 DDIM steps, CFG 3, 20 fixed digit/seed pairs (--seed 7);",
            f"# trial {best.number} of {len(done)} of `tokencache search --method fora --placement` (benchmarks/"
            "export_placements.py has the command).",
            f"# On the search samples: MACs ratio {m['macs']:.3f}, PSNR {m['psnr']:.2f} dB vs uncached; the best "
            f"uniform (TaylorSeer-style) plan at <= {target} MACs: {uniform}.",
            f"# {plan.count('F')} full steps at {[i for i, c in enumerate(plan) if c == 'F']}; "
            f"forecast {cfg['forecast']} order {cfg['forecast_order']}.",
            "# An example of what a placement search finds: search your own model, scheduler and step count.",
        ]
        path = Path(args.out) / f"reference_{args.family}_fora50_m{round(target * 100)}.yaml"
        path.write_text("\n".join(header) + "\n" + yaml.safe_dump(cfg, sort_keys=False))
        print("  ->", path)


if __name__ == "__main__":
    main()
