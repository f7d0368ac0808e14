"""Diffusion transformers: token-wise feature caching (ToCa), dual caching (DuCa) and FORA-like reuse.

Works on unmodified diffusers ``BasicTransformerBlock`` models: ``DiTTransformer2DModel`` (norm type
``ada_norm_zero``), ``PixArtTransformer2DModel`` (``ada_norm_single``, PixArt-alpha and -Sigma) and
``LatteTransformer3DModel`` (spatial ``transformer_blocks`` and ``temporal_transformer_blocks``).

Hooks sit on each block's ``attn1`` / ``attn2`` / ``ff`` and cache their *pre-gate* per-token output, so
the block's own gates and adaLN modulation always use the current timestep (as the authors' code does):

* **full** steps compute everything, store every module's output, record token scores and reset the
  staleness counters;
* **partial** (ToCa, DuCa "conservative") steps: self-attention returns its cached output (unless
  partial-query ``attn1`` is enabled); ``attn2`` and ``ff`` gather the ``k`` best-scoring rows of their
  *current* input, compute only those (cross-attention: those queries against the full text keys and
  values), scatter them into the cache and return the cache. ``k`` is fixed per (block, step);
* **aggressive** (DuCa) steps: a hook on every block passes its input through, except the last block,
  which returns its output from the previous computed step; the model's embeddings and final
  norm/projection still run with the current timestep.

Token scores come from projections the model computes anyway (``to_v`` for V-norm, ``to_q``/``to_k``
for the attention and cross-attention-entropy scores) through hooks on those ``Linear`` layers, so the
attention processor (fused SDPA, or any custom processor) is left alone. The token math is in
:mod:`tokencache.tokens`.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DiTTransformer2DModel, LatteTransformer3DModel, PixArtTransformer2DModel
from diffusers.models.attention import BasicTransformerBlock

from . import tokens as T
from .adapters import Family, Handle, register_family
from .config import DiTMethodConfig, DiTSpec
from .state import Cache, CallScopedHook, CallState
from .unet import SeededNoise


class StepContext:
    """Facts of the current call that every block hook needs, set by :class:`DenoiserHook`.

    Attributes:
        grid: ``(h, w)`` token grid of the latent (after patching).
        cfg: whether the batch is two classifier-free-guidance halves.
        last_block: name of the block whose output ends the backbone on this call.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.grid: tuple[int, int] | None = None
        self.cfg = False
        self.last_block: str | None = None


def infer_cfg(declared: bool | None, x: torch.Tensor) -> bool:
    """Whether the batch ``x`` is two CFG halves.

    The pipeline's ``do_classifier_free_guidance`` wins when the core knows it. DiT, PixArt and Latte
    pipelines do not expose it; all of them feed ``torch.cat([latents] * 2)`` under CFG, so otherwise a
    batch counts as CFG when it is even and its two halves are identical.
    """
    b = x.shape[0]
    if b % 2:
        return False
    if declared is not None:
        return bool(declared)
    return bool(torch.equal(x[: b // 2], x[b // 2 :]))


def _first(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_first(args: tuple, kwargs: dict, x: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (x, *args[1:]), dict(kwargs)
    return args, {**kwargs, "hidden_states": x}


class BlockState:
    """What one transformer block's hooks share: its caches, scores, counters and position.

    Args:
        name: block name inside the denoiser (e.g. ``"transformer_blocks.3"``).
        layer: index of the block in its stack; ``n_layers`` the stack's length.
        score: the token score this block uses (``"cross_entropy"`` falls back to ``"vnorm"`` in blocks
            without cross-attention).
    """

    def __init__(self, name: str, layer: int, n_layers: int, score: str) -> None:
        self.name, self.layer, self.n_layers, self.score = name, layer, n_layers, score
        self.cache = Cache()

    def layer_factor(self, weight: float) -> float:
        """``f_layer = 1 + w - 2 w l / (L - 1)``."""
        x = self.layer / (self.n_layers - 1) if self.n_layers > 1 else 0.0
        return 1.0 + weight - 2.0 * weight * x


class DenoiserHook(CallScopedHook):
    """Innermost hook on the denoiser: sets the step context and notes the model's input for MACs."""

    def __init__(self, state: CallState, ctx: StepContext, patch: int, lasts: tuple[str, str | None]) -> None:
        super().__init__()
        self.state, self.ctx, self.patch, self.lasts = state, ctx, patch, lasts

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        st, ctx = self.state, self.ctx
        if st.active:
            x = _first(args, kwargs)
            if st.step == 0 or ctx.grid is None:
                ctx.cfg = infer_cfg(st.cfg, x)
                ctx.grid = (x.shape[-2] // self.patch, x.shape[-1] // self.patch)
            spatial_last, temporal_last = self.lasts
            temporal = temporal_last is not None and kwargs.get("enable_temporal_attentions", True)
            ctx.last_block = temporal_last if temporal else spatial_last
            if st.book_wants(""):
                st.book_note("", args, kwargs)
        return self.fn_ref.original_forward(*args, **kwargs)


class BlockHook(CallScopedHook):
    """DuCa aggressive steps: pass the input through, or (last block) return the cached output."""

    def __init__(self, state: CallState, ctx: StepContext, block: BlockState) -> None:
        super().__init__()
        self.state, self.ctx, self.block = state, ctx, block

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        st = self.state
        if not st.active:
            return self.fn_ref.original_forward(*args, **kwargs)
        name, data = self.block.name, self.block.cache.data
        x = _first(args, kwargs)
        last = name == self.ctx.last_block
        if st.action.kind == "aggressive":
            if not last:
                st.record.skipped.append(name)
                return x
            prev = data.get("out")
            if prev is not None and prev.shape == x.shape:
                st.record.skipped.append(name)
                return prev
        if st.book_wants(name):
            st.book_note(name, args, kwargs)
        out = self.fn_ref.original_forward(*args, **kwargs)
        if last:
            data["out"] = out
        return out


class CaptureHook(CallScopedHook):
    """Keeps a projection's output (``to_q``/``to_k``/``to_v``) for the block's token score; no extra compute.

    Args:
        key: where to keep it in the block cache (``"v"`` is turned into the V-norm score right away).
        heads: attention heads of the parent attention module.
        full_only: capture on full steps only.
    """

    def __init__(self, state: CallState, block: BlockState, key: str, heads: int, full_only: bool) -> None:
        super().__init__()
        self.state, self.block, self.key, self.heads, self.full_only = state, block, key, heads, full_only

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        out = self.fn_ref.original_forward(*args, **kwargs)
        st = self.state
        if st.active and (st.action.kind == "full" or not self.full_only) and out.ndim == 3:
            if self.key == "v":
                self.block.cache.data["score"] = T.vnorm_score(out.detach(), self.heads)
            else:
                self.block.cache.data[self.key] = out.detach()
        return out


class TokenModuleHook(CallScopedHook):
    """Token-wise caching of one ``attn1`` / ``attn2`` / ``ff`` module (its pre-gate output per token).

    Args:
        state: the call state.
        ctx: the step context.
        block: the block's shared state.
        kind: ``"attn1"``, ``"attn2"`` or ``"ff"``.
        name: module name inside the denoiser.
        spec: the method's resolved settings.
        noise: tokencache's seeded generator (random scores).
        heads / scale: of the attention module (unused for ``ff``).
    """

    def __init__(
        self,
        state: CallState,
        ctx: StepContext,
        block: BlockState,
        kind: str,
        name: str,
        spec: DiTSpec,
        noise: SeededNoise,
        heads: int = 1,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.state, self.ctx, self.block, self.kind, self.name = state, ctx, block, kind, name
        self.spec, self.noise, self.heads, self.scale = spec, noise, heads, scale
        self.factor = block.layer_factor(spec.layer_weight) * spec.module_weight(kind)
        self.partial = kind in spec.partial_modules

    # ---- helpers --------------------------------------------------------------------------------
    def fresh_tokens(self, ratio: float, n: int) -> int:
        """``k`` for a partial step of step ratio ``ratio`` (``R * f_step``) and ``n`` tokens."""
        return T.fresh_count(ratio * self.factor, n) if self.partial else 0

    def _mask(self, kwargs: dict) -> torch.Tensor | None:
        m = kwargs.get("attention_mask")
        return m if isinstance(m, torch.Tensor) else None

    def _entropy(self, kwargs: dict, rows: torch.Tensor | None = None) -> None:
        """(attn2, cross_entropy) turn the captured q/k into entropies: all rows, or the fresh ``rows``."""
        data = self.block.cache.data
        q, k = data.pop("q", None), data.pop("k", None)
        if q is None or k is None:
            return
        bias = self._mask(kwargs)
        if bias is not None and (bias.shape[0] != q.shape[0] or bias.shape[-1] != k.shape[1]):
            bias = None
        if bias is not None and bias.ndim == 2:  # a keep/drop mask rather than an additive bias
            bias = (1.0 - bias.float()) * -10000.0
        ent = T.cross_attention_entropy(q, k, self.heads, self.scale, bias)
        self.state.record.overhead_macs += float(q.shape[0] * q.shape[1] * k.shape[1] * q.shape[2])
        if rows is None:
            data["entropy"] = ent
        elif "entropy" in data and data["entropy"].shape[0] == ent.shape[0]:
            data["entropy"].scatter_(1, rows, ent)

    def _attention_score(self) -> None:
        data = self.block.cache.data
        q, k = data.pop("q", None), data.pop("k", None)
        if q is None or k is None:
            return
        data["score"] = T.attention_received_score(q, k, self.heads, self.scale)
        self.state.record.overhead_macs += float(q.shape[0] * q.shape[1] * k.shape[1] * q.shape[2])

    def _base_score(self, b: int, n: int, device: torch.device) -> torch.Tensor:
        data, score = self.block.cache.data, self.block.score
        if score == "random":
            return torch.rand(b, n, generator=self.noise.get(device), device=device)
        s = T.entropy_score(data["entropy"]) if score == "cross_entropy" and "entropy" in data else data.get("score")
        if s is None or tuple(s.shape) != (b, n):
            return torch.zeros(b, n, device=device)
        return s

    def select(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Indices ``(B, k)`` of the tokens to recompute; updates the staleness counters."""
        b, n = x.shape[:2]
        spec, ctx, data = self.spec, self.ctx, self.block.cache.data
        score = self._base_score(b, n, x.device)
        if ctx.cfg and spec.shares_cfg and b % 2 == 0:
            score = T.share_cfg_halves(score)
        stale_key = "stale." + self.kind
        stale = data.get(stale_key)
        if stale is None or tuple(stale.shape) != (b, n):
            stale = data[stale_key] = torch.zeros(b, n, dtype=torch.int32, device=x.device)
        total = score + T.staleness_term(stale, spec.staleness_weight, spec.staleness_norm)
        if spec.spatial_bonus > 0 and ctx.grid is not None and ctx.grid[0] * ctx.grid[1] == n:
            total = T.spatial_bonus(total, ctx.grid[0], ctx.grid[1], spec.spatial_grid, spec.spatial_bonus)
        idx = T.select_fresh(total, k)
        stale += 1
        stale.scatter_(1, idx, 0)
        return idx

    # ---- forward --------------------------------------------------------------------------------
    def _full(self, x: torch.Tensor, args: tuple, kwargs: dict) -> Any:
        st, data = self.state, self.block.cache.data
        if st.book_wants(self.name):
            st.book_note(self.name, args, kwargs)
        out = self.fn_ref.original_forward(*args, **kwargs)
        st.record.computed_full.append(self.name)
        if isinstance(out, torch.Tensor) and out.shape[:2] == x.shape[:2]:
            data[self.kind] = out
            data.pop("stale." + self.kind, None)  # every token is fresh
        if self.kind == "attn1" and self.block.score == "attention":
            self._attention_score()
        elif self.kind == "attn2" and self.block.score == "cross_entropy":
            self._entropy(kwargs)
        return out

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        st = self.state
        if not st.active:
            return self.fn_ref.original_forward(*args, **kwargs)
        x = _first(args, kwargs)
        cached = self.block.cache.data.get(self.kind)
        if st.action.kind == "full" or cached is None or cached.shape[:2] != x.shape[:2]:
            return self._full(x, args, kwargs)
        n = x.shape[1]
        k = self.fresh_tokens(st.action.ratio, n)
        if k >= n:
            return self._full(x, args, kwargs)
        if k == 0:
            st.record.skipped.append(self.name)
            return cached
        idx = self.select(x, k)
        x_k = T.gather_tokens(x, idx)
        args_k, kwargs_k = _with_first(args, kwargs, x_k)
        if self.kind == "attn1":  # partial-query self-attention: selected queries, every key and value
            kwargs_k["encoder_hidden_states"] = x
        if st.book_wants(self.name, k):
            st.book_note(self.name, args_k, kwargs_k, k)
        y_k = self.fn_ref.original_forward(*args_k, **kwargs_k)
        T.scatter_tokens(cached, idx, y_k)
        if self.kind == "attn2" and self.block.score == "cross_entropy":
            self._entropy(kwargs, idx)
        st.record.partial[self.name] = (k, n)
        return cached


# ---- structure and installation ---------------------------------------------------------------


def block_stacks(model: torch.nn.Module) -> list[tuple[str, torch.nn.ModuleList]]:
    """``(attribute, blocks)`` of the model's transformer block stacks, in execution order of their last block."""
    stacks = [("transformer_blocks", model.transformer_blocks)]
    temporal = getattr(model, "temporal_transformer_blocks", None)
    if temporal is not None and len(temporal):
        stacks.append(("temporal_transformer_blocks", temporal))
    for attr, blocks in stacks:
        for i, blk in enumerate(blocks):
            if not isinstance(blk, BasicTransformerBlock):
                raise TypeError(
                    f"{type(model).__name__}.{attr}.{i} is a {type(blk).__name__}; tokencache's transformer "
                    "methods support BasicTransformerBlock blocks only"
                )
    return stacks


#: score -> the projections it is computed from: (attention module, projection, on full steps only).
_CAPTURES = {
    "vnorm": (("attn1", "v", True),),
    "attention": (("attn1", "q", True), ("attn1", "k", True)),
    "cross_entropy": (("attn2", "q", False), ("attn2", "k", False)),
}


def install_dit(handle: Handle) -> None:
    """Register the ToCa / DuCa / FORA hooks on a DiT, PixArt or Latte transformer."""
    model, cfg, st = handle.denoiser, handle.config, handle.state
    if not isinstance(cfg, DiTMethodConfig):
        raise TypeError(f"{type(cfg).__name__} is not a transformer method config")
    spec = cfg.dit_spec()
    stacks = block_stacks(model)
    has_cross = any(getattr(b, "attn2", None) is not None for _, blocks in stacks for b in blocks)
    if spec.score == "cross_entropy" and not has_cross:
        raise ValueError(
            f"{type(cfg).__name__}.score='cross_entropy' is invalid for {type(model).__name__}: its blocks have no "
            "cross-attention; allowed: 'vnorm', 'attention', 'random'"
        )
    ctx, noise = StepContext(), SeededNoise(spec.seed)
    st.resettables += [ctx, noise]
    scoring = bool(spec.partial_modules)
    for attr, blocks in stacks:
        for layer, blk in enumerate(blocks):
            name = f"{attr}.{layer}"
            score = spec.score
            if score == "cross_entropy" and getattr(blk, "attn2", None) is None:
                score = "vnorm"
            bstate = BlockState(name, layer, len(blocks), score)
            st.resettables.append(bstate.cache)
            handle.register(blk, BlockHook(st, ctx, bstate), "dit_block")
            for kind in ("attn1", "attn2", "ff"):
                mod = getattr(blk, kind, None)
                if mod is None:
                    continue
                heads, scale = getattr(mod, "heads", 1), float(getattr(mod, "scale", 1.0))
                hook = TokenModuleHook(st, ctx, bstate, kind, f"{name}.{kind}", spec, noise, heads, scale)
                handle.register(mod, hook, "dit_module")
                handle.token_modules[f"{name}.{kind}"] = kind
            if not scoring:
                continue
            # The projections are leaf layers that LoRA loaded after apply wraps: the hooks follow their paths.
            for attn, key, full_only in _CAPTURES.get(score, ()):
                mod, path = getattr(blk, attn), f"{name}.{attn}.to_{key}"
                hook = CaptureHook(st, bstate, key, mod.heads, full_only)
                handle.register(getattr(mod, "to_" + key), hook, "dit_capture", follow=path)
    spatial_last = f"{stacks[0][0]}.{len(stacks[0][1]) - 1}"
    temporal_last = f"{stacks[1][0]}.{len(stacks[1][1]) - 1}" if len(stacks) > 1 else None
    patch = int(getattr(model.config, "patch_size", None) or 1)
    handle.register(model, DenoiserHook(st, ctx, patch, (spatial_last, temporal_last)), "dit")


DIT_CLASSES = (DiTTransformer2DModel, PixArtTransformer2DModel, LatteTransformer3DModel)

register_family(Family("dit", DIT_CLASSES, "transformer", install_dit))
