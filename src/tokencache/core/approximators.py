"""Approximators: how a cache slot produces an output on a step where it is not computed.

Every place that skips work (a UNet branch, a transformer module's per-token output, a whole block
stack) keeps one approximator per cache context. It is updated with outputs computed at step
coordinates ``x`` and asked for the output at a later ``x``. ``reuse`` returns the last computed
output (the behaviour of the published caching methods).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from . import tokens as T


class Approximator:
    """Produces a module's output at a step it is not computed, from outputs computed at earlier steps."""

    name: ClassVar[str] = ""

    def update(self, x: float, value: torch.Tensor) -> None:  # pragma: no cover - overridden
        """Take a fully computed output at coordinate ``x``."""
        raise NotImplementedError

    def predict(self, x: float) -> torch.Tensor:  # pragma: no cover - overridden
        """The output at coordinate ``x``."""
        raise NotImplementedError

    def update_rows(self, x: float, idx: torch.Tensor, rows: torch.Tensor) -> None:  # pragma: no cover
        """Take the rows ``idx`` ``(B, k)`` computed at ``x`` as ``rows`` ``(B, k, C)`` (token-wise caches)."""
        raise NotImplementedError

    def predict_rows(self, x: float, idx: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The output at ``x`` where the rows ``idx`` were computed as ``rows``; takes them in as well."""
        out = T.scatter_tokens(self.predict(x), idx, rows)
        self.update_rows(x, idx, rows)
        return out

    @property
    def ready(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def clear(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def nbytes(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError


class Reuse(Approximator):
    """The last computed output, returned as it is (the same tensor: no copy, no extra memory)."""

    name: ClassVar[str] = "reuse"

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None

    def update(self, x: float, value: torch.Tensor) -> None:
        self.value = value

    def predict(self, x: float) -> torch.Tensor:
        if self.value is None:
            raise RuntimeError("reuse approximator has no computed output yet")
        return self.value

    def update_rows(self, x: float, idx: torch.Tensor, rows: torch.Tensor) -> None:
        T.scatter_tokens(self.predict(x), idx, rows)

    def predict_rows(self, x: float, idx: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return T.scatter_tokens(self.predict(x), idx, rows)  # the cached tensor, its fresh rows replaced

    @property
    def ready(self) -> bool:
        return self.value is not None

    def clear(self) -> None:
        self.value = None

    def nbytes(self) -> int:
        return 0 if self.value is None else self.value.numel() * self.value.element_size()


APPROXIMATORS: dict[str, type[Approximator]] = {"reuse": Reuse}


def make_approximator(kind: str, order: int = 0, **options: Any) -> Approximator:
    """A new approximator of ``kind`` (a key of :data:`APPROXIMATORS`)."""
    if kind not in APPROXIMATORS:
        raise ValueError(f"forecast={kind!r} is invalid; allowed: {sorted(APPROXIMATORS)}")
    cls = APPROXIMATORS[kind]
    return cls(**options) if kind == "reuse" else cls(order=order, **options)
