"""Pick searched strategies that beat a method's presets and write them as shipped strategies.

For each preset the search started from (the trials marked ``preset_seed``), the front member with the
best PSNR among those at or below the preset's MACs on the search's own samples; it is written only if it
beats the preset by more than ``--margin`` dB. The evaluation on other seeds is ``benchmarks/frontier.py``;
``tests/test_search.py`` re-checks the domination on the search samples.

    tokencache search --reference dit --method duca --steps 50 --samples 20 --batch-size 20 --trials 600 \\
        --population 32 --guidance-scale 3 --fidelity-on image --seed 7 --out /tmp/search/dit_duca
    python benchmarks/export_strategies.py --study /tmp/search/dit_duca/study.db --family dit --method duca
"""

from __future__ import annotations

import argparse
from pathlib import Path

import optuna
import yaml

from tokencache.search import STRATEGIES_DIR

PRESETS = ("quality", "balanced", "fast")


def preset_of(trial: optuna.trial.FrozenTrial, presets: dict[str, dict]) -> str | None:
    """The preset name whose config a seeded trial ran (``None`` for a searched trial)."""
    if not trial.user_attrs.get("preset_seed"):
        return None
    cfg = trial.user_attrs["config"]
    return next((name for name, p in presets.items() if p == cfg), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", required=True, help="the search's study.db")
    ap.add_argument("--family", required=True, help="the reference family it searched (file names)")
    ap.add_argument("--method", required=True, choices=("toca", "duca"))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--margin", type=float, default=0.5, help="dB a strategy must gain over its preset")
    ap.add_argument("--out", default=str(STRATEGIES_DIR))
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()

    import tokencache as tc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = f"tokencache-{args.method}-{args.steps}"
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{args.study}")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    cls = {"toca": tc.ToCaConfig, "duca": tc.DuCaConfig}[args.method]
    presets = {p: cls.preset(p).to_dict() for p in PRESETS}
    seeded = {p: t for t in done if (p := preset_of(t, presets))}
    for preset in PRESETS:
        if preset not in seeded:
            print(f"{preset}: not in the study (it started without this preset)")
            continue
        ref = seeded[preset].user_attrs["metrics"]
        ok = [t for t in done if t.user_attrs["metrics"]["macs"] <= ref["macs"] + 1e-9]
        best = max(ok, key=lambda t: t.user_attrs["metrics"]["psnr"])
        m = best.user_attrs["metrics"]
        gain = m["psnr"] - ref["psnr"]
        print(f"{preset}: preset {ref['macs']:.3f} / {ref['psnr']:.2f} dB; best at <= its MACs: trial "
              f"{best.number} {m['macs']:.3f} / {m['psnr']:.2f} dB ({gain:+.2f})")
        if gain <= args.margin or args.dry_run:
            continue
        cfg = best.user_attrs["config"]
        genes = ", ".join(f"{k}={v}" for k, v in best.params.items())
        header = [
            f"# {dict(toca='ToCa', duca='DuCa')[args.method]} strategy found by NSGA-II on the trained "
            f"reference {args.family} (tokencache.zoo '{args.family}'), {args.steps} DDIM steps, CFG 3,",
            f"# 20 fixed class/seed pairs (--seed 7); trial {best.number} of {len(done)} of `tokencache search "
            f"--method {args.method}` (benchmarks/export_strategies.py has the command).",
            f"# On the search samples: MACs ratio {m['macs']:.3f}, PSNR {m['psnr']:.2f} dB vs uncached "
            f"(preset '{preset}': MACs ratio {ref['macs']:.3f}, PSNR {ref['psnr']:.2f} dB).",
            f"# Genes: {genes}.",
            "# An example of what a search finds: search your own model, scheduler and step count.",
        ]
        cls.from_dict(cfg)  # validates before writing
        path = Path(args.out) / f"reference_{args.family}_{args.method}{args.steps}_{preset}.yaml"
        path.write_text("\n".join(header) + "\n" + yaml.safe_dump(cfg, sort_keys=False))
        print(f"  wrote {path}")


if __name__ == "__main__":
    main()
