"""FORA-like baseline: every module's output comes from its cache between full steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.config import _fail
from ..core.schedule import StepAction, resample_plan
from .token_cache import DUCA_LETTERS, TokenCacheSpec, TransformerMethodConfig, cycle_plan


@dataclass
class FORAConfig(TransformerMethodConfig):
    """FORA-like baseline: every module's output is reused whole between full steps.

    On the steps between full steps no token is recomputed; the blocks' gates and modulation still use
    the current timestep (cached pre-gate outputs, as in ToCa).

    Args:
        interval: a full step every ``interval`` steps, starting with step 0.
        step_plan: where the full steps fall, instead of ``interval``: one letter per step, ``F`` (full) or
            ``C`` (cached), starting with ``F``, e.g. ``"FFCCFCCF..."``. A plan written for another number of
            steps is mapped by relative position, keeping the share of full steps (as DaTo's ``cache_plan``).
            :func:`taylorseer_plan` gives the positions diffusers' TaylorSeer uses, for matched comparisons.
    """

    method: ClassVar[str] = "fora"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quality": {"interval": 2},
        "balanced": {"interval": 3},
        "fast": {"interval": 4},
    }

    interval: int = 3
    step_plan: str | None = None

    def validate(self) -> None:
        self._check_int("interval", 1, 1000)
        p = self.step_plan
        if p is not None and (not isinstance(p, str) or not p or p[0] != "F" or set(p) - {"F", "C"}):
            _fail(type(self).__name__, "step_plan", p, "None or a string of 'F' (full) and 'C' (cached) letters "
                                                        "starting with 'F'")

    def plan(self, num_steps: int) -> list[StepAction]:
        if self.step_plan is None:
            return cycle_plan("F" + "C" * (self.interval - 1), 1, num_steps, 0.0, 0.0)
        letters = resample_plan(list(self.step_plan), num_steps, full="F")
        return [StepAction(DUCA_LETTERS[c], None, 0.0) for c in letters]  # same kinds as the interval plan

    def spec(self) -> TokenCacheSpec:
        return TokenCacheSpec(partial_modules=(), score="random", staleness_norm=self.interval, spatial_bonus=0.0)


def taylorseer_plan(warmup: int, interval: int, num_steps: int) -> str:
    """The full steps of diffusers' TaylorSeer as a :attr:`FORAConfig.step_plan`.

    TaylorSeer (``TaylorSeerCacheConfig``) computes steps ``< disable_cache_before_step`` (``warmup``) and
    steps with ``(step - warmup - 1) % cache_interval == 0``; everything else is forecast.
    """
    return "".join("F" if i < warmup or (i - warmup - 1) % interval == 0 else "C" for i in range(num_steps))
