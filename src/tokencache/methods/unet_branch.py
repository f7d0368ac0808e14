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
from ..core.hooks import OFF, CallScopedHook, Handle, Now, OutputSlot, StepCall
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

    def prepare(self, st: Any, call: StepCall) -> None:
        slot = st.objects.get(_OUTPUT)
        if st.action.kind == "reuse" and slot is not None and slot.ready:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            sample = slot.predict(st.x).clone()
            self.now = Now("reuse", out=(sample,) if slot.as_tuple else UNet2DConditionOutput(sample=sample))
            return
        self.now = Now("keep", out=None)

    def finish(self, st: Any) -> None:
        now = self.now
        if now.mode != "keep" or now.out is None:
            return
        slot = st.get(_OUTPUT, lambda: OutputSlot(self.config.approximator))
        sample = _sample_of(now.out)
        slot.update(st.x, sample)
        slot.as_tuple = isinstance(now.out, tuple)
        st.get(_TRACKER, DiffScoreTracker).push(sample)

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        now = self.now
        if now.mode == "reuse":
            return now.out
        out = self.fn_ref.original_forward(*args, **kwargs)
        if now.mode == "keep":
            now.out = out
        return out


class BranchSkipHook(CallScopedHook):
    """Produce a unit's output from its slot when a partial step's branch is shallower than the unit.

    Modes: ``"skip"`` (the approximator's output), ``"keep"`` (a full step: run and keep the output).

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
        #: the branch-skip hooks of the blocks around this unit (set by the installer).
        self.enclosing: list[BranchSkipHook] = []

    def skips(self, st: Any) -> bool:
        """Whether this step produces the unit's output from its slot (no side effects)."""
        a = st.action
        if a.kind != "partial" or self.index < a.depth:
            return False
        slot = st.objects.get(self._key)
        return slot is not None and slot.ready

    def prepare(self, st: Any, call: StepCall) -> None:
        if any(h.skips(st) for h in self.enclosing):
            self.now = OFF  # the block around it is skipped: this unit does not run
            return
        if self.skips(st):
            st.record.skipped.append(self.name)
            self.now = Now("skip", out=st.objects[self._key].predict(st.x))
            return
        self.now = Now("keep", out=None) if st.action.kind == "full" else OFF

    def finish(self, st: Any) -> None:
        now = self.now
        if now.mode == "keep" and now.out is not None:
            st.get(self._key, lambda: OutputSlot(self.config.approximator)).update(st.x, now.out)

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        now = self.now
        if now.mode == "skip":
            return now.out
        out = self.fn_ref.original_forward(*args, **kwargs)
        if now.mode == "keep":
            now.out = out
        return out


class PrunedSelfAttentionHook(CallScopedHook):
    """Run self-attention on the kept tokens only and copy outputs to the pruned tokens.

    Base tokens (one per ``s x s`` patch) come from the DiffScore (or at random for ToMe-like
    pruning), chosen before the call; the ``r*N`` non-base tokens most similar to their nearest base
    token are pruned. Queries, keys and values all come from the kept tokens.

    Args:
        contexts: the per-context states.
        name: module name inside the UNet.
        grid: ``level -> (h, w)`` of the token grid at this module's level for the call's input.
        spec: the pruning settings.
    """

    def __init__(self, contexts: ContextStates, name: str, grid: Any, spec: PruneSpec) -> None:
        super().__init__(contexts)
        self.name, self.grid, self.spec = name, grid, spec
        #: the branch-skip hooks of the units around this module (set by the installer; prepared first).
        self.enclosing: list[BranchSkipHook] = []

    def _base(self, st: Any, b: int, n: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        spec = self.spec
        gen = st.get("unet.noise", lambda: SeededNoise(spec.seed)).get(device)
        noise = torch.randn(b, n, generator=gen, device=device)
        score = None if spec.base_selection == "random" else st.get(_TRACKER, DiffScoreTracker).pooled(h, w)
        if score is None or score.shape[0] != b:
            score = noise
        else:
            if spec.random_sign:  # a sign flip with probability 0.5, drawn on the device (no host sync)
                flip = torch.rand(1, generator=gen, device=device) < 0.5
                score = torch.where(flip, -score, score)
            score = spec.score_weight * score + spec.score_noise * noise
        ps = spec.patch_size
        layout = st.get(("unet.cells", h, w, ps, str(device)), lambda: T.cell_layout(h, w, ps, device))
        base = T.patch_argmax(score, h, w, ps, layout)
        if spec.align_cfg and st.cfg_halves(b):
            base[b // 2 :] = base[: b // 2]
        return base

    def prepare(self, st: Any, call: StepCall) -> None:
        if st.action.kind == "reuse" or any(h.skips(st) for h in self.enclosing):
            self.now = OFF  # the whole output is reused, or its unit is skipped: the module does not run
            return
        shape, _dtype, device = st.key
        h, w = self.grid(shape)
        n = h * w
        num_prune = int(n * st.action.ratio)
        if num_prune == 0:
            self.now = Now("whole", ran=False)
            return
        base = self._base(st, shape[0], n, h, w, device)
        self.now = Now("prune", n=n, h=h, w=w, base=base, num_prune=num_prune, kept=None, macs=0.0, ran=False)

    def finish(self, st: Any) -> None:
        now = self.now
        if now.mode == "prune" and now.kept is not None:
            st.record.partial[self.name] = (now.kept, now.n)
            st.record.overhead_macs += now.macs
        elif now.mode != "off" and now.ran:  # ran whole (no pruning this step, or not a plain self-attention)
            st.record.computed_full.append(self.name)

    def new_forward(self, module: torch.nn.Module, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        now = self.now
        is_self = (args[0] if args else kwargs.get("encoder_hidden_states")) is None
        mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
        if now.mode != "prune" or not is_self or mask is not None or hidden_states.ndim != 3:
            if now.mode != "off":
                now.ran = True
            return self.fn_ref.original_forward(hidden_states, *args, **kwargs)
        if hidden_states.shape[1] != now.n or hidden_states.shape[0] != now.base.shape[0]:
            raise RuntimeError(
                f"{self.name}: {hidden_states.shape[1]} tokens do not match the {now.h}x{now.w} grid of its level"
            )
        kept, src, macs = T.select_pruned(hidden_states, now.base, now.num_prune, self.spec.recovery)
        now.kept, now.macs = kept.shape[1], macs
        y_kept = self.fn_ref.original_forward(T.gather_tokens(hidden_states, kept), *args, **kwargs)
        return T.gather_tokens(y_kept, src)


def _kept_inputs(args: tuple, kwargs: dict, k: int) -> tuple[tuple, dict]:
    """A pruned self-attention's (meta) inputs on its ``k`` kept tokens (for the MAC book)."""
    x = args[0] if args else kwargs["hidden_states"]
    meta = torch.empty((x.shape[0], k, *x.shape[2:]), dtype=x.dtype, device="meta")
    if args:
        return (meta, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": meta}


def install_unet_branch(handle: Handle, adapter: Any, cfg: UNetMethodConfig) -> None:
    """Register the branch-skipping, pruning and output-reuse hooks of a UNet method."""
    unet, contexts = handle.denoiser, handle.contexts
    units = adapter.facts["units"]
    down, up, n_in = units(unet)
    cfg.check_model(adapter, unet)
    depths = {a.depth for a in cfg.plan(max(len(getattr(cfg, "cache_plan", [])), 50)) if a.kind == "partial"}
    skips: dict[str, BranchSkipHook] = {}
    if depths:
        dmin = min(depths)
        blocks: dict[str, list[int]] = {}
        for idx, names in down + up:
            for nm in names:
                blocks.setdefault(".".join(nm.split(".")[:2]), []).append(idx)
                if idx >= dmin:
                    skips[nm] = BranchSkipHook(contexts, nm, idx, cfg)
                    handle.register(unet.get_submodule(nm), skips[nm], "skip")
        for block, idxs in blocks.items():
            if min(idxs) >= dmin:
                skips[block] = BranchSkipHook(contexts, block, min(idxs), cfg)
                handle.register(unet.get_submodule(block), skips[block], "skip")
        for nm, hook in skips.items():
            hook.enclosing = [h for unit, h in skips.items() if nm.startswith(unit + ".")]
        if unet.mid_block is not None:
            skips["mid_block"] = BranchSkipHook(contexts, "mid_block", n_in, cfg)
            handle.register(unet.mid_block, skips["mid_block"], "skip")

    spec = cfg.prune_spec()
    levels = spec.levels if spec.levels is not None else adapter.facts["auto_prune_levels"](unet)
    level_grid = adapter.facts["level_grid"]
    for name, lvl in adapter.facts["self_attention_modules"](unet, tuple(levels)):

        def grid(shape: tuple, lvl: int = lvl) -> tuple[int, int]:
            return level_grid(shape, lvl)

        hook = PrunedSelfAttentionHook(contexts, name, grid, spec)
        hook.enclosing = [h for unit, h in skips.items() if name.startswith(unit + ".")]
        handle.register(unet.get_submodule(name), hook, "prune")
        handle.token_modules[name] = "attn1"
        if handle.book is not None:
            handle.book.variant(name, _kept_inputs)

    handle.register(unet, OutputReuseHook(contexts, cfg), "reuse")
