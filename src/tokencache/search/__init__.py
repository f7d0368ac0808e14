"""NSGA-II search of per-step acceleration strategies (DaTo's F(t), DeepCache intervals, ...).

Example:
    >>> from tokencache.search import run_search
    >>> res = run_search(pipe, "dato", n_trials=64, population=16, steps=50, storage="sqlite:///search.db")
    >>> res.table(); res.plot("front.png"); res.export("strategies/")

Command line: ``tokencache search --reference unet --steps 50 --trials 64 --out search_out``.
"""

from pathlib import Path

from .cli import add_arguments, run
from .evaluator import OBJECTIVES, EvalSettings, Evaluator
from .report import SearchResult, dominates, pareto_front
from .space import DaToSpace, DeepCacheSpace, SearchSpace, make_space
from .study import load_result, parse_constraint, run_search

STRATEGIES_DIR = Path(__file__).resolve().parent.parent / "strategies"
"""Strategies found by searches on the reference models, shipped as examples (YAML, ``tc.load_config``)."""


def shipped_strategies() -> dict[str, Path]:
    """The shipped example strategies: file stem -> path (e.g. ``"reference_unet_dato50_balanced"``).

    Example:
        >>> import tokencache as tc
        >>> cfg = tc.load_config(shipped_strategies()["reference_unet_dato50_balanced"])
    """
    return {p.stem: p for p in sorted(STRATEGIES_DIR.glob("*.yaml"))}


__all__ = [
    "STRATEGIES_DIR",
    "OBJECTIVES",
    "DaToSpace",
    "DeepCacheSpace",
    "EvalSettings",
    "Evaluator",
    "SearchResult",
    "SearchSpace",
    "add_arguments",
    "dominates",
    "load_result",
    "make_space",
    "pareto_front",
    "parse_constraint",
    "run",
    "run_search",
    "shipped_strategies",
]
