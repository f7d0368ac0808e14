"""``apply`` / ``remove`` / ``summary``: attach a method to a pipeline or a bare denoiser."""

from __future__ import annotations

import sys
from typing import Any

import torch

from . import unet as _unet  # noqa: F401  (registers the UNet family)
from .adapters import Handle, find_family, invalidate_registry_caches
from .config import BaseConfig
from .schedule import resample
from .state import CallState, StepHook
from .stats import MacBook, Summary

try:  # the transformer family is optional while it is being developed
    from . import dit as _dit  # noqa: F401
except ImportError:  # pragma: no cover
    pass

_ATTR = "_tokencache"


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The diffusers model inside a ``peft.PeftModel`` (PixArt LoRAs are often loaded that way)."""
    peft = sys.modules.get("peft")  # a PeftModel exists only if peft was imported
    peft_model = getattr(peft, "PeftModel", None) if peft is not None else None
    if peft_model is not None and isinstance(model, peft_model):
        base = model.get_base_model()
        if isinstance(base, torch.nn.Module):
            return base
    return model


def _split(target: Any) -> tuple[Any, torch.nn.Module]:
    """(pipeline or None, denoiser) of a pipeline or a bare model; a ``PeftModel`` is unwrapped."""
    if isinstance(target, torch.nn.Module):
        return None, _unwrap(target)
    for attr in ("unet", "transformer"):
        den = getattr(target, attr, None)
        if isinstance(den, torch.nn.Module):
            return target, _unwrap(den)
    raise TypeError(
        f"tc.apply target of type {type(target).__name__} is not supported; allowed: a diffusers pipeline "
        "with a `unet` or `transformer`, or the denoiser model itself"
    )


def _num_calls(scheduler: Any) -> int:
    begin = getattr(scheduler, "_begin_index", None) or 0
    return len(scheduler.timesteps) - begin


class _SchedulerWatch:
    """Announces each pipeline call to the state: wraps ``set_timesteps`` and ``set_begin_index``.

    Pipelines call ``set_timesteps`` once per call before the loop (img2img then moves the start with
    ``set_begin_index``), which gives the number of denoiser calls without looking at timestep values.
    A scheduler swapped in after ``apply`` is picked up at the next denoiser call.
    """

    def __init__(self, handle: Handle) -> None:
        self.handle = handle
        self.scheduler: Any = None

    def _cfg(self) -> bool | None:
        pipe = self.handle.pipe
        try:
            v = getattr(pipe, "do_classifier_free_guidance", None)
        except Exception:  # some pipelines compute it from attributes set later
            v = None
        return bool(v) if v is not None else None

    def attach(self, scheduler: Any) -> None:
        self.detach()
        self.scheduler = scheduler
        orig_set, orig_begin = scheduler.set_timesteps, getattr(scheduler, "set_begin_index", None)
        state = self.handle.state

        def set_timesteps(*args: Any, **kwargs: Any) -> Any:
            out = orig_set(*args, **kwargs)
            state.expect_call(_num_calls(scheduler), self._cfg())
            return out

        scheduler.set_timesteps = set_timesteps
        if orig_begin is not None:

            def set_begin_index(*args: Any, **kwargs: Any) -> Any:
                out = orig_begin(*args, **kwargs)
                if state.step < 0:
                    state.expect_call(_num_calls(scheduler), self._cfg())
                return out

            scheduler.set_begin_index = set_begin_index

    def check(self) -> None:
        """Before each denoiser call: follow a swapped scheduler and the pipeline's real loop length.

        Pipelines set ``_num_timesteps`` to the length of the loop they are about to run (after img2img
        strength or SDXL ``denoising_end`` cut it), which is the number of denoiser calls we will see.
        """
        state = self.handle.state
        loop_len = getattr(self.handle.pipe, "_num_timesteps", None)
        if state._pending_num_steps is not None and isinstance(loop_len, int) and loop_len > 0:
            state._pending_num_steps = loop_len
        sched = getattr(self.handle.pipe, "scheduler", None)
        if sched is not None and sched is not self.scheduler:
            self.attach(sched)
            if self.handle.state.step < 0 or self.handle.state.step + 1 >= self.handle.state.num_steps:
                self.handle.state.expect_call(_num_calls(sched), self._cfg())

    def detach(self) -> None:
        if self.scheduler is not None:
            for name in ("set_timesteps", "set_begin_index"):
                self.scheduler.__dict__.pop(name, None)
            self.scheduler = None


class _WatchedStepHook(StepHook):
    def __init__(self, state: CallState, watch: _SchedulerWatch | None) -> None:
        super().__init__(state)
        self.watch = watch

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self.watch is not None:
            self.watch.check()
        return super().new_forward(module, *args, **kwargs)


def apply(
    target: Any, config: BaseConfig, *, num_inference_steps: int | None = None, cfg: bool | None = None
) -> Any:
    """Accelerate a diffusers pipeline (or its ``unet`` / ``transformer``) with a method config.

    Args:
        target: a pipeline such as ``StableDiffusionPipeline`` or ``DiTPipeline``, or the denoiser.
        config: a method config (``DaToConfig``, ``ToCaConfig``, ``DuCaConfig``, ``DeepCacheConfig``,
            ``ToMeConfig``, ``FORAConfig``).
        num_inference_steps: for a bare denoiser only: denoiser calls per generation (a pipeline tells
            us through its scheduler). Defaults to the length of the config's plan.
        cfg: for a bare denoiser only: whether batches are ``[uncond; cond]`` classifier-free guidance.

    Returns:
        ``target``, for chaining.

    Example:
        >>> import tokencache as tc
        >>> tc.apply(pipe, tc.DaToConfig.preset("balanced"))
        >>> image = pipe("a cat", num_inference_steps=50).images[0]
        >>> tc.remove(pipe)
    """
    if not isinstance(config, BaseConfig):
        raise TypeError(f"tc.apply config of type {type(config).__name__} is not a tokencache config")
    pipe, denoiser = _split(target)
    family = find_family(denoiser)
    if family.kind not in config.families:
        raise TypeError(
            f"{type(config).__name__} does not run on {type(denoiser).__name__}; it supports "
            f"{'UNet' if 'unet' in config.families else 'transformer'} denoisers"
        )
    if getattr(denoiser, _ATTR, None) is not None:
        raise ValueError(
            f"tokencache is already applied to this {type(denoiser).__name__}; call tc.remove() first"
        )
    if num_inference_steps is not None and (not isinstance(num_inference_steps, int) or num_inference_steps < 1):
        raise ValueError(f"num_inference_steps={num_inference_steps!r} is invalid; allowed: a positive integer")
    plan_len = len(getattr(config, "cache_plan", None) or []) or 50

    def plan_fn(n: int) -> list:
        return family_plan(config, n)

    state = CallState(plan_fn, num_inference_steps or plan_len)
    state.cfg = cfg
    handle = Handle(config=config, denoiser=denoiser, family=family, state=state, book=MacBook(denoiser), pipe=pipe)
    state.book = handle.book
    watch = _SchedulerWatch(handle) if pipe is not None else None
    try:
        family.install(handle)
        handle.register(denoiser, _WatchedStepHook(state, watch), "step")
    except Exception:
        handle.remove_hooks()
        raise
    invalidate_registry_caches(denoiser)
    # At the start of every call: hooks on leaf layers follow LoRA layers loaded or unloaded since, and
    # the MAC book notes the adapter layout the call runs with.
    if any(b.path is not None for b in handle.bindings):
        state.on_new_call.append(handle.follow_modules)
    state.on_new_call.append(handle.book.new_call)
    if watch is not None and getattr(pipe, "scheduler", None) is not None:
        watch.attach(pipe.scheduler)
    handle.scheduler = watch
    setattr(denoiser, _ATTR, handle)
    return target


def family_plan(config: BaseConfig, num_steps: int) -> list:
    """The per-step actions of ``config`` for ``num_steps`` denoiser calls."""
    if hasattr(config, "unet_plan"):
        return config.unet_plan(num_steps)
    if hasattr(config, "dit_plan"):
        return config.dit_plan(num_steps)
    return resample(["full"], num_steps)  # pragma: no cover


def _handle(target: Any) -> Handle | None:
    _, denoiser = _split(target)
    return getattr(denoiser, _ATTR, None)


def remove(target: Any) -> Any:
    """Remove every tokencache hook and free the caches; a no-op if nothing is applied.

    After ``remove`` the pipeline's outputs are bit-identical to never having applied anything.
    """
    handle = _handle(target)
    if handle is None:
        return target
    handle.remove_hooks()
    if handle.scheduler is not None:
        handle.scheduler.detach()
    handle.state.reset()
    delattr(handle.denoiser, _ATTR)
    return target


def summary(target: Any) -> Summary:
    """:class:`~tokencache.stats.Summary` of the last finished call of an accelerated pipeline.

    Raises:
        ValueError: if nothing is applied to ``target``.
    """
    handle = _handle(target)
    if handle is None:
        raise ValueError("tc.summary: nothing is applied to this pipeline/model; call tc.apply first")
    return handle.summary()


def is_applied(target: Any) -> bool:
    """Whether tokencache is applied to ``target``."""
    return _handle(target) is not None
