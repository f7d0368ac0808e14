"""State per cache context: step counters, per-call caches and records, one set per context name.

The step index is *counted*: one increment per denoiser call in the current cache context. Pipelines
that batch classifier-free guidance call the denoiser once per step outside any context (the
``"default"`` context); pipelines that call it once per branch wrap each call in diffusers'
``model.cache_context("cond")`` / ``("uncond")``, and each name gets its own :class:`CallState`:
its own counter, plan position, caches and records, never shared with another context.

A new pipeline call is recognised when the scheduler's ``set_timesteps`` runs (see
:mod:`tokencache.core.calls`), when a cache context says ``step_index=0``, when a context's counter
passes the expected number of steps, or when the batch, resolution, dtype or device of its input
changes. Every new call drops every cache, so an exception inside a call cannot leak state into the
next one.

Nothing in this module runs inside a compiled graph: the step hook calls it before and after each
denoiser call, in functions wrapped in ``torch.compiler.disable``, and the hooks inside the model read
only the decisions prepared from it (see :mod:`tokencache.core.hooks`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .schedule import StepAction

#: The context of denoiser calls made outside any ``cache_context`` (batched-CFG pipelines, bare models).
DEFAULT_CONTEXT = "default"
#: The context of calls that run uncached and uncounted (see :meth:`ContextStates.uncached`); its state
#: never starts a call, so it is never active.
UNCACHED_CONTEXT = "tokencache.uncached"


@dataclass
class StepRecord:
    """What one denoiser call did, for the summary and MAC accounting.

    ``skipped`` holds names of modules whose output was produced by their approximator; ``partial``
    maps module names to ``(tokens computed, tokens in full)``; ``overhead_macs`` counts the bookkeeping
    matmuls (token similarity) exactly as ``torch.utils.flop_counter`` counts a matmul.
    """

    action: StepAction
    skipped: list[str] = field(default_factory=list)
    partial: dict[str, tuple[int, int]] = field(default_factory=dict)
    computed_full: list[str] = field(default_factory=list)
    overhead_macs: float = 0.0


class CallState:
    """Counters, per-call objects (caches, approximators, scores) and records of one cache context.

    Args:
        plan_fn: maps a number of steps to the list of :class:`StepAction` for the call.
        default_num_steps: steps per call when nothing tells us (module-only use).
        owner: the :class:`ContextStates` this state belongs to.
        name: the cache context name.
    """

    def __init__(
        self,
        plan_fn: Callable[[int], list[StepAction]],
        default_num_steps: int,
        owner: ContextStates | None = None,
        name: str = DEFAULT_CONTEXT,
    ) -> None:
        self.plan_fn = plan_fn
        self.default_num_steps = default_num_steps
        self.owner = owner
        self.name = name
        self.cfg: bool | None = None
        self._pending_num_steps: int | None = None
        self.last_records: list[StepRecord] = []
        self.last_wall_time_s: float = 0.0
        self.last_key: tuple | None = None
        self.last_cfg: bool | None = None
        self.last_cache_bytes = 0
        self.last_serial = -1
        self.last_t: tuple[float, float] = (0.0, 0.0)
        self._announced = False
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.step = -1
        self.num_steps = 0
        self.actions: list[StepAction] = []
        self.key: tuple | None = None
        self.records: list[StepRecord] = []
        self.objects: dict[Any, Any] = {}
        self.facts: dict[str, Any] = {}
        self.t_start: float | None = None
        self.t_end: float | None = None
        #: the forecast coordinate of each step of this call (``None``: the step index itself).
        self.coords: list[float] | None = None
        self.serial = self.owner.serial if self.owner is not None else 0

    # ---- per-call objects -----------------------------------------------------------------------
    def get(self, key: Any, factory: Callable[[], Any]) -> Any:
        """The object of ``key`` for this call (a cache dict, an approximator, ...), made by ``factory``."""
        obj = self.objects.get(key)
        if obj is None:
            obj = self.objects[key] = factory()
        return obj

    def data(self, key: Any) -> dict:
        """The cache dict of ``key`` (a hook or block name) for this call."""
        return self.get(key, dict)

    def cache_bytes(self) -> int:
        """Bytes held now by this context's caches and approximators."""
        return sum(_nbytes(o) for o in self.objects.values())

    # ---- call boundaries ------------------------------------------------------------------------
    def expect_call(self, num_steps: int | None, cfg: bool | None = None) -> None:
        """Announce a new pipeline call of ``num_steps`` denoiser calls (``None``: not known)."""
        self._pending_num_steps = int(num_steps) if num_steps else None
        self.cfg = cfg
        self.reset()
        self._announced = True

    def reset(self) -> None:
        """Drop every cache and counter; the next denoiser call starts a new call."""
        self._reset_counters()

    def _start(self, key: tuple) -> None:
        if self.records and self.records is not self.last_records:
            self._publish()  # a call whose loop ended early (or was interrupted) still gets a summary
        pending = self._pending_num_steps
        self._reset_counters()
        self.num_steps = pending if pending else self.default_num_steps
        self._pending_num_steps = None
        self._announced = False
        self.actions = self.plan_fn(self.num_steps)
        self.key = key
        if self.owner is not None:
            for fn in self.owner.on_new_call:
                fn()

    def begin_step(self, key: tuple) -> StepAction:
        """Advance the counter for one denoiser call and return its action."""
        stale = self.key is None or key != self.key or self.step + 1 >= self.num_steps
        if self._announced or stale:
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
            self.objects = {}

    def _publish(self) -> None:
        self.t_end = time.perf_counter() if self.t_end is None else self.t_end
        self.last_records = self.records
        self.last_t = (self.t_start or self.t_end, self.t_end)
        self.last_wall_time_s = self.t_end - (self.t_start or self.t_end)
        self.last_key = self.key
        self.last_cfg = self.cfg
        self.last_cache_bytes = self.cache_bytes()
        self.last_serial = self.serial

    # ---- helpers used by hooks ------------------------------------------------------------------
    @property
    def book(self) -> Any:
        return self.owner.book if self.owner is not None else None

    def book_wants(self, name: str, variant: Any = "full") -> bool:
        """Whether the MAC book still needs the input shapes of module ``name`` for this call's key."""
        return self.book is not None and self.book.want(self.key, name, variant)

    def book_note(self, name: str, args: tuple, kwargs: dict, variant: Any = "full") -> None:
        self.book.note(self.key, name, variant, args, kwargs)

    @property
    def x(self) -> float:
        """The forecast coordinate of the current step (the config's ``forecast_coordinate``)."""
        return float(self.step) if self.coords is None else self.coords[self.step]

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


class ContextStates:
    """The :class:`CallState` of each cache context of one accelerated denoiser.

    Args:
        plan_fn: the method's ``plan``.
        default_num_steps: steps per call when nothing tells us.
    """

    def __init__(self, plan_fn: Callable[[int], list[StepAction]], default_num_steps: int) -> None:
        self.plan_fn = plan_fn
        self.default_num_steps = default_num_steps
        self.states: dict[str, CallState] = {}
        self.name = DEFAULT_CONTEXT
        #: whether batches are [uncond; cond] halves, as the pipeline declares it (None: not declared).
        self.cfg: bool | None = None
        #: denoiser calls per context of the pipeline call under way, from the scheduler (None: unknown).
        self.pending: int | None = None
        self.on_new_call: list[Callable[[], None]] = []
        #: pipeline calls announced so far; the summary reports the contexts of the newest one.
        self.serial = 0
        self.book: Any = None  # accounting.MacBook, set by tc.apply

    @property
    def current(self) -> CallState:
        """The state of the context the denoiser is called in now (created on first use)."""
        st = self.states.get(self.name)
        if st is None:
            st = self.states[self.name] = CallState(self.plan_fn, self.default_num_steps, self, self.name)
            if self.pending is not None:
                st.expect_call(self.pending, self._cfg_of(self.name))
            else:
                st.cfg = self._cfg_of(self.name)
        return st

    def _cfg_of(self, name: str) -> bool | None:
        # A named context holds one branch per call: its batch is never two CFG halves.
        return self.cfg if name == DEFAULT_CONTEXT else False

    def expect_call(self, num_steps: int | None, cfg: bool | None = None) -> None:
        """A new pipeline call starts (from the scheduler watch): every context restarts."""
        self.serial += 1
        self.pending = int(num_steps) if num_steps else None
        self.cfg = cfg
        for name, st in self.states.items():
            st.expect_call(self.pending, self._cfg_of(name))

    def set_context(self, name: str | None, step_index: int | None = None, num_steps: int | None = None) -> None:
        """Enter the cache context ``name`` (``None``: leave it); ``step_index == 0`` restarts that context."""
        self.name = name or DEFAULT_CONTEXT
        if name is None or step_index != 0:
            return
        st = self.current
        if st.step >= 0 or num_steps:  # a new generation in this context
            if st.step >= 0 and self.pending is None and not num_steps:
                self.serial += 1
            st.expect_call(num_steps or self.pending, self._cfg_of(self.name))

    @contextlib.contextmanager
    def uncached(self) -> Iterator[None]:
        """Run a denoiser call in a context that never starts a generation: every hook is off, nothing counted."""
        name = self.name
        self.name = UNCACHED_CONTEXT
        try:
            yield
        finally:
            self.name = name

    def reset(self) -> None:
        """Abandon the call under way in every context (caches and counters dropped)."""
        for st in self.states.values():
            st.reset()

    def clear(self) -> None:
        """Forget every context (``tc.remove``)."""
        self.reset()
        self.states.clear()
        self.name = DEFAULT_CONTEXT

    def published(self) -> list[CallState]:
        """The contexts whose last finished call belongs to the newest generation, in creation order.

        That is the newest pipeline call (announced by the scheduler) and, within it (or for a bare
        denoiser), the contexts whose last call overlaps in time with the one that ended last.
        """
        done = [st for st in self.states.values() if st.last_records]
        if not done:
            return []
        newest = max(st.last_serial for st in done)
        done = [st for st in done if st.last_serial == newest]
        ref = max(done, key=lambda st: st.last_t[1])
        return [st for st in done if st.last_t[1] >= ref.last_t[0]]

    def cache_bytes(self) -> int:
        return sum(st.cache_bytes() for st in self.states.values())


def input_key(args: tuple, kwargs: dict) -> tuple:
    """Shape/dtype/device key of a denoiser call: a change starts a new call."""
    x = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
    return (tuple(x.shape), x.dtype, x.device)


def _nbytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if hasattr(obj, "nbytes") and callable(obj.nbytes):
        return int(obj.nbytes())
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(_nbytes(o) for o in obj.values())
    if hasattr(obj, "to_tuple"):
        return _nbytes(obj.to_tuple())
    return 0
