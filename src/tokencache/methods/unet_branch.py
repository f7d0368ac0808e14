"""UNet branch skipping and pruned self-attention: the hooks DaTo, DeepCache-like and ToMe-like share.

On a partial step of depth ``d`` the units ``< d`` of the down and up paths run (see
:mod:`tokencache.models.sd_unet` for the unit indexing); deeper units, and the mid block, return the
output their approximator produces from the last full step (``reuse``: the cached output itself).
The skip connections of the units that run are fresh, and so are ControlNet residuals, which the
UNet adds outside them. A ``"reuse"`` step returns the previous noise prediction whole.

Pruning wraps ``attn1`` of the transformer blocks at the pruned resolution levels: the attention module
(and whatever processor it has, IP-Adapter included) sees only the kept tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..core import tokens as T
from ..core.config import BaseConfig, CachingConfig, _fail
from ..core.hooks import CallScopedHook, Handle, OutputSlot, outside_graph
from ..core.rng import SeededNoise
from ..core.state import ContextStates


@dataclass(frozen=True)
class PruneSpec:
    """How a UNet method prunes self-attention tokens (resolved from a config)."""

    patch_size: int = 2
    levels: tuple[int, ...] | None = None
    base_selection: str = "diffscore"
    align_cfg: bool = True
    score_weight: float = 1.0
    score_noise: float = 0.1
    random_sign: bool = False
    recovery: str = "base"
    seed: int = 0


def _levels_ok(cls_name: str, levels: Any) -> None:
    if levels is None:
        return
    if not isinstance(levels, (list, tuple)) or not levels or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in levels
    ):
        _fail(cls_name, "prune_levels", levels, "None (auto) or a non-empty list of UNet level indices >= 0")


class UNetMethodConfig(CachingConfig):
    """A UNet method: a per-step plan of branch depths and pruning ratios, and a pruning spec."""

    structures = ("unet",)

    def prune_spec(self) -> PruneSpec:
        return PruneSpec()

    @property
    def max_depth(self) -> int:
        """Deepest partial branch depth the plan uses (0 if none); checked against the model."""
        return 0

    def check_model(self, adapter: Any, model: torch.nn.Module | None = None) -> None:
        if model is None:
            return
        _down, _up, n_in = adapter.facts["units"](model)
        if self.max_depth > n_in:
            raise ValueError(
                f"{type(self).__name__} branch depth {self.max_depth} is invalid for this UNet; allowed: 1..{n_in}"
            )

    def install(self, handle: Handle, adapter: Any) -> None:
        install_unet_branch(handle, adapter, self)


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

    def nbytes(self) -> int:
        return 0  # the noise predictions are the pipeline's own tensors


def _sample_of(out: Any) -> torch.Tensor:
    return out.sample if hasattr(out, "sample") else out[0]


#: per-context object keys
_TRACKER, _OUTPUT = "unet.diffscore", "unet.output"


class OutputReuseHook(CallScopedHook):
    """On "reuse" steps produce the noise prediction from the slot; on other steps feed the slot."""

    def __init__(self, contexts: ContextStates, config: BaseConfig) -> None:
        super().__init__(contexts)
        self.config = config

    @outside_graph
    def _reused(self, args: tuple, kwargs: dict) -> Any:
        st = self.st
        slot = st.get(_OUTPUT, lambda: OutputSlot(self.config.approximator))
        if st.action.kind == "reuse" and slot.ready:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            sample, as_tuple = slot.predict(float(st.step)), slot.as_tuple
            return (sample.clone(),) if as_tuple else UNet2DConditionOutput(sample=sample.clone())
        return None

    @outside_graph
    def _keep(self, out: Any) -> None:
        st = self.st
        slot = st.get(_OUTPUT, lambda: OutputSlot(self.config.approximator))
        sample = _sample_of(out)
        slot.update(float(st.step), sample)
        slot.as_tuple = isinstance(out, tuple)
        st.get(_TRACKER, DiffScoreTracker).push(sample)

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        prev = self._reused(args, kwargs)
        if prev is not None:
            return prev
        out = self.fn_ref.original_forward(*args, **kwargs)
        self._keep(out)
        return out


class BranchSkipHook(CallScopedHook):
    """Produce a unit's output from its slot when a partial step's branch is shallower than the unit.

    Args:
        contexts: the per-context states.
        name: module name inside the UNet (for records and MAC counting).
        index: the unit index; the module is skipped on partial steps of depth ``<= index``.
        config: the method config (its approximator fills the slot).
    """

    def __init__(self, contexts: ContextStates, name: str, index: int, config: BaseConfig) -> None:
        super().__init__(contexts)
        self.name, self.index, self.config = name, index, config
        self._key = "skip." + name

    @outside_graph
    def _skipped(self) -> Any:
        st = self.st
        a = st.action
        if a.kind == "partial" and self.index >= a.depth:
            slot = st.objects.get(self._key)
            if slot is not None and slot.ready:
                st.record.skipped.append(self.name)
                return slot.predict(float(st.step))
        return None

    @outside_graph
    def _store(self, out: Any, args: tuple, kwargs: dict) -> None:
        st = self.st
        if st.action.kind == "full":
            st.get(self._key, lambda: OutputSlot(self.config.approximator)).update(float(st.step), out)
            if st.book_wants(self.name):
                st.book_note(self.name, args, kwargs)

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        cached = self._skipped()
        if cached is not None:
            return cached
        out = self.fn_ref.original_forward(*args, **kwargs)
        self._store(out, args, kwargs)
        return out


class PrunedSelfAttentionHook(CallScopedHook):
    """Run self-attention on the kept tokens only and copy outputs to the pruned tokens.

    Base tokens (one per ``s x s`` patch) come from the DiffScore (or at random for ToMe-like
    pruning); the ``r*N`` non-base tokens most similar to their nearest base token are pruned.
    Queries, keys and values all come from the kept tokens.

    Args:
        contexts: the per-context states.
        name: module name inside the UNet.
        grid: ``level -> (h, w)`` of the token grid at this module's level for the call's input.
        spec: the pruning settings.
    """

    def __init__(self, contexts: ContextStates, name: str, grid: Any, spec: PruneSpec) -> None:
        super().__init__(contexts)
        self.name, self.grid, self.spec = name, grid, spec

    def _base(self, st: Any, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        spec, b, n = self.spec, x.shape[0], x.shape[1]
        gen = st.get("unet.noise", lambda: SeededNoise(spec.seed)).get(x.device)
        noise = torch.randn(b, n, generator=gen, device=x.device)
        score = None if spec.base_selection == "random" else st.get(_TRACKER, DiffScoreTracker).pooled(h, w)
        if score is None or score.shape[0] != b:
            score = noise
        else:
            if spec.random_sign:  # a sign flip with probability 0.5, drawn on the device (no host sync)
                flip = torch.rand(1, generator=gen, device=x.device) < 0.5
                score = torch.where(flip, -score, score)
            score = spec.score_weight * score + spec.score_noise * noise
        base = T.patch_argmax(score, h, w, spec.patch_size)
        if spec.align_cfg and st.cfg_halves(b):
            base[b // 2 :] = base[: b // 2]
        return base

    @outside_graph
    def _plan(self, hidden_states: torch.Tensor, args: tuple, kwargs: dict) -> Any:
        st = self.st
        is_self = (args[0] if args else kwargs.get("encoder_hidden_states")) is None
        mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
        n = hidden_states.shape[1]
        num_prune = int(n * st.action.ratio)
        if num_prune == 0 or not is_self or mask is not None or hidden_states.ndim != 3:
            st.record.computed_full.append(self.name)
            return None
        h, w = self.grid(st.key[0])
        if h * w != n:
            raise RuntimeError(f"{self.name}: {n} tokens do not match the {h}x{w} grid of its level")
        base = self._base(st, hidden_states, h, w)
        kept, src, macs = T.select_pruned(hidden_states, base, num_prune, self.spec.recovery)
        rec = st.record
        rec.partial[self.name] = (kept.shape[1], n)
        rec.overhead_macs += macs
        if st.book_wants(self.name):
            st.book_note(self.name, (hidden_states, *args), kwargs)
        if st.book_wants(self.name, kept.shape[1]):
            b, _, c = hidden_states.shape
            x_meta = torch.empty((b, kept.shape[1], c), dtype=hidden_states.dtype, device="meta")
            st.book_note(self.name, (x_meta, *args), kwargs, kept.shape[1])
        return kept, src

    def new_forward(self, module: torch.nn.Module, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        plan = self._plan(hidden_states, args, kwargs)
        if plan is None:
            return self.fn_ref.original_forward(hidden_states, *args, **kwargs)
        kept, src = plan
        y_kept = self.fn_ref.original_forward(T.gather_tokens(hidden_states, kept), *args, **kwargs)
        return T.gather_tokens(y_kept, src)


def install_unet_branch(handle: Handle, adapter: Any, cfg: UNetMethodConfig) -> None:
    """Register the branch-skipping, pruning and output-reuse hooks of a UNet method."""
    unet, contexts = handle.denoiser, handle.contexts
    units = adapter.facts["units"]
    down, up, n_in = units(unet)
    cfg.check_model(adapter, unet)
    depths = {a.depth for a in cfg.plan(max(len(getattr(cfg, "cache_plan", [])), 50)) if a.kind == "partial"}
    if depths:
        dmin = min(depths)
        blocks: dict[str, list[int]] = {}
        for idx, names in down + up:
            for nm in names:
                blocks.setdefault(".".join(nm.split(".")[:2]), []).append(idx)
                if idx >= dmin:
                    handle.register(unet.get_submodule(nm), BranchSkipHook(contexts, nm, idx, cfg), "skip")
        for block, idxs in blocks.items():
            if min(idxs) >= dmin:
                handle.register(unet.get_submodule(block), BranchSkipHook(contexts, block, min(idxs), cfg), "skip")
        if unet.mid_block is not None:
            handle.register(unet.mid_block, BranchSkipHook(contexts, "mid_block", n_in, cfg), "skip")

    spec = cfg.prune_spec()
    levels = spec.levels if spec.levels is not None else adapter.facts["auto_prune_levels"](unet)
    level_grid = adapter.facts["level_grid"]
    for name, lvl in adapter.facts["self_attention_modules"](unet, tuple(levels)):

        def grid(shape: tuple, lvl: int = lvl) -> tuple[int, int]:
            return level_grid(shape, lvl)

        handle.register(unet.get_submodule(name), PrunedSelfAttentionHook(contexts, name, grid, spec), "prune")
        handle.token_modules[name] = "attn1"

    handle.register(unet, OutputReuseHook(contexts, cfg), "reuse")
