"""Pick searched strategies from a study and write them as shipped strategies.

Two kinds of search, one rule: a searched strategy ships only where it beats what the search started
from, at or below the same MACs, on the search's own samples. The evaluation on other seeds is
``benchmarks/frontier.py``; ``tests/test_search.py`` re-checks the domination on the search samples.

- ``--method toca|duca`` (a strategy search seeded with the presets): for each preset, the front member
  with the best PSNR at or below the preset's MACs, written if it beats the preset by more than
  ``--margin`` dB.
- ``--method fora`` (a ``--placement`` search seeded with uniform TaylorSeer-style plans): for each MACs
  target in ``PLACEMENT_TARGETS``, the best member at or below it, written if it beats every seeded
  uniform plan at or below those MACs.

    tokencache search --reference dit --method duca --steps 50 --samples 20 --batch-size 20 --trials 600 \\
        --population 32 --guidance-scale 3 --fidelity-on image --seed 7 --out /tmp/search/dit_duca
    python benchmarks/export_strategies.py --study /tmp/search/dit_duca/study.db --family dit --method duca
    tokencache search --reference dit --method fora --placement --steps 50 --samples 20 --batch-size 20 \\
        --trials 500 --population 32 --guidance-scale 3 --fidelity-on image --seed 7 --out /tmp/search/dit
    python benchmarks/export_strategies.py --study /tmp/search/dit/study.db --family dit --method fora
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import optuna
import yaml

from tokencache.search import STRATEGIES_DIR

PRESETS = ("quality", "balanced", "fast")
#: MACs ratios at which a placement search's front is cut (file suffix ``m45`` = 0.45)
PLACEMENT_TARGETS = (0.45, 0.35, 0.27, 0.21)
FOOTER = "# An example of what a search finds: search your own model, scheduler and step count."
Trial = optuna.trial.FrozenTrial


def metrics(t: Trial) -> dict[str, float]:
    return t.user_attrs["metrics"]


def best_within(trials: list[Trial], macs: float) -> Trial | None:
    """The trial with the best PSNR among those at or below ``macs`` (``None`` if there is none)."""
    ok = [t for t in trials if metrics(t)["macs"] <= macs + 1e-9]
    return max(ok, key=lambda t: metrics(t)["psnr"]) if ok else None


def describe(t: Trial) -> str:
    return f"{metrics(t)['macs']:.3f} / {metrics(t)['psnr']:.2f} dB"


def preset_of(trial: Trial, presets: dict[str, dict]) -> str | None:
    """The preset name whose config a seeded trial ran (``None`` for a searched trial)."""
    if not trial.user_attrs.get("preset_seed"):
        return None
    cfg = trial.user_attrs["config"]
    return next((name for name, p in presets.items() if p == cfg), None)


def write(path: Path, header: list[str], cfg: dict[str, Any]) -> None:
    path.write_text("\n".join([*header, FOOTER]) + "\n" + yaml.safe_dump(cfg, sort_keys=False))
    print(f"  wrote {path}")


def export_presets(done: list[Trial], args: argparse.Namespace) -> None:
    import tokencache as tc

    cls = {"toca": tc.ToCaConfig, "duca": tc.DuCaConfig}[args.method]
    presets = {p: cls.preset(p).to_dict() for p in PRESETS}
    seeded = {p: t for t in done if (p := preset_of(t, presets))}
    for preset in PRESETS:
        if preset not in seeded:
            print(f"{preset}: not in the study (it started without this preset)")
            continue
        ref = metrics(seeded[preset])
        best = best_within(done, ref["macs"])  # never None: the preset's own trial qualifies
        gain = metrics(best)["psnr"] - ref["psnr"]
        print(f"{preset}: preset {describe(seeded[preset])}; best at <= its MACs: trial {best.number} "
              f"{describe(best)} ({gain:+.2f})")
        if gain <= args.margin or args.dry_run:
            continue
        cfg = best.user_attrs["config"]
        cls.from_dict(cfg)  # validates before writing
        m = metrics(best)
        write(Path(args.out) / f"reference_{args.family}_{args.method}{args.steps}_{preset}.yaml", [
            f"# {dict(toca='ToCa', duca='DuCa')[args.method]} strategy found by NSGA-II on the trained "
            f"reference {args.family} (tokencache.zoo '{args.family}'), {args.steps} DDIM steps, CFG 3,",
            f"# 20 fixed class/seed pairs (--seed 7); trial {best.number} of {len(done)} of `tokencache search "
            f"--method {args.method}` (benchmarks/export_strategies.py has the command).",
            f"# On the search samples: MACs ratio {m['macs']:.3f}, PSNR {m['psnr']:.2f} dB vs uncached "
            f"(preset '{preset}': MACs ratio {ref['macs']:.3f}, PSNR {ref['psnr']:.2f} dB).",
            f"# Genes: {', '.join(f'{k}={v}' for k, v in best.params.items())}.",
        ], cfg)


def export_placements(done: list[Trial], args: argparse.Namespace) -> None:
    import tokencache as tc

    uniform = [t for t in done if t.user_attrs.get("preset_seed")]
    for target in PLACEMENT_TARGETS:
        best = best_within(done, target)
        if best is None:
            continue
        ref = best_within(uniform, target)
        ref_text = "-" if ref is None else describe(ref)
        print(f"MACs <= {target}: trial {best.number} {describe(best)}; uniform {ref_text}")
        beaten = ref is None or metrics(best)["psnr"] > metrics(ref)["psnr"]
        if best.user_attrs.get("preset_seed") or not beaten or args.dry_run:
            continue
        cfg = best.user_attrs["config"]
        tc.FORAConfig.from_dict(cfg)  # validates before writing
        plan, m = cfg["step_plan"], metrics(best)
        write(Path(args.out) / f"reference_{args.family}_fora{args.steps}_m{round(target * 100)}.yaml", [
            f"# FORA-like full-step placement found by NSGA-II on the trained reference {args.family}",
            f"# (tokencache.zoo '{args.family}'), {args.steps} DDIM steps, CFG 3, 20 fixed digit/seed pairs "
            "(--seed 7);",
            f"# trial {best.number} of {len(done)} of `tokencache search --method fora --placement` (benchmarks/"
            "export_strategies.py has the command).",
            f"# On the search samples: MACs ratio {m['macs']:.3f}, PSNR {m['psnr']:.2f} dB vs uncached; the best "
            f"uniform (TaylorSeer-style) plan at <= {target} MACs: {ref_text}.",
            f"# {plan.count('F')} full steps at {[i for i, c in enumerate(plan) if c == 'F']}; "
            f"forecast {cfg['forecast']} order {cfg['forecast_order']}.",
        ], cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", required=True, help="the search's study.db")
    ap.add_argument("--family", required=True, help="the reference family it searched (file names)")
    ap.add_argument("--method", required=True, choices=("toca", "duca", "fora"),
                    help="fora: a --placement search, cut at fixed MACs targets")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--margin", type=float, default=0.5, help="dB a strategy must gain over its preset")
    ap.add_argument("--out", default=str(STRATEGIES_DIR))
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=f"tokencache-{args.method}-{args.steps}",
                              storage=f"sqlite:///{args.study}")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    (export_placements if args.method == "fora" else export_presets)(done, args)


if __name__ == "__main__":
    main()
