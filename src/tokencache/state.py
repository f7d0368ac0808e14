"""Per-call state shared by the hooks of one accelerated denoiser, and the hook that counts steps.

The step index is *counted*: one increment per denoiser call. A new pipeline call is recognised when
the scheduler's ``set_timesteps`` runs (see :mod:`tokencache.api`), when the counter passes the
expected number of steps, or when the batch, resolution, dtype or device of the input changes. Every
new call resets all caches, so an exception inside a call cannot leak state into the next one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks import ModelHook

from .schedule import StepAction


@dataclass
class StepRecord:
    """What one step did, for the summary and MAC accounting.

    ``skipped`` holds names of modules that returned cached outputs; ``partial`` maps module names to
    the number of tokens computed (of ``tokens`` in full); ``overhead_macs`` counts the bookkeeping
    matmuls (token similarity) exactly as ``torch.utils.flop_counter`` counts a matmul.
    """

    action: StepAction
    skipped: list[str] = field(default_factory=list)
    partial: dict[str, tuple[int, int]] = field(default_factory=dict)
    computed_full: list[str] = field(default_factory=list)
    overhead_macs: float = 0.0


class CallState:
    """Counters and per-call bookkeeping for one denoiser.

    Args:
        plan_fn: maps a number of steps to the list of :class:`StepAction` for the call.
        default_num_steps: steps per call when no scheduler tells us (module-only use).
    """

    def __init__(self, plan_fn: Callable[[int], list[StepAction]], default_num_steps: int) -> None:
        self.plan_fn = plan_fn
        self.default_num_steps = default_num_steps
        self.cfg: bool | None = None
        self.resettables: list[Any] = []
        self.on_new_call: list[Callable[[], None]] = []
        self._pending_num_steps: int | None = None
        self.last_records: list[StepRecord] = []
        self.last_wall_time_s: float = 0.0
        self.last_key: tuple | None = None
        self.last_cfg: bool | None = None
        self.last_cache_bytes = 0
        self.book: Any = None  # stats.MacBook, set by tc.apply
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.step = -1
        self.num_steps = 0
        self.actions: list[StepAction] = []
        self.key: tuple | None = None
        self.records: list[StepRecord] = []
        self.t_start: float | None = None
        self.t_end: float | None = None

    # ---- call boundaries ------------------------------------------------------------------------
    def expect_call(self, num_steps: int, cfg: bool | None = None) -> None:
        """Announce a new pipeline call of ``num_steps`` denoiser calls (from the scheduler hook)."""
        self._pending_num_steps = int(num_steps)
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        """Drop every cache and counter; the next denoiser call starts a new call."""
        self._reset_counters()
        for obj in self.resettables:
            obj.clear()

    def _start(self, key: tuple) -> None:
        if self.records and self.records is not self.last_records:
            self._publish()  # a call whose loop ended early (or was interrupted) still gets a summary
        pending = self._pending_num_steps
        for obj in self.resettables:
            obj.clear()
        self._reset_counters()
        self.num_steps = pending if pending else self.default_num_steps
        self._pending_num_steps = None
        self.actions = self.plan_fn(self.num_steps)
        self.key = key
        for fn in self.on_new_call:
            fn()

    def begin_step(self, key: tuple) -> StepAction:
        """Advance the counter for one denoiser call and return its action."""
        stale = self.key is None or key != self.key or self.step + 1 >= self.num_steps
        if self._pending_num_steps is not None or stale:
            self._start(key)
        self.step += 1
        if self.step == 0:
            self.t_start = time.perf_counter()
        action = self.actions[self.step]
        self.records.append(StepRecord(action))
        return action

    def end_step(self, device: torch.device | None = None) -> None:
        """Close the step; after the last step publish the call's records and free the caches."""
        if self.step + 1 >= self.num_steps:
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize(device)
            self.t_end = time.perf_counter()
            self._publish()
            for obj in self.resettables:
                obj.clear()

    def _publish(self) -> None:
        self.t_end = time.perf_counter() if self.t_end is None else self.t_end
        self.last_records = self.records
        self.last_wall_time_s = self.t_end - (self.t_start or self.t_end)
        self.last_key = self.key
        self.last_cfg = self.cfg
        self.last_cache_bytes = self.cache_bytes()

    def cache_bytes(self) -> int:
        """Bytes currently held by the caches of this denoiser's hooks."""
        return sum(obj.nbytes() for obj in self.resettables if hasattr(obj, "nbytes"))

    # ---- helpers used by hooks ------------------------------------------------------------------
    def book_wants(self, name: str, variant: Any = "full") -> bool:
        """Whether the MAC book still needs the input shapes of module ``name`` for this call's key."""
        return self.book is not None and self.book.want(self.key, name, variant)

    def book_note(self, name: str, args: tuple, kwargs: dict, variant: Any = "full") -> None:
        self.book.note(self.key, name, variant, args, kwargs)

    @property
    def action(self) -> StepAction:
        return self.actions[self.step]

    @property
    def record(self) -> StepRecord:
        return self.records[-1]

    @property
    def active(self) -> bool:
        return 0 <= self.step < len(self.actions)

    def cfg_halves(self, batch: int) -> bool:
        """Whether a batch of ``batch`` rows is [uncond; cond] classifier-free guidance."""
        return bool(self.cfg) and batch % 2 == 0


def input_key(args: tuple, kwargs: dict) -> tuple:
    """Shape/dtype/device key of a denoiser call: a change starts a new call."""
    x = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
    return (tuple(x.shape), x.dtype, x.device)


class CallScopedHook(ModelHook):
    """Base of the hooks whose state lives in a :class:`CallState` (and the caches it owns).

    diffusers' ``HookRegistry.reset_stateful_hooks`` calls ``reset_state`` on every stateful hook. These
    hooks keep nothing of their own to reset: the call state clears every cache at each call boundary,
    and :class:`StepHook`, the outermost hook, abandons an unfinished call when it is reset.
    """

    _is_stateful = True

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        return module


class StepHook(ModelHook):
    """Counts denoiser calls and times the call; the outermost hook on the denoiser."""

    _is_stateful = True

    def __init__(self, state: CallState) -> None:
        super().__init__()
        self.state = state

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        self.state.begin_step(input_key(args, kwargs))
        out = self.fn_ref.original_forward(*args, **kwargs)
        self.state.end_step(next(module.parameters()).device)
        return out

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        # Called by diffusers' reset machinery; an unfinished call is abandoned, finished results kept.
        if self.state.step + 1 < self.state.num_steps:
            self.state.reset()
        return module


class Cache:
    """A dict of tensors that the state clears at each call boundary; reports bytes held."""

    def __init__(self) -> None:
        self.data: dict[Any, Any] = {}

    def clear(self) -> None:
        self.data.clear()

    def nbytes(self) -> int:
        return sum(_nbytes(v) for v in self.data.values())


def _nbytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(_nbytes(o) for o in obj.values())
    if hasattr(obj, "to_tuple"):
        return _nbytes(obj.to_tuple())
    return 0
