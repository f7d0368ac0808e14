"""Stable Diffusion UNets: step-wise branch caching and pruned self-attention (DaTo, DeepCache, ToMe).

The UNet is cut into *units* in execution order, as the DaTo/DeepCache authors index the ldm UNet:
input unit 0 is ``conv_in``, then every (resnet, attention) layer and every downsampler of the down
path; output unit ``j`` counts the (resnet, attention) layers of the up path from the *end* (``j = 0``
is the last layer). A partial step of depth ``d`` runs input units ``< d`` and output units ``< d``;
deeper units, and the mid block, return the outputs cached at the last full step. The skip connections
of the units that run are fresh, and so are ControlNet residuals, which the UNet adds outside them.

Pruning wraps ``attn1`` of the transformer blocks at the pruned resolution levels: the attention module
(and whatever processor it has, IP-Adapter included) sees only the kept tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from . import tokens as T
from .adapters import Family, Handle, register_family
from .config import PruneSpec, UNetMethodConfig
from .state import Cache, CallScopedHook, CallState


class SeededNoise:
    """tokencache's own random generator, re-seeded at the start of every call (never the user's)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._gen: torch.Generator | None = None

    def clear(self) -> None:
        self._gen = None

    def get(self, device: torch.device) -> torch.Generator:
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device).manual_seed(self.seed)
        return self._gen


class DiffScoreTracker:
    """The last two computed noise predictions, and DaTo's DiffScore pooled to a token grid.

    After a whole-output reuse step nothing new is pushed, so the last valid score stays in use;
    before two outputs exist (the first two steps) there is no score and selection is noise only.
    """

    def __init__(self) -> None:
        self.prev: torch.Tensor | None = None
        self.prev2: torch.Tensor | None = None
        self._pooled: dict[tuple[int, int], torch.Tensor] = {}

    def clear(self) -> None:
        self.prev = self.prev2 = None
        self._pooled = {}

    def push(self, eps: torch.Tensor) -> None:
        self.prev2, self.prev = self.prev, eps.detach()
        self._pooled = {}

    def pooled(self, h: int, w: int) -> torch.Tensor | None:
        """Per-sample z-scored DiffScore on an ``h x w`` grid, ``(B, h*w)``; None if not available."""
        if self.prev is None or self.prev2 is None:
            return None
        if (h, w) not in self._pooled:
            self._pooled[(h, w)] = T.zscore(T.pool_to_grid(T.diff_score(self.prev, self.prev2), h, w))
        return self._pooled[(h, w)]


def _sample_of(out: Any) -> torch.Tensor:
    return out.sample if hasattr(out, "sample") else out[0]


class OutputReuseHook(CallScopedHook):
    """On "reuse" steps return the previous noise prediction; on other steps remember it."""

    def __init__(self, state: CallState, tracker: DiffScoreTracker) -> None:
        super().__init__()
        self.state, self.tracker = state, tracker
        self.cache = Cache()
        state.resettables.append(self.cache)

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        st = self.state
        if st.action.kind == "reuse" and "out" in self.cache.data:
            prev = self.cache.data["out"]
            if isinstance(prev, tuple):
                return (prev[0].clone(),)
            return UNet2DConditionOutput(sample=prev.sample.clone())
        if st.book_wants(""):
            st.book_note("", args, kwargs)
        out = self.fn_ref.original_forward(*args, **kwargs)
        self.cache.data["out"] = out
        self.tracker.push(_sample_of(out))
        return out


class BranchSkipHook(CallScopedHook):
    """Return the output cached at the last full step when a partial step's branch is shallower.

    Args:
        state: the call state.
        name: module name inside the UNet (for records and MAC counting).
        index: the unit index; the module is skipped on partial steps of depth ``<= index``.
    """

    def __init__(self, state: CallState, name: str, index: int) -> None:
        super().__init__()
        self.state, self.name, self.index = state, name, index
        self.cache = Cache()
        state.resettables.append(self.cache)

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        st = self.state
        a = st.action
        if a.kind == "partial" and self.index >= a.depth and "out" in self.cache.data:
            st.record.skipped.append(self.name)
            return self.cache.data["out"]
        out = self.fn_ref.original_forward(*args, **kwargs)
        if a.kind == "full":
            self.cache.data["out"] = out
            if st.book_wants(self.name):
                st.book_note(self.name, args, kwargs)
        return out


class PrunedSelfAttentionHook(CallScopedHook):
    """Run self-attention on the kept tokens only and copy outputs to the pruned tokens.

    Base tokens (one per ``s x s`` patch) come from the DiffScore (or at random for ToMe-like
    pruning); the ``r*N`` non-base tokens most similar to their nearest base token are pruned.
    Queries, keys and values all come from the kept tokens.
    """

    def __init__(
        self, state: CallState, name: str, level: int, spec: PruneSpec, tracker: DiffScoreTracker, noise: SeededNoise
    ) -> None:
        super().__init__()
        self.state, self.name, self.level, self.spec = state, name, level, spec
        self.tracker, self.noise = tracker, noise

    def _grid(self, n: int) -> tuple[int, int]:
        h, w = self.state.key[0][-2:]
        for _ in range(self.level):
            h, w = (h + 1) // 2, (w + 1) // 2
        if h * w != n:
            raise RuntimeError(f"{self.name}: {n} tokens do not match the {h}x{w} grid of level {self.level}")
        return h, w

    def _base(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        spec, b, n = self.spec, x.shape[0], x.shape[1]
        gen = self.noise.get(x.device)
        noise = torch.randn(b, n, generator=gen, device=x.device)
        score = None if spec.base_selection == "random" else self.tracker.pooled(h, w)
        if score is None or score.shape[0] != b:
            score = noise
        else:
            sign = -1.0 if spec.random_sign and torch.rand(1, generator=gen, device=x.device).item() < 0.5 else 1.0
            score = sign * spec.score_weight * score + spec.score_noise * noise
        base = T.patch_argmax(score, h, w, spec.patch_size)
        if spec.align_cfg and self.state.cfg_halves(b):
            base[b // 2 :] = base[: b // 2]
        return base

    def new_forward(self, module: torch.nn.Module, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        st = self.state
        ratio = st.action.ratio
        is_self = (args[0] if args else kwargs.get("encoder_hidden_states")) is None
        mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
        n = hidden_states.shape[1]
        num_prune = int(n * ratio)
        if num_prune == 0 or not is_self or mask is not None or hidden_states.ndim != 3:
            st.record.computed_full.append(self.name)
            return self.fn_ref.original_forward(hidden_states, *args, **kwargs)
        h, w = self._grid(n)
        base = self._base(hidden_states, h, w)
        kept, src, macs = T.select_pruned(hidden_states, base, num_prune, self.spec.recovery)
        x_kept = T.gather_tokens(hidden_states, kept)
        y_kept = self.fn_ref.original_forward(x_kept, *args, **kwargs)
        rec = st.record
        rec.partial[self.name] = (x_kept.shape[1], n)
        rec.overhead_macs += macs
        if st.book_wants(self.name):
            st.book_note(self.name, (hidden_states, *args), kwargs)
        if st.book_wants(self.name, x_kept.shape[1]):
            st.book_note(self.name, (x_kept, *args), kwargs, x_kept.shape[1])
        return T.gather_tokens(y_kept, src)


# ---- structure of a UNet ----------------------------------------------------------------------


def unet_units(unet: UNet2DConditionModel) -> tuple[list[tuple[int, list[str]]], list[tuple[int, list[str]]], int]:
    """Units of the down and up paths.

    Returns:
        ``(down, up, n_in)``: ``down`` is a list of ``(index, module_names)`` with index 1.. (0 is
        conv_in); ``up`` a list of ``(j, module_names)`` with ``j`` counted from the last layer;
        ``n_in`` the number of input units including conv_in.
    """
    down: list[tuple[int, list[str]]] = []
    i = 1
    for b, block in enumerate(unet.down_blocks):
        atts = getattr(block, "attentions", None)
        for li in range(len(block.resnets)):
            names = [f"down_blocks.{b}.resnets.{li}"]
            if atts is not None and li < len(atts):
                names.append(f"down_blocks.{b}.attentions.{li}")
            down.append((i, names))
            i += 1
        if getattr(block, "downsamplers", None) is not None:
            down.append((i, [f"down_blocks.{b}.downsamplers.{k}" for k in range(len(block.downsamplers))]))
            i += 1
    layers: list[list[str]] = []
    for b, block in enumerate(unet.up_blocks):
        atts = getattr(block, "attentions", None)
        for li in range(len(block.resnets)):
            names = [f"up_blocks.{b}.resnets.{li}"]
            if atts is not None and li < len(atts):
                names.append(f"up_blocks.{b}.attentions.{li}")
            layers.append(names)
    up = [(len(layers) - 1 - k, names) for k, names in enumerate(layers)]
    return down, up, i


def auto_prune_levels(unet: UNet2DConditionModel) -> tuple[int, ...]:
    """The highest-resolution level with attention (SD 1.x/2.x: 0; SDXL: 1)."""
    for b, block in enumerate(unet.down_blocks):
        if getattr(block, "attentions", None):
            return (b,)
    return ()


def self_attention_modules(unet: UNet2DConditionModel, levels: tuple[int, ...]) -> list[tuple[str, int]]:
    """``(name, level)`` of every ``attn1`` in the transformer blocks of the given levels."""
    n = len(unet.down_blocks)
    prefixes: list[tuple[str, int]] = []
    for lvl in levels:
        if lvl >= n:
            raise ValueError(f"prune_levels value {lvl} is invalid for this UNet; allowed: 0..{n - 1}")
        prefixes += [(f"down_blocks.{lvl}.", lvl), (f"up_blocks.{n - 1 - lvl}.", lvl)]
        if lvl == n - 1:
            prefixes.append(("mid_block.", lvl))
    out = []
    for name, _ in unet.named_modules():
        if name.endswith(".attn1") and ".transformer_blocks." in name:
            for pre, lvl in prefixes:
                if name.startswith(pre):
                    out.append((name, lvl))
    return out


def install_unet(handle: Handle) -> None:
    """Register the UNet hooks for a DaTo / DeepCache / ToMe config."""
    unet, cfg, st = handle.denoiser, handle.config, handle.state
    assert isinstance(cfg, UNetMethodConfig)
    down, up, n_in = unet_units(unet)
    if cfg.max_depth > n_in:
        raise ValueError(
            f"{type(cfg).__name__} branch depth {cfg.max_depth} is invalid for this UNet; allowed: 1..{n_in}"
        )
    tracker, noise = DiffScoreTracker(), SeededNoise(cfg.prune_spec().seed)
    st.resettables += [tracker, noise]

    depths = {a.depth for a in cfg.unet_plan(max(len(getattr(cfg, "cache_plan", [])), 50)) if a.kind == "partial"}
    if depths:
        dmin = min(depths)
        blocks: dict[str, list[int]] = {}
        for idx, names in down + up:
            for nm in names:
                blocks.setdefault(".".join(nm.split(".")[:2]), []).append(idx)
                if idx >= dmin:
                    handle.register(unet.get_submodule(nm), BranchSkipHook(st, nm, idx), "skip")
        for block, idxs in blocks.items():
            if min(idxs) >= dmin:
                handle.register(unet.get_submodule(block), BranchSkipHook(st, block, min(idxs)), "skip")
        if unet.mid_block is not None:
            handle.register(unet.mid_block, BranchSkipHook(st, "mid_block", n_in), "skip")

    spec = cfg.prune_spec()
    levels = spec.levels if spec.levels is not None else auto_prune_levels(unet)
    for name, lvl in self_attention_modules(unet, tuple(levels)):
        hook = PrunedSelfAttentionHook(st, name, lvl, spec, tracker, noise)
        handle.register(unet.get_submodule(name), hook, "prune")
        handle.token_modules[name] = "attn1"

    handle.register(unet, OutputReuseHook(st, tracker), "reuse")


register_family(Family("sd-unet", (UNet2DConditionModel,), "unet", install_unet))
