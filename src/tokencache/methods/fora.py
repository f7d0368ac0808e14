"""FORA-like baseline: every module's output comes from its cache between full steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.schedule import StepAction
from .token_cache import TokenCacheSpec, TransformerMethodConfig, cycle_plan


@dataclass
class FORAConfig(TransformerMethodConfig):
    """FORA-like baseline: every module's output is reused whole between full steps.

    On the steps between full steps no token is recomputed; the blocks' gates and modulation still use
    the current timestep (cached pre-gate outputs, as in ToCa).

    Args:
        interval: a full step every ``interval`` steps, starting with step 0.
    """

    method: ClassVar[str] = "fora"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quality": {"interval": 2},
        "balanced": {"interval": 3},
        "fast": {"interval": 4},
    }

    interval: int = 3

    def validate(self) -> None:
        self._check_int("interval", 1, 1000)

    def plan(self, num_steps: int) -> list[StepAction]:
        return cycle_plan("F" + "C" * (self.interval - 1), 1, num_steps, 0.0, 0.0)

    def spec(self) -> TokenCacheSpec:
        return TokenCacheSpec(partial_modules=(), score="random", staleness_norm=self.interval, spatial_bonus=0.0)
