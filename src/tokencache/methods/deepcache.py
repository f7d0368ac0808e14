"""DeepCache-like baseline: uniform UNet branch caching, no pruning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.schedule import StepAction
from .unet_branch import UNetMethodConfig


@dataclass
class DeepCacheConfig(UNetMethodConfig):
    """DeepCache-like baseline: uniform UNet branch caching, no pruning.

    Args:
        interval: a full step every ``interval`` steps; the others are partial.
        branch: branch id of the partial steps, 0 = shallowest; it runs at depth ``branch + 1``
            (conv_in plus ``branch + 1`` outermost output units).
    """

    method: ClassVar[str] = "deepcache"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quality": {"interval": 2, "branch": 2},
        "balanced": {"interval": 3, "branch": 0},
        "fast": {"interval": 5, "branch": 0},
    }

    interval: int = 3
    branch: int = 0

    def validate(self) -> None:
        self._check_int("interval", 1, 1000)
        self._check_int("branch", 0, 64)

    def plan(self, num_steps: int) -> list[StepAction]:
        return [
            StepAction("full") if i % self.interval == 0 else StepAction("partial", self.branch + 1)
            for i in range(num_steps)
        ]

    @property
    def max_depth(self) -> int:
        return self.branch + 1 if self.interval > 1 else 0
