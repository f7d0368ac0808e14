"""Other acceleration tools ("peers") the benchmark runs next to tokencache, in the same process and loop.

Each peer is a function ``enable(target) -> disable`` that installs the tool on a
:class:`PeerTarget` (the denoiser, and its pipeline in pipeline mode) and returns a function that
removes it with the tool's own API. After ``disable`` the harness also puts back anything the tool
left on the modules (see :func:`snapshot`), so the next config always runs on a clean model. A peer
that cannot install or run on a model raises; the harness turns that into an error row.

Install the third-party ones with ``pip install "tokencache[peers]"`` (DeepCache, tomesd, cache-dit);
the ``diffusers`` hooks (PAB, TaylorSeer, MagCache, FasterCache, First Block Cache) ship with diffusers.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where a peer runs: `tokencache bench --help` stays light
    import torch

#: the diffusers ``Attention`` / ``FeedForward`` submodules of DiT and PixArt blocks (``attn1``, ``attn2``,
#: ``ff``). TaylorSeer's default patterns (``^transformer_blocks.*attn`` under ``re.fullmatch``) only match
#: modules named ``attn`` (Flux style), which would hook nothing here.
TAYLORSEER_IDENTIFIERS = [r"transformer_blocks\.\d+\.(attn\d|ff)"]


@dataclass
class PeerTarget:
    """What a peer is installed on, and what it may need from the run.

    Args:
        denoiser: the UNet or transformer.
        pipe: the pipeline in pipeline / reference mode, ``None`` in bare-loop mode.
        scheduler: the scheduler stepping the loop (DeepCache reads its timesteps).
        steps: denoiser calls per generation (MagCache and cache-dit need it up front).
        cfg: whether each call carries the ``[uncond; cond]`` classifier-free-guidance batch.
        timestep: the timestep of the denoiser call in progress (PAB and FasterCache ask for it).
        generate: one untimed seeded generation (MagCache calibrates with it).
        memo: survives between the runs of one benchmark (calibrated MagCache ratios).
    """

    denoiser: torch.nn.Module
    pipe: Any = None
    scheduler: Any = None
    steps: int = 50
    cfg: bool = True
    timestep: Callable[[], float] = lambda: 0.0
    generate: Callable[[], Any] = lambda: None
    memo: dict = field(default_factory=dict)


Disable = Callable[[], None]


def _is_unet(model: torch.nn.Module) -> bool:
    from diffusers import UNet2DConditionModel

    return isinstance(model, UNet2DConditionModel)


# ---- third-party packages ---------------------------------------------------------------------------


def peer_tomesd(target: PeerTarget) -> Disable:
    """tomesd 0.1.3: token merging in the full-resolution attention layers, ratio 0.5 (its README's)."""
    import tomesd

    if not _is_unet(target.denoiser):
        # tomesd merges only at downsample <= max_downsample; a patchified transformer is never at
        # downsample 1, so it would run unchanged: say so instead of timing a no-op.
        raise TypeError(f"tomesd patches Stable Diffusion UNets only; got {type(target.denoiser).__name__}")
    model = target.pipe if target.pipe is not None else target.denoiser
    tomesd.apply_patch(model, ratio=0.5)
    return lambda: tomesd.remove_patch(model)


def peer_deepcache(target: PeerTarget) -> Disable:
    """DeepCache 0.1.1: reuse the deep UNet features, full call every 3 steps, branch 0."""
    from types import SimpleNamespace

    from DeepCache import DeepCacheSDHelper

    pipe = target.pipe or SimpleNamespace(unet=target.denoiser, scheduler=target.scheduler)
    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=3, cache_branch_id=0)
    helper.enable()
    return helper.disable


def cache_dit_warmup(steps: int) -> int:
    """cache-dit's 8 warm-up steps (its default, meant for ~50 steps) scaled to ``steps``, at least 1."""
    return max(1, round(8 * steps / 50))


def peer_cache_dit(target: PeerTarget) -> Disable:
    """cache-dit 1.5.3 DBCache, F1B0 (first block probes, no tail blocks), threshold 0.08 (its default).

    On a pipeline it uses ``cache_dit.enable_cache(pipe)``, its documented entry point. In bare-loop mode
    it uses cache-dit's transformer-only mode (``enable_cache(transformer)`` with ``num_inference_steps``),
    which cache-dit marks as meant for testing. UNets are not supported by cache-dit (it raises).
    """
    os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "error")  # its loggers write to stdout at INFO
    import cache_dit
    from cache_dit import DBCacheConfig

    transformer_only = target.pipe is None
    config = DBCacheConfig(
        Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=0.08,
        max_warmup_steps=cache_dit_warmup(target.steps),
        num_inference_steps=target.steps if transformer_only else None,
    )
    obj = target.denoiser if transformer_only else target.pipe
    cache_dit.enable_cache(obj, cache_config=config)
    return lambda: cache_dit.disable_cache(obj)


# ---- diffusers hooks --------------------------------------------------------------------------------


def _context_hook(model: torch.nn.Module) -> torch.utils.hooks.RemovableHandle:
    """Set a diffusers cache context before every denoiser call.

    The DiT, PixArt and SD pipelines never call ``cache_context`` (their models lack ``CacheMixin``), and
    the stateful hooks (First Block Cache, TaylorSeer) refuse to run without one. CFG is batched in one call
    there, so one context name serves every call.
    """
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    def pre(module: torch.nn.Module, args: tuple) -> None:
        _set_cache_context(module, CacheContext("cond"))

    return model.register_forward_pre_hook(pre)


def _hooks_of(module: torch.nn.Module) -> dict:
    return getattr(getattr(module, "_diffusers_hook", None), "hooks", {})


def _hooked(model: torch.nn.Module, hook_names: tuple[str, ...]) -> int:
    """How many submodules carry one of ``hook_names``."""
    return sum(1 for m in model.modules() if any(n in _hooks_of(m) for n in hook_names))


def _with_diffusers_hooks(
    target: PeerTarget, apply: Callable[[torch.nn.Module], None], hook_names: tuple[str, ...], label: str
) -> Disable:
    """Apply a diffusers cache hook with a cache context per call; fail if it hooked nothing."""
    from diffusers.hooks import HookRegistry

    model = target.denoiser
    registry = HookRegistry.check_if_exists_or_initialize(model)
    handle = _context_hook(model)

    def disable() -> None:
        handle.remove()
        for name in hook_names:
            registry.remove_hook(name, recurse=True)
        registry.invalidate_child_registries_cache()

    try:
        apply(model)
        registry.invalidate_child_registries_cache()  # as CacheMixin.enable_cache does
        if not _hooked(model, hook_names):
            raise RuntimeError(f"{label} matched no module of {type(model).__name__}; nothing would be cached")
    except Exception:
        disable()
        raise
    return disable


def peer_first_block_cache(target: PeerTarget) -> Disable:
    """diffusers First Block Cache, threshold 0.05 (its default)."""
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
    from diffusers.hooks.first_block_cache import _FBC_BLOCK_HOOK, _FBC_LEADER_BLOCK_HOOK

    return _with_diffusers_hooks(
        target, lambda m: apply_first_block_cache(m, FirstBlockCacheConfig(threshold=0.05)),
        (_FBC_LEADER_BLOCK_HOOK, _FBC_BLOCK_HOOK), "First Block Cache",
    )


def peer_pab(target: PeerTarget) -> Disable:
    """diffusers Pyramid Attention Broadcast: self-attention every 2nd call for timesteps in (100, 800)."""
    from diffusers.hooks import PyramidAttentionBroadcastConfig, apply_pyramid_attention_broadcast
    from diffusers.hooks.pyramid_attention_broadcast import _PYRAMID_ATTENTION_BROADCAST_HOOK

    config = PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(100, 800),
        current_timestep_callback=target.timestep,
    )
    return _with_diffusers_hooks(
        target, lambda m: apply_pyramid_attention_broadcast(m, config), (_PYRAMID_ATTENTION_BROADCAST_HOOK,), "PAB"
    )


def peer_taylorseer(target: PeerTarget) -> Disable:
    """diffusers TaylorSeer: defaults (interval 5, 3 warm-up steps, order 1) on attention and FFN outputs."""
    from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache
    from diffusers.hooks.taylorseer_cache import _TAYLORSEER_CACHE_HOOK

    dtype = next(target.denoiser.parameters()).dtype
    config = TaylorSeerCacheConfig(taylor_factors_dtype=dtype, cache_identifiers=TAYLORSEER_IDENTIFIERS)
    return _with_diffusers_hooks(
        target, lambda m: apply_taylorseer_cache(m, config), (_TAYLORSEER_CACHE_HOOK,), "TaylorSeer"
    )


def peer_faster_cache(target: PeerTarget) -> Disable:
    """diffusers FasterCache: defaults for images (``BCHW``); the CFG split also covers ``class_labels``.

    FasterCache assumes the CFG batch is ``[uncond; cond]``; ``DiTPipeline`` orders it ``[cond; uncond]``,
    so there it approximates the conditional half (the PSNR shows it).
    """
    from diffusers.hooks import FasterCacheConfig, apply_faster_cache
    from diffusers.hooks.faster_cache import (
        _FASTER_CACHE_BLOCK_HOOK,
        _FASTER_CACHE_DENOISER_HOOK,
        _UNCOND_COND_INPUT_KWARGS_IDENTIFIERS,
    )

    config = FasterCacheConfig(
        current_timestep_callback=target.timestep, tensor_format="BCHW", is_guidance_distilled=not target.cfg,
        _unconditional_conditional_input_kwargs_identifiers=[*_UNCOND_COND_INPUT_KWARGS_IDENTIFIERS, "class_labels"],
    )
    return _with_diffusers_hooks(
        target, lambda m: apply_faster_cache(m, config), (_FASTER_CACHE_DENOISER_HOOK, _FASTER_CACHE_BLOCK_HOOK),
        "FasterCache",
    )


def calibrate_mag_ratios(target: PeerTarget) -> list[float]:
    """MagCache's own calibration mode on one untimed generation: the per-step magnitude ratios.

    MagCache's published ratios are per checkpoint (diffusers ships Flux's only), so the benchmark
    calibrates on the model it times, with the same seeded inputs.
    """
    from diffusers.hooks import MagCacheConfig, apply_mag_cache
    from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK, _MAG_CACHE_LEADER_BLOCK_HOOK

    ratios: list[float] = []

    def apply(model: torch.nn.Module) -> None:
        apply_mag_cache(model, MagCacheConfig(calibrate=True, num_inference_steps=target.steps))
        hooks = [_hooks_of(m)[_MAG_CACHE_BLOCK_HOOK] for m in model.modules() if _MAG_CACHE_BLOCK_HOOK in _hooks_of(m)]
        tail = next((h for h in hooks if h.is_tail), None)
        if tail is None:
            return
        record = tail._perform_calibration_step

        def keep(state: Any, residual: torch.Tensor) -> None:  # the hook clears its list at the last step
            record(state, residual)
            ratios.append(float(state.calibration_ratios[-1]))

        tail._perform_calibration_step = keep

    disable = _with_diffusers_hooks(target, apply, (_MAG_CACHE_LEADER_BLOCK_HOOK, _MAG_CACHE_BLOCK_HOOK), "MagCache")
    try:
        # no_grad: a generation under autograd keeps every step's activations (OOM on DiT-XL/2)
        import torch

        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # it prints the ratios
            target.generate()
    finally:
        disable()
    if len(ratios) != target.steps:
        raise RuntimeError(f"MagCache calibration gave {len(ratios)} ratios for {target.steps} steps")
    return ratios


def peer_magcache(target: PeerTarget) -> Disable:
    """diffusers MagCache, defaults (threshold 0.06, K=3, retention 0.2), ratios from its calibration mode."""
    from diffusers.hooks import MagCacheConfig, apply_mag_cache
    from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK, _MAG_CACHE_LEADER_BLOCK_HOOK

    key = ("magcache", target.steps)
    if key not in target.memo:
        target.memo[key] = calibrate_mag_ratios(target)
    config = MagCacheConfig(mag_ratios=target.memo[key], num_inference_steps=target.steps)
    return _with_diffusers_hooks(
        target, lambda m: apply_mag_cache(m, config), (_MAG_CACHE_LEADER_BLOCK_HOOK, _MAG_CACHE_BLOCK_HOOK),
        "MagCache",
    )


#: peer name -> ``enable(target)`` returning its ``disable``.
PEERS: dict[str, Callable[[PeerTarget], Disable]] = {
    "peer:tomesd": peer_tomesd,
    "peer:deepcache": peer_deepcache,
    "peer:first-block-cache": peer_first_block_cache,
    "peer:pab": peer_pab,
    "peer:taylorseer": peer_taylorseer,
    "peer:magcache": peer_magcache,
    "peer:faster-cache": peer_faster_cache,
    "peer:cache-dit": peer_cache_dit,
}


# ---- leaving the model as it was ------------------------------------------------------------------


def snapshot(model: torch.nn.Module, pipe: Any = None) -> Callable[[], list[str]]:
    """Remember the instance state of every module (and the pipeline); returns a ``restore`` function.

    Peers' own disable functions leave things behind: instance ``forward`` attributes (DeepCache, the
    diffusers hook registry), empty ``_diffusers_hook`` registries, cache-dit's patched DiT forward and its
    ``_norm1_emb`` submodule. ``restore`` puts each module's attributes, submodules, parameters, buffers
    and class back, and the pipeline's attributes and class ``__call__``.

    Returns:
        ``restore()``, which returns the names of the modules it had to repair.
    """
    saved = [(name, m, type(m), dict(vars(m)), dict(m._modules), dict(m._parameters), dict(m._buffers))
             for name, m in model.named_modules()]
    pipe_state = (dict(vars(pipe)), type(pipe).__dict__.get("__call__")) if pipe is not None else None

    def restore() -> list[str]:
        repaired = []
        for name, m, cls, attrs, mods, params, bufs in saved:
            same = type(m) is cls and _same(vars(m), attrs) and _same(m._modules, mods)
            if same and _same(m._parameters, params) and _same(m._buffers, bufs):
                continue
            repaired.append(name or type(m).__name__)
            m.__class__ = cls
            m.__dict__.clear()
            m.__dict__.update(attrs)
            for d, old in ((m._modules, mods), (m._parameters, params), (m._buffers, bufs)):
                d.clear()
                d.update(old)
        if pipe_state is not None:
            attrs, call = pipe_state
            if not _same(vars(pipe), attrs):
                pipe.__dict__.clear()
                pipe.__dict__.update(attrs)
            if call is not None and type(pipe).__dict__.get("__call__") is not call:
                type(pipe).__call__ = call
        return repaired

    return restore


def _same(now: dict, before: dict) -> bool:
    """Same keys bound to the same objects (identity: values may be tensors)."""
    return now.keys() == before.keys() and all(now[k] is v for k, v in before.items())
