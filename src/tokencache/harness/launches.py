"""Kernel-launch census: the device operators one generation issues, counted per denoiser call.

Where a GPU is fast and the model is small (DiT-XL/2 at 256², a 512-token CFG batch on an H100/H200),
eager PyTorch spends its time issuing operators, not computing them: each launch costs a few microseconds
of host time whatever its size. A method that saves MACs but issues more operators than it removes is
then slower on that GPU, however many MACs it saves. The census measures the operator side exactly and on
any machine: it counts every aten operator that reaches the dispatcher (:class:`LaunchCounter`), on a
model of the published shape built on the ``meta`` device (no weights, no compute), through the real
tokencache hooks and sampling loop. Views, allocations and detaches launch no kernel and are not counted.

What it predicts: in a launch-bound regime the speed-up is about ``baseline launches / method launches``;
in a compute-bound one about ``1 / MACs ratio``; a real GPU lies between. It does not count what
``torch.compile`` fuses (inductor merges most pointwise operators), host syncs (none: see
``tests/test_no_host_sync.py``) or launch cost differences between operators.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

#: aten operators that launch no device kernel: they allocate, alias or re-describe storage.
NO_KERNEL = frozenset({
    "empty", "empty_like", "empty_strided", "_unsafe_view", "lift_fresh", "detach", "alias", "set_", "resize_",
    "_reshape_alias", "lift_fresh_copy", "_efficientzerotensor", "sym_size", "sym_stride", "sym_numel",
    "sym_storage_offset", "is_same_size", "_nested_tensor_from_mask_left_aligned",
})


def launches_kernel(func: torch._ops.OpOverload) -> bool:
    """Whether the aten operator ``func`` issues device work (not a view, an allocation or a detach)."""
    return not func.is_view and func.overloadpacket.__name__ not in NO_KERNEL


class _FusedAttention(TorchFunctionMode):
    """Counts ``F.scaled_dot_product_attention`` as one launch (a GPU runs one fused kernel) and pauses the
    dispatch count inside it: off the GPU (CPU, ``meta``) it may decompose into matmuls and a softmax."""

    def __init__(self, counter: LaunchCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
        if func is not F.scaled_dot_product_attention:
            return func(*args, **(kwargs or {}))
        self.counter.ops["scaled_dot_product_attention"] += 1
        self.counter.paused += 1
        try:
            return func(*args, **(kwargs or {}))
        finally:
            self.counter.paused -= 1


class LaunchCounter(TorchDispatchMode):
    """Counts the kernel-launching aten operators run while the mode is active, by operator name.

    Scaled dot-product attention counts once, as the fused kernel a GPU runs, whatever it decomposes into
    on the device at hand.

    Example:
        >>> with LaunchCounter() as c:
        ...     _ = torch.ones(3).add(1).view(1, 3)
        >>> c.total, dict(c.ops)
        (2, {'ones': 1, 'add': 1})
    """

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.paused = 0
        self._attention = _FusedAttention(self)

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    def __enter__(self) -> LaunchCounter:
        self._attention.__enter__()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._attention.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
        if not self.paused and launches_kernel(func):
            self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


@dataclass
class Census:
    """Launches of one generation: per denoiser call (hooks included) and in the loop around the calls.

    Attributes:
        per_call: launches of each denoiser call, in call order.
        kinds: the step kind of each call (``"full"``, ``"partial"``, ...; ``"full"`` without a method).
        loop: launches outside the denoiser calls (sampler steps, CFG combination, latent set-up).
        ops: launches of the whole generation by operator name.
    """

    per_call: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    loop: int = 0
    ops: Counter[str] = field(default_factory=Counter)

    @property
    def denoiser(self) -> int:
        """Launches inside the denoiser calls (what a caching method changes)."""
        return sum(self.per_call)

    @property
    def total(self) -> int:
        return self.denoiser + self.loop

    def by_kind(self) -> dict[str, tuple[int, int]]:
        """Step kind -> (calls, median launches per call), in order of first appearance."""
        out: dict[str, list[int]] = {}
        for kind, n in zip(self.kinds, self.per_call):
            out.setdefault(kind, []).append(n)
        return {k: (len(v), int(statistics.median(v))) for k, v in out.items()}


def step_kinds(config: Any, steps: int, calls: int) -> list[str]:
    """The step kind of each of ``calls`` denoiser calls of a ``steps``-step generation under ``config``.

    A config plans one action per step and cache context; families that call the denoiser once per CFG
    branch (each in its own context) make ``calls = k * steps`` calls, step ``i`` being calls ``k i .. k i + k - 1``.
    """
    if config is None:
        return ["full"] * calls
    plan = config.plan(steps)
    per = max(calls // max(steps, 1), 1)
    return [plan[min(i // per, len(plan) - 1)].kind for i in range(calls)]


def census(model: torch.nn.Module, loop: Any, config: Any = None, steps: int | None = None) -> Census:
    """Run ``loop()`` (one generation with ``model``) and count its launches per denoiser call.

    Args:
        model: the denoiser ``loop`` calls (with or without a tokencache method applied).
        loop: a closure running one generation (``tokencache.harness.shapes.make_loop``).
        config: the applied method's config, to label each call's step kind (``None``: uncached).
        steps: the generation's steps (for the labels); ``None``: one label per call.
    """
    counter = LaunchCounter()
    out = Census()
    marks: list[int] = []

    def pre(_module: torch.nn.Module, _args: Any) -> None:
        marks.append(counter.total)

    def post(_module: torch.nn.Module, _args: Any, _out: Any) -> None:
        out.per_call.append(counter.total - marks.pop())

    handles = [model.register_forward_pre_hook(pre), model.register_forward_hook(post)]
    try:
        with torch.no_grad(), counter:
            loop()
    finally:
        for h in handles:
            h.remove()
    out.loop = counter.total - out.denoiser
    out.ops = counter.ops
    out.kinds = step_kinds(config, steps or len(out.per_call), len(out.per_call))
    return out


def census_with(model: torch.nn.Module, loop: Any, config: Any, steps: int, cfg: bool | None = None) -> tuple:
    """:func:`census` of one generation with ``config`` applied (``None``: uncached), then removed.

    Returns:
        ``(Census, tc.summary(model))``; the summary is ``None`` for the uncached generation.
    """
    from . import registry

    if config is None:
        return census(model, loop, None, steps), None
    registry.apply(model, config, num_inference_steps=steps, cfg=cfg)
    try:
        return census(model, loop, config, steps), registry.summary(model)
    finally:
        registry.remove(model)
