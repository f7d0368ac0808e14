"""NSGA-II search of per-step acceleration strategies (DaTo's F(t), DeepCache intervals, ...).

Example:
    >>> from tokencache.search import run_search
    >>> res = run_search(pipe, "dato", n_trials=64, population=16, steps=50, storage="sqlite:///search.db")
    >>> res.table(); res.plot("front.png"); res.export("strategies/")

Command line: ``tokencache search --reference unet --steps 50 --trials 64 --out search_out``.
"""

from importlib import import_module
from pathlib import Path
from typing import Any

from .cli import add_arguments, run
from .objectives import OBJECTIVES

#: public name -> submodule; imported on first use so that ``tokencache search --help`` stays light
_LAZY = {
    "EvalSettings": "evaluator", "Evaluator": "evaluator", "SearchResult": "report", "dominates": "report",
    "pareto_front": "report", "DaToSpace": "space", "DeepCacheSpace": "space", "SearchSpace": "space",
    "make_space": "space", "load_result": "study", "parse_constraint": "study", "run_search": "study",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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
