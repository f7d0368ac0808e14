"""``apply`` / ``remove`` / ``summary``: attach a method to a pipeline or a bare denoiser.

``apply`` finds the denoiser's model adapter (:mod:`tokencache.models`), checks that the method runs on
its structure, and lets the method install its hooks (:mod:`tokencache.methods`); the core adds the
outermost step hook that counts calls per cache context (:mod:`tokencache.core.calls`).
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from .core.accounting import PREFIX_SEP, MacBook, Summary, build_summary
from .core.calls import SchedulerWatch, StepHook
from .core.config import BaseConfig
from .core.hooks import Handle, invalidate_registry_caches
from .core.state import ContextStates
from .models import find_adapter

_ATTR = "_tokencache"


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The diffusers model inside a ``torch.compile`` wrapper or a ``peft.PeftModel``."""
    orig = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
    if isinstance(orig, torch.nn.Module):
        model = orig
    peft = sys.modules.get("peft")  # a PeftModel exists only if peft was imported
    peft_model = getattr(peft, "PeftModel", None) if peft is not None else None
    if peft_model is not None and isinstance(model, peft_model):
        base = model.get_base_model()
        if isinstance(base, torch.nn.Module):
            return base
    return model


def _split(target: Any) -> tuple[Any, torch.nn.Module]:
    """(pipeline or None, denoiser) of a pipeline or a bare model; wrappers are unwrapped."""
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


def apply(
    target: Any, config: BaseConfig, *, num_inference_steps: int | None = None, cfg: bool | None = None
) -> Any:
    """Accelerate a diffusers pipeline (or its ``unet`` / ``transformer``) with a method config.

    Args:
        target: a pipeline such as ``StableDiffusionPipeline`` or ``DiTPipeline``, or the denoiser.
        config: a method config (``DaToConfig``, ``ToCaConfig``, ``DuCaConfig``, ``DeepCacheConfig``,
            ``ToMeConfig``, ``FORAConfig``).
        num_inference_steps: for a bare denoiser only: denoiser calls per generation and cache context
            (a pipeline tells us through its scheduler). Defaults to the length of the config's plan.
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
    adapter = find_adapter(denoiser)
    if adapter.structure not in config.structures:
        from .methods import methods_for

        raise TypeError(
            f"{type(config).__name__} does not run on {type(denoiser).__name__} (a {adapter.structure} model of the "
            f"{adapter.name} family); it runs on {' or '.join(config.structures)} models; methods for this one: "
            f"{[c.__name__ for c in methods_for(adapter.structure)]}"
        )
    if getattr(denoiser, _ATTR, None) is not None:
        raise ValueError(
            f"tokencache is already applied to this {type(denoiser).__name__}; call tc.remove() first"
        )
    if num_inference_steps is not None and (
        isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1
    ):
        raise ValueError(f"num_inference_steps={num_inference_steps!r} is invalid; allowed: a positive integer")
    coord = getattr(config, "forecast_coordinate", "step")
    if coord != "step" and pipe is None:
        raise ValueError(
            f"{type(config).__name__}.forecast_coordinate={coord!r} needs a pipeline (its scheduler gives the "
            f"{coord}s); allowed for a bare {type(denoiser).__name__}: 'step'"
        )
    plan_len = len(getattr(config, "cache_plan", None) or []) or 50
    contexts = ContextStates(config.plan, num_inference_steps or plan_len)
    contexts.cfg = cfg
    contexts.book = MacBook(denoiser)
    handle = Handle(config=config, denoiser=denoiser, adapter=adapter, contexts=contexts, book=contexts.book, pipe=pipe)
    watch = SchedulerWatch(pipe, contexts) if pipe is not None else None
    handles = [handle]
    second = _second_expert(pipe, denoiser)
    if second is not None:
        handles.append(
            Handle(config=config, denoiser=second, adapter=adapter, contexts=contexts, book=contexts.book, pipe=pipe,
                   prefix=SECOND_EXPERT + PREFIX_SEP)
        )
    try:
        for h in handles:
            config.install(h, adapter)
            h.register(h.denoiser, StepHook(contexts, watch if h is handle else None, adapter.uncached_call, h), "step")
    except Exception:
        for h in handles:
            h.remove_hooks()
        raise
    handle.linked = handles[1:]
    for h in handles:
        invalidate_registry_caches(h.denoiser)
        # At the start of every call: hooks on leaf layers follow LoRA layers loaded or unloaded since.
        if any(b.path is not None for b in h.bindings):
            contexts.on_new_call.append(h.follow_modules)
    # ... and the MAC book notes the adapter layout the call runs with.
    contexts.on_new_call.append(handle.book.new_call)
    if watch is not None and getattr(pipe, "scheduler", None) is not None:
        watch.attach(pipe.scheduler)
    handle.scheduler = watch
    for h in handles:
        setattr(h.denoiser, _ATTR, handle)
    return target


#: the pipeline attribute of Wan 2.2's low-noise expert.
SECOND_EXPERT = "transformer_2"


def _second_expert(pipe: Any, denoiser: torch.nn.Module) -> torch.nn.Module | None:
    """Wan 2.2's ``transformer_2`` (switched in at a boundary step), accelerated with the first expert.

    Both experts share one set of context states, so steps are counted across the switch, and keep
    their caches apart (hook state is prefixed). Their MACs are counted on one twin, so they must have
    the same class and config.
    """
    other = getattr(pipe, SECOND_EXPERT, None) if pipe is not None else None
    if not isinstance(other, torch.nn.Module):
        return None
    other = _unwrap(other)
    if other is denoiser:
        return None
    if type(other) is not type(denoiser) or dict(other.config) != dict(denoiser.config):
        raise ValueError(
            f"pipe.{SECOND_EXPERT} is a {type(other).__name__} whose config differs from pipe.transformer's; "
            "tokencache accelerates two experts only when they have the same class and config"
        )
    if getattr(other, _ATTR, None) is not None:
        raise ValueError(f"tokencache is already applied to pipe.{SECOND_EXPERT}; call tc.remove() first")
    return other


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
    for h in (handle, *handle.linked):
        h.remove_hooks()
        if getattr(h.denoiser, _ATTR, None) is handle:
            delattr(h.denoiser, _ATTR)
    if handle.scheduler is not None:
        handle.scheduler.detach()
    handle.contexts.clear()
    return target


def summary(target: Any) -> Summary:
    """:class:`~tokencache.core.accounting.Summary` of the last finished generation of an accelerated pipeline.

    Raises:
        ValueError: if nothing is applied to ``target``.
    """
    handle = _handle(target)
    if handle is None:
        raise ValueError("tc.summary: nothing is applied to this pipeline/model; call tc.apply first")
    return build_summary(handle.config.method, handle.contexts.published(), handle.book, handle.token_modules)


def is_applied(target: Any) -> bool:
    """Whether tokencache is applied to ``target``."""
    return _handle(target) is not None
