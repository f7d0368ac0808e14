"""tokencache's own random numbers, seeded per call (never the user's generator)."""

from __future__ import annotations

import torch


class SeededNoise:
    """A generator seeded with ``seed`` at the start of every call, one per device in use."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._gen: torch.Generator | None = None

    def clear(self) -> None:
        self._gen = None

    def get(self, device: torch.device) -> torch.Generator | None:
        """The generator of ``device``; ``None`` on the ``meta`` device (its tensors hold no values to draw)."""
        if torch.device(device).type == "meta":
            return None
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device).manual_seed(self.seed)
        return self._gen

    def nbytes(self) -> int:
        return 0
