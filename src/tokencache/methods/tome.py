"""ToMe-like baseline: self-attention token pruning with a random base token per patch; no caching."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.schedule import StepAction
from .unet_branch import PruneSpec, UNetMethodConfig, _levels_ok


@dataclass
class ToMeConfig(UNetMethodConfig):
    """ToMe-like baseline: prune self-attention tokens with a random base token per patch; no caching.

    Args:
        ratio: fraction of all tokens pruned, ``0 <= ratio < 1 - 1/patch_size**2``.
        patch_size: one random base token per ``patch_size x patch_size`` patch.
        prune_levels: as in :class:`DaToConfig`.
        seed: seed of tokencache's own generator.
    """

    method: ClassVar[str] = "tome"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quality": {"ratio": 0.3},
        "balanced": {"ratio": 0.5},
        "fast": {"ratio": 0.7},
    }

    ratio: float = 0.5
    patch_size: int = 2
    prune_levels: list[int] | None = None
    seed: int = 0

    def validate(self) -> None:
        self._check_int("patch_size", 1, 16)
        hi = 1.0 - 1.0 / self.patch_size**2
        if self.ratio != 0:
            self._check_float("ratio", 0.0, hi, hi_open=True)
        _levels_ok(type(self).__name__, self.prune_levels)
        self._check_int("seed", 0)

    def plan(self, num_steps: int) -> list[StepAction]:
        return [StepAction("full", None, float(self.ratio)) for _ in range(num_steps)]

    def prune_spec(self) -> PruneSpec:
        levels = tuple(self.prune_levels) if self.prune_levels is not None else None
        return PruneSpec(self.patch_size, levels, "random", False, 0.0, 1.0, False, "base", self.seed)
