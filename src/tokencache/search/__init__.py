"""NSGA-II search of per-step acceleration strategies (DaTo's F(t), DeepCache intervals, ...).

Example:
    >>> from tokencache.search import run_search
    >>> res = run_search(pipe, "dato", n_trials=64, population=16, steps=50, storage="sqlite:///search.db")
    >>> res.table(); res.plot("front.png"); res.export("strategies/")

Command line: ``tokencache search --reference unet --steps 50 --trials 64 --out search_out``.
"""

from .cli import add_arguments, run
from .evaluator import OBJECTIVES, EvalSettings, Evaluator
from .report import SearchResult, dominates, pareto_front
from .space import DaToSpace, DeepCacheSpace, SearchSpace, make_space
from .study import load_result, parse_constraint, run_search

__all__ = [
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
]
