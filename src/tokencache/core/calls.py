"""Call detection: where a pipeline call starts, how many denoiser calls it makes, in which cache context.

Two public signals, in order of preference:

* diffusers' ``model.cache_context(name, ...)``: pipelines that call the denoiser once per guidance
  branch (Flux with ``true_cfg_scale``, Wan, Qwen-Image, ...) wrap each call in it. diffusers sets the
  :class:`~diffusers.hooks.hooks.CacheContext` on every ``StateManager`` of the stateful hooks below the
  model; the step hook holds one (:class:`ContextProbe`), so tokencache learns the context name (and,
  where the pipeline passes them, ``step_index`` and ``num_inference_steps``).
* the scheduler (fallback, and the step count of every pipeline): pipelines call ``set_timesteps``
  once per call before the loop (img2img then moves the start with ``set_begin_index``), which gives
  the number of denoiser calls per context without looking at timestep values.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from diffusers.hooks import ModelHook
from diffusers.hooks.hooks import StateManager

from .hooks import outside_graph
from .state import ContextStates, input_key


def _num_calls(scheduler: Any) -> int:
    begin = getattr(scheduler, "_begin_index", None) or 0
    return len(scheduler.timesteps) - begin


class SchedulerWatch:
    """Announces each pipeline call to the context states: wraps ``set_timesteps`` and ``set_begin_index``.

    A scheduler swapped in after ``apply`` is picked up at the next denoiser call.

    Args:
        pipe: the pipeline.
        contexts: the denoiser's context states.
    """

    def __init__(self, pipe: Any, contexts: ContextStates) -> None:
        self.pipe = pipe
        self.contexts = contexts
        self.scheduler: Any = None

    def _cfg(self) -> bool | None:
        try:
            v = getattr(self.pipe, "do_classifier_free_guidance", None)
        except Exception:  # some pipelines compute it from attributes set later
            v = None
        return bool(v) if v is not None else None

    def attach(self, scheduler: Any) -> None:
        self.detach()
        self.scheduler = scheduler
        orig_set, orig_begin = scheduler.set_timesteps, getattr(scheduler, "set_begin_index", None)
        contexts = self.contexts

        # functools.wraps keeps the signature: pipelines inspect it for ``sigmas`` / ``timesteps`` support
        @functools.wraps(orig_set)
        def set_timesteps(*args: Any, **kwargs: Any) -> Any:
            out = orig_set(*args, **kwargs)
            contexts.expect_call(_num_calls(scheduler), self._cfg())
            return out

        scheduler.set_timesteps = set_timesteps
        if orig_begin is not None:

            @functools.wraps(orig_begin)
            def set_begin_index(*args: Any, **kwargs: Any) -> Any:
                out = orig_begin(*args, **kwargs)
                if all(st.step < 0 for st in contexts.states.values()):
                    contexts.expect_call(_num_calls(scheduler), self._cfg())
                return out

            scheduler.set_begin_index = set_begin_index

    def check(self) -> None:
        """Before each denoiser call: follow a swapped scheduler and the pipeline's real loop length.

        Pipelines set ``_num_timesteps`` to the length of the loop they are about to run (after img2img
        strength or SDXL ``denoising_end`` cut it), which is the number of denoiser calls per context.
        """
        contexts = self.contexts
        loop_len = getattr(self.pipe, "_num_timesteps", None)
        if isinstance(loop_len, int) and loop_len > 0:
            st = contexts.current
            if st._announced and st._pending_num_steps is not None:
                st._pending_num_steps = loop_len
                contexts.pending = loop_len
        sched = getattr(self.pipe, "scheduler", None)
        if sched is not None and sched is not self.scheduler:
            self.attach(sched)
            st = contexts.current
            if st.step < 0 or st.step + 1 >= st.num_steps:
                contexts.expect_call(_num_calls(sched), self._cfg())

    def detach(self) -> None:
        if self.scheduler is not None:
            for name in ("set_timesteps", "set_begin_index"):
                self.scheduler.__dict__.pop(name, None)
            self.scheduler = None


class ContextProbe(StateManager):
    """The ``StateManager`` diffusers sets the pipeline's cache context on; forwards it to the contexts."""

    def __init__(self, contexts: ContextStates) -> None:
        super().__init__(dict)
        self.contexts = contexts

    def set_context(self, context: Any) -> None:
        super().set_context(context)
        if context is None:
            self.contexts.set_context(None)
            return
        name = context if isinstance(context, str) else getattr(context, "name", None)
        self.contexts.set_context(
            name, getattr(context, "step_index", None), getattr(context, "num_inference_steps", None)
        )

    def reset(self, *args: Any, **kwargs: Any) -> None:
        super().reset(*args, **kwargs)
        self.contexts.set_context(None)


def step_coordinates(handle: Any, num_steps: int) -> list[float] | None:
    """The forecast coordinate of each of a call's ``num_steps`` denoiser calls (``None``: the step index).

    Read once per call from the pipeline's scheduler (``timesteps`` / ``sigmas`` from its begin index; a
    one-off host transfer when they live on the GPU).
    """
    kind = getattr(handle.config, "forecast_coordinate", "step")
    if kind == "step":
        return None
    from .approximators import coordinate

    scheduler = getattr(handle.pipe, "scheduler", None)
    values = getattr(scheduler, "timesteps" if kind == "timestep" else "sigmas", None)
    name = type(handle.config).__name__
    if values is None:
        raise ValueError(f"{name}.forecast_coordinate={kind!r} needs a pipeline scheduler with {kind}s; allowed "
                         "here: 'step'")
    begin = int(getattr(scheduler, "begin_index", None) or 0)
    values = [float(v) for v in values.detach().cpu().tolist()] if hasattr(values, "tolist") else list(values)
    if begin + num_steps > len(values):
        raise ValueError(f"{name}.forecast_coordinate={kind!r}: the scheduler has {len(values)} {kind}s for "
                         f"{num_steps} denoiser calls from index {begin}; allowed here: 'step'")
    return [coordinate(kind, begin + i, values, values) for i in range(num_steps)]


class StepHook(ModelHook):
    """Counts denoiser calls per cache context and times them; the outermost hook on the denoiser.

    At the start of each call it has every hook of its handle decide its mode for the step
    (:meth:`~tokencache.core.hooks.Handle.prepare_step`), and after the call feed the computed outputs
    to their approximators (:meth:`~tokencache.core.hooks.Handle.finish_step`); both run eagerly, outside
    any compiled graph, at the top of the denoiser's frame. A call that raises (or is interrupted)
    abandons the generation under way: every context's caches and counters are dropped, so the next
    call starts clean.

    Args:
        contexts: the per-context states.
        watch: the scheduler watch (the first denoiser of a pipeline only).
        uncached_call: tells the calls the plan does not count (SD3 skip-layer guidance).
        handle: the hooks to prepare at each step (``None``: none, e.g. a bare step counter).
    """

    _is_stateful = True

    def __init__(
        self,
        contexts: ContextStates,
        watch: SchedulerWatch | None,
        uncached_call: Callable[[dict], bool] | None = None,
        handle: Any = None,
    ) -> None:
        super().__init__()
        self.contexts = contexts
        self.watch = watch
        self.uncached_call = uncached_call
        self.handle = handle
        self.cache_state = ContextProbe(contexts)

    @outside_graph
    def _begin(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        try:
            self._start(module, args, kwargs)
        except BaseException:
            self._abandon()
            raise

    def _start(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        if self.watch is not None:
            self.watch.check()
        st = self.contexts.current
        st.begin_step(input_key(args, kwargs))
        if st.step == 0 and self.handle is not None:
            st.coords = step_coordinates(self.handle, st.num_steps)
        if st.book_wants(""):  # the denoiser's own inputs, for the MACs of every module (see MacBook)
            st.book_note("", args, kwargs)
        if self.handle is not None:
            self.handle.prepare_step(st, module, args, kwargs)

    @outside_graph
    def _end(self, module: torch.nn.Module) -> None:
        st = self.contexts.current
        if self.handle is not None:
            self.handle.finish_step(st)
        st.end_step(next(module.parameters()).device)

    @outside_graph
    def _abandon(self) -> None:
        if self.handle is not None:
            self.handle.switch_off()
        self.contexts.reset()

    @outside_graph
    def _switch_off(self) -> None:
        if self.handle is not None:
            self.handle.switch_off()

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self.uncached_call is not None and self.uncached_call(kwargs):
            # an extra call the plan does not count (SD3 skip-layer guidance): run it with every hook off
            self._switch_off()
            with self.contexts.uncached():
                return self.fn_ref.original_forward(*args, **kwargs)
        self._begin(module, args, kwargs)  # not inside the try: dynamo cannot resume a graph break there
        try:
            out = self.fn_ref.original_forward(*args, **kwargs)
        except BaseException:
            self._abandon()
            raise
        self._end(module)
        return out

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        # Called by diffusers' reset machinery; an unfinished call is abandoned, finished results kept.
        for st in self.contexts.states.values():
            if st.step + 1 < st.num_steps:
                st.reset()
        if self.handle is not None:
            self.handle.switch_off()
        return module
