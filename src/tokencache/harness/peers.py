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
import inspect
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where a peer runs: `tokencache bench --help` stays light
    import torch

#: diffusers TaylorSeer's ``cache_identifiers`` (``re.fullmatch`` on module names): each family's attention and
#: feed-forward modules, as its users configure it. Its default patterns only match attention modules named
#: ``attn`` (FLUX style): nothing on DiT, PixArt or Wan, and no feed-forward anywhere.
TAYLORSEER_IDENTIFIERS = [
    r"transformer_blocks\.\d+\.(attn\d?|ff|ff_context|img_mlp|txt_mlp)",  # DiT/PixArt, FLUX/SD3 joint, Qwen-Image
    r"single_transformer_blocks\.\d+\.(attn|proj_mlp|proj_out)",  # FLUX single-stream blocks
    r"blocks\.\d+\.(attn1|attn2|ffn)",  # Wan
]


@dataclass
class PeerTarget:
    """What a peer is installed on, and what it may need from the run.

    Args:
        denoiser: the UNet or transformer.
        pipe: the pipeline in pipeline / reference mode, ``None`` in bare-loop mode.
        scheduler: the scheduler stepping the loop (DeepCache reads its timesteps).
        steps: denoising steps per generation, as each cache context counts them (MagCache and cache-dit
            need it up front): the denoiser calls, halved where each CFG branch is its own call.
        cfg: whether each call carries the ``[uncond; cond]`` classifier-free-guidance batch (not when a
            pipeline calls each branch on its own, in ``cache_context``: FLUX true CFG, Wan, Qwen-Image).
        timestep: the timestep of the denoiser call in progress, in the scheduler's units (what
            ``pipe.current_timestep`` says; FLUX and Qwen-Image take it divided by 1000): PAB and FasterCache
            compare it with their timestep ranges.
        generate: one untimed seeded generation (MagCache calibrates with it).
        memo: survives between the runs of one benchmark (calibrated MagCache ratios).
        separate_cfg: whether the pipeline calls the cond and uncond branches separately, cond first, each
            step (cache-dit's ``enable_separate_cfg``).
    """

    denoiser: torch.nn.Module
    pipe: Any = None
    scheduler: Any = None
    steps: int = 50
    cfg: bool = True
    timestep: Callable[[], float] = lambda: 0.0
    generate: Callable[[], Any] = lambda: None
    memo: dict = field(default_factory=dict)
    separate_cfg: bool = False


Disable = Callable[[], None]


def _is_unet(model: torch.nn.Module) -> bool:
    from diffusers import UNet2DConditionModel

    return isinstance(model, UNet2DConditionModel)


# ---- third-party packages ---------------------------------------------------------------------------


def peer_tomesd(target: PeerTarget, ratio: float = 0.5) -> Disable:
    """tomesd 0.1.3: token merging in the full-resolution attention layers, ``ratio`` 0.5 (its README's)."""
    import tomesd

    if not _is_unet(target.denoiser):
        # tomesd merges only at downsample <= max_downsample; a patchified transformer is never at
        # downsample 1, so it would run unchanged: say so instead of timing a no-op.
        raise TypeError(f"tomesd patches Stable Diffusion UNets only; got {type(target.denoiser).__name__}")
    model = target.pipe if target.pipe is not None else target.denoiser
    tomesd.apply_patch(model, ratio=ratio)
    return lambda: tomesd.remove_patch(model)


def peer_deepcache(target: PeerTarget, interval: int = 3, branch: int = 0) -> Disable:
    """DeepCache 0.1.1: reuse the deep UNet features, a full call every ``interval`` steps (3), ``branch`` 0."""
    from types import SimpleNamespace

    from DeepCache import DeepCacheSDHelper

    pipe = target.pipe or SimpleNamespace(unet=target.denoiser, scheduler=target.scheduler)
    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=interval, cache_branch_id=branch)
    helper.enable()
    return helper.disable


def cache_dit_warmup(steps: int) -> int:
    """cache-dit's 8 warm-up steps (its default, meant for ~50 steps) scaled to ``steps``, at least 1."""
    return max(1, round(8 * steps / 50))


def peer_cache_dit(
    target: PeerTarget, threshold: float = 0.08, fn: int = 1, calibrator: str = "none", order: int = 1,
    warmup: int | None = None,
) -> Disable:
    """cache-dit 1.5.3 DBCache: F``fn``B0 (the first ``fn`` blocks probe, no tail blocks), ``threshold`` 0.08.

    ``calibrator``: ``"none"`` (plain reuse, cache-dit's default), ``"taylorseer"`` (order ``order``) or
    ``"foca"``, cache-dit's own calibrators. ``warmup``: full steps first (default 8 per 50 steps, scaled).

    Where the pipeline calls each CFG branch on its own it sets ``enable_separate_cfg=True`` (cache-dit's
    switch for true-CFG pipelines; its FLUX adapter defaults to False, for guidance-distilled FLUX.1-dev).
    On a pipeline it uses ``cache_dit.enable_cache(pipe)``, its documented entry point. In bare-loop mode
    it uses cache-dit's transformer-only mode (``enable_cache(transformer)`` with ``num_inference_steps``),
    which cache-dit marks as meant for testing; where that mode misses a family cache-dit supports through
    its pipeline (SD3), it gets the ``BlockAdapter`` of cache-dit's own pipeline adapter. UNets are not
    supported by cache-dit (it raises).
    """
    os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "error")  # its loggers write to stdout at INFO
    import cache_dit
    from cache_dit import DBCacheConfig

    transformer_only = target.pipe is None
    config = DBCacheConfig(
        Fn_compute_blocks=fn, Bn_compute_blocks=0, residual_diff_threshold=threshold,
        max_warmup_steps=cache_dit_warmup(target.steps) if warmup is None else warmup,
        num_inference_steps=target.steps if transformer_only else None,
        # per-branch CFG calls (FLUX true CFG): cache-dit's FLUX adapter assumes none and would run the cond
        # and uncond calls as consecutive steps of one cache; None keeps its per-pipeline default
        enable_separate_cfg=True if target.separate_cfg else None,
    )
    calibrators = {"none": None, "taylorseer": lambda: cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=order),
                   "foca": lambda: cache_dit.FoCaCalibratorConfig()}
    if calibrator not in calibrators:
        raise ValueError(f"peer:cache-dit calibrator={calibrator!r} is invalid; allowed: {list(calibrators)}")
    make = calibrators[calibrator]
    obj = target.denoiser if transformer_only else target.pipe
    disable = obj
    if transformer_only:
        obj = _cache_dit_blocks(target.denoiser) or obj
    cache_dit.enable_cache(obj, cache_config=config, calibrator_config=make() if make else None)
    return lambda: cache_dit.disable_cache(disable)


#: denoiser class -> (block stack, cache-dit forward pattern) of cache-dit's own pipeline adapter, for the
#: transformer-only mode, where cache-dit matches the transformer's class name against its pipeline names
#: and misses these (``StableDiffusion3`` vs ``SD3Transformer2DModel``).
_CACHE_DIT_BLOCKS = {"SD3Transformer2DModel": ("transformer_blocks", "Pattern_1")}


def _cache_dit_blocks(denoiser: torch.nn.Module) -> Any:
    """The ``BlockAdapter`` cache-dit asks for ("please set BlockAdapter") where its registry has none."""
    from cache_dit import BlockAdapter, ForwardPattern
    from cache_dit.caching.block_adapters import BlockAdapterRegister

    known = _CACHE_DIT_BLOCKS.get(type(denoiser).__name__)
    if known is None or BlockAdapterRegister.is_supported(denoiser):
        return None
    stack, pattern = known
    return BlockAdapter(transformer=denoiser, blocks=getattr(denoiser, stack),
                        forward_pattern=getattr(ForwardPattern, pattern), check_forward_pattern=True)


# ---- diffusers hooks --------------------------------------------------------------------------------


def _pipeline_context(model: torch.nn.Module) -> Any:
    """The cache context the caller set around this denoiser call (``model.cache_context(...)``), or None."""
    from diffusers.hooks.hooks import HookRegistry, StateManager

    registry = HookRegistry.check_if_exists_or_initialize(model)
    for child in (registry, *registry._get_child_registries()):
        for hook in child.hooks.values():
            if hook._is_stateful:
                for attr in vars(hook).values():
                    if isinstance(attr, StateManager):
                        return attr._context
    return None


def _context_hook(model: torch.nn.Module) -> torch.utils.hooks.RemovableHandle:
    """Set a diffusers cache context before every denoiser call the caller set none for.

    The DiT, PixArt and SD pipelines never call ``cache_context`` (their models lack ``CacheMixin``), and
    the stateful hooks (First Block Cache, TaylorSeer, MagCache) refuse to run without one. CFG is batched
    in one call there, so one context name serves every call. Pipelines that call each CFG branch on its
    own (FLUX true CFG, Wan, Qwen-Image) set ``"cond"`` / ``"uncond"`` themselves: those are kept, so each
    branch has its own hook state (overriding them made both branches share one history).
    """
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    def pre(module: torch.nn.Module, args: tuple) -> None:
        if _pipeline_context(module) is None:
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


def peer_first_block_cache(target: PeerTarget, threshold: float = 0.05) -> Disable:
    """diffusers First Block Cache, ``threshold`` 0.05 (its default)."""
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
    from diffusers.hooks.first_block_cache import _FBC_BLOCK_HOOK, _FBC_LEADER_BLOCK_HOOK

    return _with_diffusers_hooks(
        target, lambda m: apply_first_block_cache(m, FirstBlockCacheConfig(threshold=threshold)),
        (_FBC_LEADER_BLOCK_HOOK, _FBC_BLOCK_HOOK), "First Block Cache",
    )


def peer_pab(target: PeerTarget, skip: int = 2, low: int = 100, high: int = 800) -> Disable:
    """diffusers Pyramid Attention Broadcast: self-attention every ``skip``-th call, t in (``low``, ``high``)."""
    from diffusers.hooks import PyramidAttentionBroadcastConfig, apply_pyramid_attention_broadcast
    from diffusers.hooks.pyramid_attention_broadcast import _PYRAMID_ATTENTION_BROADCAST_HOOK

    config = PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=skip, spatial_attention_timestep_skip_range=(low, high),
        current_timestep_callback=target.timestep,
    )
    return _with_diffusers_hooks(
        target, lambda m: apply_pyramid_attention_broadcast(m, config), (_PYRAMID_ATTENTION_BROADCAST_HOOK,), "PAB"
    )


def peer_taylorseer(target: PeerTarget, interval: int = 5, warmup: int = 3, order: int = 1) -> Disable:
    """diffusers TaylorSeer on attention and FFN outputs: full every ``interval`` steps (5) after ``warmup`` (3)
    full steps, Taylor ``order`` 1 (its defaults)."""
    from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache
    from diffusers.hooks.taylorseer_cache import _TAYLORSEER_CACHE_HOOK

    dtype = next(target.denoiser.parameters()).dtype
    config = TaylorSeerCacheConfig(cache_interval=interval, disable_cache_before_step=warmup, max_order=order,
                                   taylor_factors_dtype=dtype, cache_identifiers=TAYLORSEER_IDENTIFIERS)
    return _with_diffusers_hooks(
        target, lambda m: apply_taylorseer_cache(m, config), (_TAYLORSEER_CACHE_HOOK,), "TaylorSeer"
    )


def peer_faster_cache(target: PeerTarget, skip: int = 2, uncond_skip: int = 5) -> Disable:
    """diffusers FasterCache for images (``BCHW``): attention every ``skip``-th call (2), the unconditional
    branch every ``uncond_skip``-th (5), its defaults otherwise; the CFG split also covers the other inputs
    that carry both CFG halves (``class_labels`` of DiT, ``pooled_projections`` of SD3), as a user must add.

    FasterCache assumes the CFG batch is ``[uncond; cond]``; ``DiTPipeline`` orders it ``[cond; uncond]``,
    so there it approximates the conditional half (the PSNR shows it). Pipelines that call each CFG branch on
    its own (FLUX true CFG, Wan, Qwen-Image) run it as for a guidance-distilled model: attention skipping
    only, its unconditional-branch approximation needs the batched call; its state is not per cache
    context, so both branches share one attention history (as they share PAB's).
    """
    from diffusers.hooks import FasterCacheConfig, apply_faster_cache
    from diffusers.hooks.faster_cache import (
        _FASTER_CACHE_BLOCK_HOOK,
        _FASTER_CACHE_DENOISER_HOOK,
        _UNCOND_COND_INPUT_KWARGS_IDENTIFIERS,
    )

    config = FasterCacheConfig(
        spatial_attention_block_skip_range=skip, unconditional_batch_skip_range=uncond_skip,
        current_timestep_callback=target.timestep, tensor_format="BCHW", is_guidance_distilled=not target.cfg,
        _unconditional_conditional_input_kwargs_identifiers=[*_UNCOND_COND_INPUT_KWARGS_IDENTIFIERS, "class_labels",
                                                              "pooled_projections"],
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

        first: list[Any] = []

        def keep(state: Any, residual: torch.Tensor) -> None:  # the hook clears its list at the last step
            record(state, residual)
            if not first:
                first.append(state)
            if state is first[0]:  # per-branch calls: the first (cond) context's ratios, one per step
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


def peer_magcache(target: PeerTarget, threshold: float = 0.06, max_skip: int = 3, retention: float = 0.2) -> Disable:
    """diffusers MagCache (defaults ``threshold`` 0.06, ``max_skip`` K=3, ``retention`` 0.2), ratios from its
    calibration mode."""
    from diffusers.hooks import MagCacheConfig, apply_mag_cache
    from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK, _MAG_CACHE_LEADER_BLOCK_HOOK

    key = ("magcache", target.steps)
    if key not in target.memo:
        target.memo[key] = calibrate_mag_ratios(target)
    config = MagCacheConfig(threshold=threshold, max_skip_steps=max_skip, retention_ratio=retention,
                            mag_ratios=target.memo[key], num_inference_steps=target.steps)
    return _with_diffusers_hooks(
        target, lambda m: apply_mag_cache(m, config), (_MAG_CACHE_LEADER_BLOCK_HOOK, _MAG_CACHE_BLOCK_HOOK),
        "MagCache",
    )


#: peer name -> ``enable(target, **knobs)`` returning its ``disable``; the knobs are its keyword arguments.
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


def _knobs(name: str) -> dict[str, inspect.Parameter]:
    return dict(list(inspect.signature(PEERS[name]).parameters.items())[1:])


def peer_knobs(name: str) -> dict[str, Any]:
    """A peer's knobs and their defaults, e.g. ``{"interval": 5, "warmup": 3, "order": 1}`` for TaylorSeer."""
    return {k: p.default for k, p in _knobs(name).items()}


def parse_peer(spec: str) -> tuple[str, dict[str, Any]]:
    """``"peer:taylorseer:interval=3:order=2"`` -> ``("peer:taylorseer", {"interval": 3, "order": 2})``.

    A peer name, then ``:knob=value`` pairs (colons, so a comma-separated list of peers stays parseable).
    Values are parsed as the knob's default's type (a ``None`` default takes an integer). Raises
    ``ValueError`` naming the peer, the knob or the value and what is allowed.
    """
    parts = spec.split(":")
    name, pairs = ":".join(parts[:2]), parts[2:]
    if name not in PEERS:
        raise ValueError(f"peer {name!r} is unknown; allowed: {sorted(PEERS)}")
    allowed = _knobs(name)
    knobs: dict[str, Any] = {}
    for pair in pairs:
        key, eq, text = pair.partition("=")
        if not eq or key not in allowed:
            raise ValueError(f"{name} knob {pair!r} is invalid; allowed: KNOB=VALUE with KNOB in {list(allowed)}")
        default = allowed[key].default
        kind = int if default is None else type(default)
        try:
            knobs[key] = kind(text)
        except ValueError:
            raise ValueError(f"{name} knob {key}={text!r} is invalid; allowed: a {kind.__name__}") from None
    return name, knobs


def make_peer(spec: str) -> Callable[[PeerTarget], Disable]:
    """``enable(target)`` for a peer spec (see :func:`parse_peer`)."""
    name, knobs = parse_peer(spec)
    return lambda target: PEERS[name](target, **knobs)


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
