"""Results of a search: the Pareto front, a table, JSON records, a PNG plot and config export."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from ..harness.registry import CONFIG_CLASSES, BaseConfig
from .evaluator import OBJECTIVES


def _signed(values: dict[str, float], objectives: Sequence[str]) -> list[float]:
    """Objective values turned into "smaller is better"."""
    return [values[o] if OBJECTIVES[o] == "minimize" else -values[o] for o in objectives]


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether ``a`` Pareto-dominates ``b`` (both "smaller is better")."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def _feasible(t: FrozenTrial, cons: Sequence[Any]) -> bool:
    return not cons or all(v <= 0 for v in t.user_attrs.get("constraints", []))


def pareto_front(
    trials: Sequence[FrozenTrial], objectives: Sequence[str], cons: Sequence[Any] = ()
) -> list[FrozenTrial]:
    """Non-dominated finished, feasible trials, sorted by the cost objective (duplicates of a point kept once)."""
    pts = [(t, _signed(t.user_attrs["metrics"], objectives)) for t in trials
           if t.state == TrialState.COMPLETE and "metrics" in t.user_attrs and _feasible(t, cons)]
    front, seen = [], set()
    for t, v in pts:
        if any(dominates(w, v) for _, w in pts):
            continue
        key = tuple(round(x, 9) for x in v)
        if key in seen:
            continue
        seen.add(key)
        front.append(t)
    return sorted(front, key=lambda t: t.user_attrs["metrics"][objectives[0]])


def plan_summary(cfg: dict[str, Any]) -> str:
    """Short text of a config's plan, e.g. ``full 4 / d1 10 / reuse 6, r 0.0-0.7``."""
    plan = cfg.get("cache_plan")
    if plan is None:
        return ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "method")
    counts: dict[str, int] = {}
    for a in plan:
        k = a if a in ("full", "reuse") else f"d{a}"
        counts[k] = counts.get(k, 0) + 1
    r = cfg.get("prune_ratio")
    rs = f"r {min(r):g}-{max(r):g}" if isinstance(r, list) else f"r {r:g}"
    return " / ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f", {rs}"


@dataclass
class SearchResult:
    """What :func:`run_search` returns.

    Attributes:
        study: the optuna study.
        objectives: objective names (cost first).
        constraints: parsed constraints.
        presets: ``name -> {"metrics", "config", "feasible"}`` of the method's presets on the same inputs.
    """

    study: Any
    objectives: tuple[str, ...]
    constraints: list[Any] = field(default_factory=list)
    presets: dict[str, Any] = field(default_factory=dict)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))

    @property
    def front(self) -> list[FrozenTrial]:
        """Pareto-optimal trials, cheapest first."""
        return pareto_front(self.trials, self.objectives, self.constraints)

    def config(self, trial: FrozenTrial) -> BaseConfig:
        """The config a trial evaluated."""
        d = dict(trial.user_attrs["config"])
        return CONFIG_CLASSES[d["method"]].from_dict(d)

    def records(self) -> list[dict[str, Any]]:
        """The front as plain dicts (trial number, metrics, plan summary, config)."""
        return [{"trial": t.number, **{k: t.user_attrs["metrics"][k] for k in sorted(t.user_attrs["metrics"])},
                 "plan": plan_summary(t.user_attrs["config"]), "config": t.user_attrs["config"]} for t in self.front]

    def dominating(self, preset: str) -> list[FrozenTrial]:
        """Front trials at least as good as ``preset`` in every objective and better in one."""
        if preset not in self.presets:
            raise KeyError(f"preset {preset!r} was not evaluated; evaluated: {sorted(self.presets)}")
        p = _signed(self.presets[preset]["metrics"], self.objectives)
        return [t for t in self.front if dominates(_signed(t.user_attrs["metrics"], self.objectives), p)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "study": self.study.study_name, "objectives": list(self.objectives), "n_trials": len(self.trials),
            "front": self.records(),
            "presets": {k: {"metrics": v["metrics"], "plan": plan_summary(v["config"]),
                            "dominated_by": [t.number for t in self.dominating(k)]} for k, v in self.presets.items()},
        }

    def table(self) -> Any:
        """A rich ``Table`` of the front and the presets."""
        from rich.table import Table

        cols = list(dict.fromkeys([*self.objectives, "macs", "latency", "psnr", "rel_l1"]))
        tab = Table(title=f"Pareto front of {self.study.study_name!r} ({len(self.trials)} trials)")
        for c in ["trial", *cols, "plan"]:
            tab.add_column(c, justify="right" if c != "plan" else "left")
        for t in self.front:
            m = t.user_attrs["metrics"]
            tab.add_row(str(t.number), *(f"{m[c]:.4g}" for c in cols), plan_summary(t.user_attrs["config"]))
        for name, p in self.presets.items():
            m = p["metrics"]
            tab.add_row(f"[dim]{name}[/dim]", *(f"[dim]{m[c]:.4g}[/dim]" for c in cols),
                        f"[dim]preset: {plan_summary(p['config'])}[/dim]")
        return tab

    def plot(self, path: str | Path) -> Path:
        """PNG of cost vs the first quality objective: all trials, the front highlighted, presets marked."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cx, qy = self.objectives[0], self.objectives[1]
        fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
        allt = [t.user_attrs["metrics"] for t in self.trials if "metrics" in t.user_attrs]
        ax.scatter([m[cx] for m in allt], [m[qy] for m in allt], s=12, c="0.7", label="trials")
        fr = [t.user_attrs["metrics"] for t in self.front]
        ax.plot([m[cx] for m in fr], [m[qy] for m in fr], "o-", c="tab:red", ms=5, label="Pareto front")
        for marker, (name, p) in zip("s^D*", self.presets.items()):
            ax.scatter([p["metrics"][cx]], [p["metrics"][qy]], marker=marker, s=60, edgecolor="k", label=name,
                       zorder=3)
        ax.set_xlabel(f"{cx} ({'relative to uncached' if cx != 'macs' else 'MACs ratio'}, lower is better)")
        ax.set_ylabel(f"{qy} ({'higher' if OBJECTIVES[qy] == 'maximize' else 'lower'} is better)")
        ax.set_title(self.study.study_name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return path

    def export(self, folder: str | Path, fmt: str = "yaml") -> list[Path]:
        """Write each front member's config as ``trial_<n>.yaml`` (readable by ``tc.load_config``)."""
        if fmt not in ("yaml", "json"):
            raise ValueError(f"fmt={fmt!r} is invalid; allowed: 'yaml', 'json'")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return [self.config(t).save(folder / f"trial_{t.number:04d}.{fmt}") for t in self.front]
