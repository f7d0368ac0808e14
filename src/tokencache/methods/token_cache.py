"""Token-wise module caching for transformers: the hooks ToCa, DuCa and FORA-like share.

Hooks sit on each block's token-level modules (roles ``attn1`` / ``attn2`` / ``ff`` / ``ff_context``,
found through the model adapter) and cache their *pre-gate* per-token output, so the block's own gates
and adaLN modulation always use the current timestep (as the authors' code does):

* **full** steps compute everything, feed every module's approximator, record token scores and reset
  the staleness counters;
* **partial** (ToCa, DuCa "conservative") steps: self-attention's output comes from its approximator
  (unless partial-query ``attn1`` is enabled); ``attn2`` and ``ff`` gather the ``k`` best-scoring rows of
  their *current* input, compute only those (cross-attention: those queries against the full text keys
  and values) and return the approximator's output with those rows replaced (``reuse``: the cache with
  the fresh rows scattered in). ``k`` is fixed per (block, step). In MMDiT blocks (FLUX, SD3,
  Qwen-Image) the image and text streams have their own modules: ``ff`` picks image tokens and
  ``ff_context`` picks text tokens, each its own top-k (as the authors' FLUX code does); joint attention
  (image and text outputs together) is produced whole by its approximator;
* **aggressive** (DuCa) steps: a hook on every block passes its input through (both streams of a joint
  block), except the block that ends the backbone, whose output comes from its approximator; the
  model's embeddings and final norm/projection still run with the current timestep.

Token scores come from projections the model computes anyway (``to_v`` for V-norm, ``to_q``/``to_k``
for the attention and cross-attention-entropy scores; ``add_v_proj`` for the V-norm of text tokens in
joint attention) through hooks on those ``Linear`` layers, so the attention processor (fused SDPA, or any
custom processor) is left alone. The token math is in
:mod:`tokencache.core.tokens`. All state is per cache context; decisions run outside compiled graphs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..core import tokens as T
from ..core.config import BaseConfig, CachingConfig, _fail
from ..core.hooks import OFF, CallScopedHook, Handle, Now, OutputSlot, StepCall
from ..core.rng import SeededNoise
from ..core.schedule import StepAction
from ..core.state import CallState, ContextStates
from ..models import TOKEN_ROLES, ModelAdapter

#: Token-level module roles transformer methods cache (see :data:`tokencache.models.TOKEN_ROLES`).
DIT_MODULES: tuple[str, ...] = TOKEN_ROLES
#: Token scores: ToCa's self-attention influence (s1) and cross-attention entropy (s2), DuCa's V-norm,
#: and seeded random scores (DuCa v2).
DIT_SCORES: tuple[str, ...] = ("attention", "cross_entropy", "vnorm", "random")
#: DuCa step letters: Full, Conservative (a ToCa partial step), Aggressive (every block skipped).
DUCA_LETTERS: dict[str, str] = {"F": "full", "C": "partial", "A": "aggressive"}
#: prefix of a block's data key holding the CFG-shared form of its score (``"shared.score"``), or
#: :data:`UNSHARED` where the selection is not shared over CFG halves.
SHARED = "shared."
UNSHARED = "unshared"


@dataclass(frozen=True)
class TokenCacheSpec:
    """How a transformer method caches tokens inside each block (resolved from a config).

    Attributes:
        partial_modules: module types computed on a token subset on partial steps; the other module
            types return their cached output whole.
        score: token score, one of ``DIT_SCORES``.
        layer_weight: ``w`` of the layer factor ``1 + w - 2 w l / (L - 1)``.
        module_weights: module type -> factor on the fresh ratio.
        staleness_weight: ``lambda3``; a token stale for ``c`` steps gets ``+ lambda3 * c / staleness_norm``.
        staleness_norm: the cycle length ``N`` that normalises the staleness term.
        spatial_grid: cell size ``g`` of the spatial-uniformity bonus (0 disables it).
        spatial_bonus: ``b``; the best token of each ``g x g`` cell gets ``+ b * max(score)``.
        share_cfg_selection: both CFG halves select the same tokens (averaged scores); ``None`` follows
            the authors' code (shared for every score but ``"attention"``).
        seed: seed of tokencache's own generator.
    """

    partial_modules: tuple[str, ...] = ("attn2", "ff", "ff_context")
    score: str = "vnorm"
    layer_weight: float = 0.0
    module_weights: tuple[tuple[str, float], ...] = (("attn1", 1.0), ("attn2", 1.0), ("ff", 1.0), ("ff_context", 1.0))
    staleness_weight: float = 0.25
    staleness_norm: int = 3
    spatial_grid: int = 2
    spatial_bonus: float = 0.0
    share_cfg_selection: bool | None = None
    seed: int = 0

    def module_weight(self, kind: str) -> float:
        return dict(self.module_weights).get(kind, 1.0)

    @property
    def shares_cfg(self) -> bool:
        return self.score != "attention" if self.share_cfg_selection is None else self.share_cfg_selection


class TransformerMethodConfig(CachingConfig):
    """A transformer method: a per-step plan and a :class:`TokenCacheSpec`, installed by the token-cache hooks."""

    structures = ("transformer",)

    def spec(self) -> TokenCacheSpec:  # pragma: no cover - overridden
        return TokenCacheSpec()

    def install(self, handle: Handle, adapter: Any) -> None:
        install_token_cache(handle, adapter, self)


def step_factor(weight: float, step: int, num_steps: int) -> float:
    """``f_step = 1 + w - 2 w x`` with ``x = step / num_steps`` (steps counted upward from 0)."""
    x = step / max(num_steps, 1)
    return 1.0 + weight - 2.0 * weight * x


def cycle_plan(cycle: str, first_full: int, num_steps: int, ratio: float, step_weight: float) -> list[StepAction]:
    """Steps ``< first_full`` are full; then ``cycle`` repeats, its ``F`` on step ``first_full - 1``."""
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r} is invalid; it must be a positive integer")
    out: list[StepAction] = []
    for i in range(num_steps):
        letter = "F" if i < first_full else cycle[(i - first_full + 1) % len(cycle)]
        kind = DUCA_LETTERS[letter]
        r = ratio * step_factor(step_weight, i, num_steps) if kind == "partial" else (ratio if kind == "full" else 0.0)
        out.append(StepAction(kind, None, float(r)))
    return out


#: ``schedule`` values: a fixed cycle after ``first_full_steps``, or the authors' step-dependent schedules.
SCHEDULES: tuple[str, ...] = ("cycle", "authors-dit", "authors-pixart")


def authors_plan(schedule: str, threshold: int, ratio: float, num_steps: int, dual: bool) -> list[StepAction]:
    """The full-step schedule and fresh-ratio step factor of the authors' DiT / PixArt code.

    ``s`` is the authors' step variable: counted down from ``T - 1`` for DiT, up from 0 for PixArt. The
    first step is full and sets the interval ``I = round(N / f(s))`` (DiT: ``f = 1.4 - 0.8 s/T``, and
    ``I = 2`` for ``s`` in ``[0.2T, 0.4T)``; PixArt: ``f = 0.8 + 0.4 s/T``); a step with ``s % I == 0`` is
    full and sets the next ``I``. The authors' code sets it inside layer 0 and re-checks ``s % I`` for the
    other layers, so such a step can be full in layer 0 only: here the whole step takes the kind its
    layers 1.. take (the one deviation, documented). Other steps are partial (ToCa); DuCa's (``dual``)
    are conservative for odd ``s % I`` and aggressive for even. Partial steps recompute
    ``ratio * f_step`` (DiT ``3 - 4 s/T``, negative early: no tokens; PixArt ``1.9 - 1.8 s/T``) times
    the layer and module factors of the config.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r} is invalid; it must be a positive integer")
    t = num_steps
    dit = schedule == "authors-dit"

    def interval(s: int) -> int:
        if dit and int(t * 0.2) <= s < int(t * 0.4):
            return 2
        f = 1.4 - 0.8 * s / t if dit else 0.8 + 0.4 * s / t
        return max(1, round(threshold / f))

    out: list[StepAction] = []
    cal = 1
    for i in range(num_steps):
        s = t - 1 - i if dit else i
        if i == 0:
            kind, cal = "full", interval(s)
        else:
            if s % cal == 0:
                cal = interval(s)
            r = s % cal
            kind = "full" if r == 0 else ("partial" if not dual or r % 2 == 1 else "aggressive")
        f_step = 3.0 - 4.0 * s / t if dit else 1.9 - 1.8 * s / t
        r_kind = {"full": ratio, "partial": ratio * f_step, "aggressive": 0.0}[kind]
        out.append(StepAction(kind, None, float(r_kind)))
    return out


@dataclass
class TokenCacheFields(TransformerMethodConfig):
    """Fields shared by :class:`ToCaConfig` and :class:`DuCaConfig` (see there)."""

    first_full_steps: int = 1
    fresh_ratio: float = 0.1
    step_weight: float = 0.0
    layer_weight: float = 0.0
    module_weights: dict[str, float] = field(
        default_factory=lambda: {"attn1": 1.0, "attn2": 0.6, "ff": 1.6, "ff_context": 1.6}
    )
    partial_modules: list[str] = field(default_factory=lambda: ["attn2", "ff", "ff_context"])
    score: str = "vnorm"
    staleness_weight: float = 0.25
    spatial_grid: int = 2
    spatial_bonus: float = 0.6
    share_cfg_selection: bool | None = None
    seed: int = 0
    schedule: str = "cycle"

    def _validate_token_fields(self) -> None:
        name = type(self).__name__
        self._check_choice("schedule", SCHEDULES)
        self._check_int("first_full_steps", 1, 1000)
        self._check_float("fresh_ratio", 0.0, 1.0)
        self._check_float("step_weight", -10.0, 10.0)
        self._check_float("layer_weight", -10.0, 10.0)
        if not isinstance(self.module_weights, dict):
            _fail(name, "module_weights", self.module_weights, f"a dict mapping some of {list(DIT_MODULES)} to numbers")
        for k, v in self.module_weights.items():
            if k not in DIT_MODULES:
                _fail(name, f"module_weights[{k!r}]", k, f"a module type in {list(DIT_MODULES)}")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 100.0:
                _fail(name, f"module_weights[{k!r}]", v, "a number in [0, 100]")
        if not isinstance(self.partial_modules, (list, tuple)):
            _fail(name, "partial_modules", self.partial_modules, f"a list of module types from {list(DIT_MODULES)}")
        for m in self.partial_modules:
            if m not in DIT_MODULES:
                _fail(name, "partial_modules", m, f"module types from {list(DIT_MODULES)}")
        self._check_choice("score", DIT_SCORES)
        self._check_float("staleness_weight", 0.0, 1e6)
        self._check_int("spatial_grid", 0, 64)
        self._check_float("spatial_bonus", 0.0, 1e6)
        if self.share_cfg_selection is not None:
            self._check_bool("share_cfg_selection")
        self._check_int("seed", 0)

    def _spec(self, norm: int) -> TokenCacheSpec:
        return TokenCacheSpec(
            partial_modules=tuple(dict.fromkeys(self.partial_modules)),
            score=self.score,
            layer_weight=float(self.layer_weight),
            module_weights=tuple((k, float(self.module_weights.get(k, 1.0))) for k in DIT_MODULES),
            staleness_weight=float(self.staleness_weight),
            staleness_norm=max(1, norm),
            spatial_grid=self.spatial_grid,
            spatial_bonus=float(self.spatial_bonus),
            share_cfg_selection=self.share_cfg_selection,
            seed=self.seed,
        )




# ================================================================================================
# Hooks
# ================================================================================================


def infer_cfg(declared: bool | None, x: torch.Tensor) -> bool | torch.Tensor:
    """Whether the batch ``x`` is two CFG halves: a bool, or a 0-dim bool tensor (no host sync).

    The pipeline's ``do_classifier_free_guidance`` wins when the core knows it. DiT, PixArt and Latte
    pipelines do not expose it; all of them feed ``torch.cat([latents] * 2)`` under CFG, so otherwise a
    batch counts as CFG when it is even and its two halves are identical (compared on the device).
    """
    b = x.shape[0]
    if b % 2:
        return False
    if declared is not None:
        return bool(declared)
    return (x[: b // 2] == x[b // 2 :]).all()


class BlockInfo:
    """Where one transformer block sits: its name, index in its stack, the stack's length, its score.

    Args:
        name: block name inside the denoiser (e.g. ``"transformer_blocks.3"``).
        layer: index of the block in its stack; ``n_layers`` the stack's length.
        score: the token score this block uses (``"cross_entropy"`` falls back to ``"vnorm"`` in blocks
            without cross-attention).
    """

    def __init__(self, name: str, layer: int, n_layers: int, score: str) -> None:
        self.name, self.layer, self.n_layers, self.score = name, layer, n_layers, score

    def layer_factor(self, weight: float) -> float:
        """``f_layer = 1 + w - 2 w l / (L - 1)``."""
        x = self.layer / (self.n_layers - 1) if self.n_layers > 1 else 0.0
        return 1.0 + weight - 2.0 * weight * x


class StepFacts:
    """Prepared first at each step: the call's CFG layout, token grid and the block ending the backbone.

    Args:
        adapter: the model adapter.
        lasts: stack attribute -> name of its last block, in execution order of the stacks.
    """

    now: Now = OFF

    def __init__(self, adapter: ModelAdapter, lasts: dict[str, str]) -> None:
        self.adapter, self.lasts = adapter, lasts

    def prepare(self, st: CallState, call: StepCall) -> None:
        x = self.adapter.hidden_of(call.args, call.kwargs)
        facts = st.facts
        if st.step == 0 or facts.get("grid") is None:
            facts["cfg"] = infer_cfg(st.cfg, x)
            facts["grid"] = self.adapter.token_grid(call.module, x, call.kwargs)
            facts["device"] = x.device
        stacks = tuple(self.lasts)
        if self.adapter.active_stacks is not None:
            stacks = self.adapter.active_stacks(stacks, call.kwargs)
        facts["last_block"] = self.lasts[stacks[-1]] if stacks else None
        per_token = self.adapter.per_token_modulation
        facts["per_token_modulation"] = bool(per_token is not None and per_token(call.args, call.kwargs))

    def finish(self, st: CallState) -> None:
        pass


class BlockHook(CallScopedHook):
    """DuCa aggressive steps: pass the input through, or (the block ending the backbone) produce its output.

    Modes: ``"pass"`` (input through), ``"cached"`` (the approximator's output), ``"keep"`` (run and keep
    the output: the last block on a computed step), ``"off"``.

    Args:
        contexts: the per-context states.
        adapter: the model adapter (block I/O).
        block: where the block sits.
        config: the method config (its approximator fills the block's output slot).
    """

    def __init__(self, contexts: ContextStates, adapter: ModelAdapter, block: BlockInfo, config: BaseConfig) -> None:
        super().__init__(contexts)
        self.adapter, self.block, self.config = adapter, block, config
        self._key = "block." + block.name
        #: this step's scratch of the block: projections captured for its score, and the scores computed
        #: from them (moved into the block's data after the call, so traced code never touches a dict).
        self.box = Now()

    def prepare(self, st: CallState, call: StepCall) -> None:
        self.box = Now("box", q=None, k=None, score=None, score_ctx=None, entropy=None)
        name = self.block.name
        last = name == st.facts.get("last_block")
        if st.action.kind == "aggressive":
            if not last:
                st.record.skipped.append(name)
                self.now = Now("pass")
                return
            slot = st.objects.get(self._key)
            if slot is not None and slot.ready:
                st.record.skipped.append(name)
                self.now = Now("cached", out=slot.predict(st.x))
                return
            # no usable output yet (e.g. Wan 2.2's second expert): run the whole backbone this step
        self.now = Now("keep", out=None) if last else OFF

    def finish(self, st: CallState) -> None:
        now, box = self.now, self.box
        if now.mode == "keep" and now.out is not None:
            st.get(self._key, lambda: OutputSlot(self.config.approximator)).update(st.x, now.out)
        data = st.data(self.block.name)
        for attr, key in (("score", "score"), ("score_ctx", "score.ctx"), ("entropy", "entropy")):
            value = getattr(box, attr, None)
            if value is not None:
                data[key] = value
                data.pop(SHARED + key, None)  # its CFG-shared form is recomputed from the new one
        self.box = Now()

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        now = self.now
        if now.mode == "pass":
            io = self.adapter.block_io
            return io.pass_through(self.adapter.hidden_of(args, kwargs), io.context_of(args, kwargs))
        if now.mode == "cached":
            return now.out
        out = self.fn_ref.original_forward(*args, **kwargs)
        if now.mode == "keep":
            now.out = out
        return out


class CaptureHook(CallScopedHook):
    """Keeps a projection's output (``to_q``/``to_k``/``to_v``) for the block's token score; no extra compute.

    Args:
        contexts: the per-context states.
        block: where the block sits.
        key: where to keep it in the block's data (``"v"`` is turned into the V-norm score right away).
        heads: attention heads of the parent attention module.
        full_only: capture on full steps only.
    """

    def __init__(self, contexts: ContextStates, block: BlockInfo, key: str, heads: int, full_only: bool) -> None:
        super().__init__(contexts)
        self.block, self.key, self.heads, self.full_only = block, key, heads, full_only
        #: the hook of the block this projection sits in, whose scratch box it writes (set by the installer).
        self.block_hook: BlockHook | None = None

    def prepare(self, st: CallState, call: StepCall) -> None:
        capture = st.action.kind == "full" or not self.full_only
        self.now = Now("capture", box=self.block_hook.box) if capture and self.block_hook is not None else OFF

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        out = self.fn_ref.original_forward(*args, **kwargs)
        now = self.now
        if now.mode == "capture" and out.ndim == 3:
            if self.key == "v":
                now.box.score = T.vnorm_score(out.detach(), self.heads)
            elif self.key == "v_ctx":  # text tokens of joint attention
                now.box.score_ctx = T.vnorm_score(out.detach(), self.heads)
            elif self.key == "q":
                now.box.q = out.detach()
            else:
                now.box.k = out.detach()
        return out


class TokenModuleHook(CallScopedHook):
    """Token-wise caching of one token-level module (its pre-gate output per token).

    Modes: ``"full"`` (compute every token and keep the output), ``"skip"`` (the approximator's output),
    ``"partial"`` (compute the ``k`` tokens chosen in :meth:`prepare` and write them into the forecast).
    Token choice is made before the call from the scores and staleness of the previous steps, which is
    what the model's own call would have used: the scores are refreshed on full steps only (the
    cross-attention entropy also on the fresh rows of partial steps, after the choice).

    Args:
        contexts: the per-context states.
        adapter: the model adapter (module I/O).
        block: where the block sits.
        role: ``"attn1"``, ``"attn2"``, ``"ff"``, ``"ff_context"`` or an adapter's extra role
            (``"attn_dual"``: cached like ``attn1``; ``"ff_out"``: follows ``ff``'s choice).
        name: module name inside the denoiser.
        spec: the method's resolved settings.
        config: the method config (its approximator fills the module's slot).
        heads / scale: of the attention module (unused for ``ff``).
        inner: width of the attention's query projection (for the scores' MACs).
    """

    def __init__(
        self,
        contexts: ContextStates,
        adapter: ModelAdapter,
        block: BlockInfo,
        role: str,
        name: str,
        spec: TokenCacheSpec,
        config: BaseConfig,
        heads: int = 1,
        scale: float = 1.0,
        inner: int = 0,
    ) -> None:
        super().__init__(contexts)
        self.adapter, self.block, self.kind, self.name = adapter, block, role, name
        self.spec, self.config, self.heads, self.scale, self.inner = spec, config, heads, scale, inner
        self.factor = block.layer_factor(spec.layer_weight) * spec.module_weight(role)
        self.partial = role in spec.partial_modules
        #: the role whose token choice this module copies (same block, same step), if any.
        self.leader = adapter.linked_roles.get(role)
        #: the hook of that role in the same block (set by the installer; prepared before this one).
        self.leader_hook: TokenModuleHook | None = None
        #: the hook of the block this module sits in (set by the installer; prepared before this one).
        self.block_hook: BlockHook | None = None
        #: the hook of the module that alone reads this one's output, row by row (``ModelAdapter.sole_readers``),
        #: prepared after this one; and, on that reader, the hooks of the modules it reads so.
        self.reader_hook: TokenModuleHook | None = None
        self.feeder_hooks: list[TokenModuleHook] = []
        self._narrowed_memo: tuple[Any, int | None] | None = None
        self._slot = "slot." + name

    # ---- token choice (eager, before the call) -------------------------------------------------
    def fresh_tokens(self, ratio: float, n: int) -> int:
        """``k`` for a partial step of step ratio ``ratio`` (``R * f_step``) and ``n`` tokens."""
        return T.fresh_count(ratio * self.factor, n) if self.partial else 0

    def _base_score(self, st: CallState, b: int, n: int, device: torch.device) -> torch.Tensor:
        data, score = st.data(self.block.name), self.block.score
        if score == "random":
            gen = st.get("token.noise", lambda: SeededNoise(self.spec.seed)).get(device)
            return self._cfg_shared(st, torch.rand(b, n, generator=gen, device=device))
        if score == "cross_entropy" and self.kind != "ff_context" and "entropy" in data:
            return self._cfg_shared(st, T.entropy_score(data["entropy"]))
        key = "score.ctx" if self.kind == "ff_context" else "score"  # text tokens: V-norm of their joint values
        s = data.get(key)
        if s is None or tuple(s.shape) != (b, n):
            return torch.zeros(b, n, device=device)
        return self._kept_shared(st, data, key, s)

    def _kept_shared(self, st: CallState, data: dict, key: str, score: torch.Tensor) -> torch.Tensor:
        """The CFG-shared form of the block's ``data[key]`` score, computed once per score.

        V-norm and attention scores change on full steps only (:meth:`BlockHook.finish` drops the kept form
        when it stores a new score), so the block's partial modules and steps until then share one.
        """
        kept = data.get(SHARED + key)
        if kept is None:
            shared = self._cfg_shared(st, score)
            # an unshared score is not kept twice (the cache byte count would count it twice)
            data[SHARED + key] = UNSHARED if shared is score else shared
            return shared
        return score if kept is UNSHARED else kept

    def _cfg_shared(self, st: CallState, score: torch.Tensor) -> torch.Tensor:
        """``score`` with both CFG halves set to their mean, where the spec shares the selection over them."""
        cfg = st.facts.get("cfg", False)
        if not self.spec.shares_cfg or score.shape[0] % 2:
            return score
        if isinstance(cfg, torch.Tensor):  # inferred on the device: no host sync
            return torch.where(cfg, T.share_cfg_halves(score), score)
        return T.share_cfg_halves(score) if cfg else score

    def select(self, st: CallState, b: int, n: int, k: int, device: torch.device) -> torch.Tensor:
        """Indices ``(B, k)`` of the tokens to recompute; updates the staleness counters."""
        spec, facts, data = self.spec, st.facts, st.data(self.block.name)
        score = self._base_score(st, b, n, device)
        stale_key = "stale." + self.kind
        stale = data.get(stale_key)
        if stale is None or tuple(stale.shape) != (b, n):  # float32 counts (exact): no cast in the sum below
            stale = data[stale_key] = torch.zeros(b, n, dtype=torch.float32, device=device)
        total = score + T.staleness_term(stale, spec.staleness_weight, spec.staleness_norm)
        grid = facts.get("grid")
        if spec.spatial_bonus > 0 and grid is not None and grid[0] * grid[1] == n:
            h, w, g = grid[0], grid[1], spec.spatial_grid
            layout = None if g <= 1 else st.get(("token.cells", h, w, g, str(device)),
                                                lambda: T.cell_layout(h, w, g, device))
            total = T.spatial_bonus(total, h, w, g, spec.spatial_bonus, layout)
        idx = T.select_fresh(total, k)
        stale += 1
        stale.scatter_(1, idx, 0)
        return idx

    def _plan(self, st: CallState) -> tuple[bool, int, int]:
        """``(computed whole before any choice, k, n)`` for this step (no side effects)."""
        slot = st.objects.get(self._slot)
        shape = st.data(self.block.name).get("shape." + self.kind)
        if st.action.kind == "full" or slot is None or not slot.ready or shape is None:
            return True, 0, 0
        n = shape[1]
        if self.leader_hook is not None:  # copy the leader's choice, if it makes one on these tokens
            early, k, n_lead = self.leader_hook._plan(st)
            return False, (k if not early and n_lead == n else 0), n
        return False, self.fresh_tokens(st.action.ratio, n), n

    def narrowed(self, st: CallState) -> int | None:
        """Rows the modules this one alone reads produce this step (no side effects).

        ``k`` when this module computes ``k < n`` rows and each of them skips or is its leader computing the
        same rows: they produce those rows, in this module's order; ``0`` when all of them skip too: they produce
        one row (read by nothing). ``None``: they produce every row.
        """
        if not self.feeder_hooks:
            return None
        memo = self._narrowed_memo  # asked by each feeder's prepare and its own: plan once per step
        if memo is not None and memo[0] is st.record:
            return memo[1]
        early, k, n = self._plan(st)
        out: int | None = k
        if early or k >= n:
            out = None
        else:
            for f in self.feeder_hooks:
                f_early, f_k, f_n = f._plan(st)
                if f_early or f_n != n or (f_k and (f is not self.leader_hook or f_k != k)):
                    out = None
                    break
        self._narrowed_memo = (st.record, out)
        return out

    def _narrow_feeders(self, st: CallState, k: int) -> None:
        """Give the skipped modules this one alone reads the rows it reads: its ``k`` fresh ones, or one row."""
        if k:
            idx = self.now.idx
            self.now.gathered = True  # its input is already the concatenation of those rows
        else:
            b, device = st.data(self.block.name)["shape." + self.kind][0], st.facts.get("device")
            # one zero index per (batch, device) and context, shared by every block's skipped feeders
            idx = st.get(("token.row0", b, str(device)), lambda: torch.zeros(b, 1, dtype=torch.long, device=device))
        for f in self.feeder_hooks:
            if f.now.mode == "skip":
                f.now.out = st.objects[f._slot].predict_rows(st.x, idx)

    def prepare(self, st: CallState, call: StepCall) -> None:
        if self.block_hook is not None and self.block_hook.now.mode in ("pass", "cached"):
            self.now = OFF  # its block does not run this step (DuCa aggressive)
            return
        narrow = self.reader_hook is not None and self.reader_hook.narrowed(st) is not None
        early, k, n = self._plan(st)
        data = st.data(self.block.name)
        if early or k >= n:
            st.record.computed_full.append(self.name)
            self.now = Now("full", data=data, box=self.block_hook.box, out=None, shape=None, qk=None)
            return
        x = st.x
        slot = st.objects[self._slot]
        fed = self.narrowed(st)
        if k == 0:
            st.record.skipped.append(self.name)
            # a module only its reader reads gets the reader's rows from the reader's prepare (run after this)
            self.now = Now("skip", out=None if narrow else slot.predict(x))
            if fed is not None:
                self._narrow_feeders(st, 0)
            return
        st.record.partial[self.name] = (k, n)
        if self.leader_hook is not None:
            idx = self.leader_hook.now.idx
        else:
            idx = self.select(st, data["shape." + self.kind][0], n, k, st.facts.get("device"))
        if narrow:  # its reader reads just the fresh rows: no forecast of the others (``rows`` are returned)
            pred, inplace = None, False
        else:
            pred = slot.predict(x)
            # reuse: the fresh rows go into the cache itself (in place, as the published code does); any other
            # approximator gets them in finish(), so a forecast that is held state is written into a copy
            inplace = slot.name == "reuse" and slot.shares(pred)
            if not inplace and slot.shares(pred):
                pred = pred.clone()
        self.now = Now(
            "partial", k=k, n=n, idx=idx, out=pred, rows=None, box=self.block_hook.box, qk=None, inplace=inplace,
            entropy=data.get("entropy"), gathered=False,
        )
        if fed is not None:
            self._narrow_feeders(st, k)

    def finish(self, st: CallState) -> None:
        now, x = self.now, st.x
        if now.mode == "full":
            if now.out is not None:
                if isinstance(now.out, torch.Tensor):
                    st.get(self._slot, self.config.approximator).update(x, now.out)
                else:  # joint attention: (image, text) outputs, produced whole on partial steps
                    st.get(self._slot, lambda: OutputSlot(self.config.approximator)).update(x, now.out)
                data = now.data
                data["shape." + self.kind] = now.shape
                data.pop("stale." + self.kind, None)  # every token is fresh
        elif now.mode == "partial" and not now.inplace and now.rows is not None:
            st.objects[self._slot].update_rows(x, now.idx, now.rows)
        if now.mode in ("full", "partial") and now.qk is not None:  # the score's matmul, as flop_counter counts it
            b, nq, nk = now.qk
            st.record.overhead_macs += float(b * nq * nk * self.inner)

    # ---- inside the call (traced by torch.compile: reads ``now`` only) -------------------------
    def _shape_key(self, x: torch.Tensor, kwargs: dict) -> tuple:
        ctx = kwargs.get("encoder_hidden_states")
        return tuple(x.shape[:2]) if not isinstance(ctx, torch.Tensor) else (*x.shape[:2], *ctx.shape[:2])

    def _mask(self, kwargs: dict) -> torch.Tensor | None:
        m = kwargs.get("attention_mask")
        return m if isinstance(m, torch.Tensor) else None

    def _entropy(self, now: Now, kwargs: dict, rows: torch.Tensor | None = None) -> None:
        """(attn2, cross_entropy) turn the captured q/k into entropies: all rows, or the fresh ``rows``."""
        box = now.box
        q, k = box.q, box.k
        box.q = box.k = None
        if q is None or k is None:
            return
        bias = self._mask(kwargs)
        if bias is not None and (bias.shape[0] != q.shape[0] or bias.shape[-1] != k.shape[1]):
            bias = None
        if bias is not None and bias.ndim == 2:  # a keep/drop mask rather than an additive bias
            bias = (1.0 - bias.float()) * -10000.0
        ent = T.cross_attention_entropy(q, k, self.heads, self.scale, bias)
        now.qk = (q.shape[0], q.shape[1], k.shape[1])
        if rows is None:
            box.entropy = ent
        elif now.entropy is not None and now.entropy.shape[0] == ent.shape[0]:
            now.entropy.scatter_(1, rows, ent)

    def _attention_score(self, now: Now) -> None:
        box = now.box
        q, k = box.q, box.k
        box.q = box.k = None
        if q is None or k is None:
            return
        box.score = T.attention_received_score(q, k, self.heads, self.scale)
        now.qk = (q.shape[0], q.shape[1], k.shape[1])

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        now = self.now
        if now.mode == "skip":
            return now.out
        if now.mode != "partial":
            out = self.fn_ref.original_forward(*args, **kwargs)
            if now.mode == "full":
                x = self.adapter.hidden_of(args, kwargs)
                per_token = isinstance(out, torch.Tensor) and out.shape[:2] == x.shape[:2]
                joint = isinstance(out, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in out)
                if per_token or joint:
                    now.out, now.shape = out, self._shape_key(x, kwargs)
                if self.kind == "attn1" and self.block.score == "attention":
                    self._attention_score(now)
                elif self.kind == "attn2" and self.block.score == "cross_entropy":
                    self._entropy(now, kwargs)
            return out
        x = self.adapter.hidden_of(args, kwargs)
        idx = now.idx
        if now.gathered and x.shape[1] == now.k:  # its norm already returned just the fresh rows
            args_k, kwargs_k = args, dict(kwargs)
        else:
            args_k, kwargs_k = self.adapter.with_hidden(args, kwargs, T.gather_tokens(x, idx))
        if self.kind == "attn1":  # partial-query self-attention: selected queries, every key and value
            kwargs_k["encoder_hidden_states"] = x
        rows = self.fn_ref.original_forward(*args_k, **kwargs_k)
        if self.kind == "attn2" and self.block.score == "cross_entropy":
            self._entropy(now, kwargs, idx)
        out = now.out
        if out is None:  # its sole reader reads just these rows
            now.rows = rows
            return rows
        T.scatter_tokens(out, idx, rows)
        if not now.inplace:
            now.rows = rows
        return out


class SkippedInputHook(CallScopedHook):
    """A norm whose output only token-level modules read: one token when they all skip, ``k`` when they compute ``k``.

    * **stub**: every module reading the norm's output takes its output whole from its approximator (mode
      ``"skip"``), so none reads its input and normalising every token (and the block's modulation of them)
      is wasted: the norm returns its input's first token instead, a view, and the block modulates one token.
    * **gather**: the readers that compute (mode ``"partial"``) all compute the same ``k`` tokens, the others
      skip, and none needs the other tokens as keys (partial-query ``attn1`` does): the norm normalises only
      those ``k`` rows of its input and the block modulates ``k`` rows; each reader takes them as they come
      instead of gathering them from all ``N``. A norm and a modulation act on each token alone, so the rows
      are the same as gathering after them (not on calls whose blocks modulate each token with its own
      scale, :attr:`ModelAdapter.per_token_modulation`).

    Every output is unchanged in both modes.

    Args:
        contexts: the per-context states.
        readers: the hooks of the modules that read the norm's output (each prepared before this one).
    """

    def __init__(self, contexts: ContextStates, readers: list[TokenModuleHook]) -> None:
        super().__init__(contexts)
        self.readers = readers

    def prepare(self, st: CallState, call: StepCall) -> None:
        modes = [r.now.mode for r in self.readers]
        if all(m == "skip" for m in modes):
            self.now = Now("stub")
            return
        computing = [r for r in self.readers if r.now.mode == "partial"]
        if (
            computing
            and not st.facts.get("per_token_modulation", False)
            and len(computing) + modes.count("skip") == len(modes)
            and all(r.kind not in ("attn1", "attn_dual") and r.now.idx is computing[0].now.idx for r in computing)
        ):
            for r in computing:
                r.now.gathered = True
            self.now = Now("gather", idx=computing[0].now.idx)
            return
        self.now = OFF

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        now = self.now
        if now.mode != "off" and len(args) == 1 and not kwargs and args[0].dim() == 3:
            if now.mode == "stub":
                return args[0][:, :1]
            return self.fn_ref.original_forward(T.gather_tokens(args[0], now.idx))
        return self.fn_ref.original_forward(*args, **kwargs)


# ================================================================================================
# Installation
# ================================================================================================

#: score -> the projections it is computed from: (attention role, projection, key, on full steps only).
#: Projections a module lacks are skipped (``add_v_proj`` exists only in joint attention).
_CAPTURES = {
    "vnorm": (("attn1", "to_v", "v", True), ("attn1", "add_v_proj", "v_ctx", True)),
    "attention": (("attn1", "to_q", "q", True), ("attn1", "to_k", "k", True)),
    "cross_entropy": (("attn2", "to_q", "q", False), ("attn2", "to_k", "k", False)),
}


def _norm_readers(norms: dict[str, list[torch.nn.Module]]) -> list[tuple[torch.nn.Module, list[str]]]:
    """Invert :meth:`ModelAdapter.norms_of` (role -> its norms): each norm with every role that reads it, in order."""
    readers: dict[int, tuple[torch.nn.Module, list[str]]] = {}
    for role, mods in norms.items():
        for norm in mods:
            readers.setdefault(id(norm), (norm, []))[1].append(role)
    return list(readers.values())


def _scale(mod: torch.nn.Module, heads: int) -> float:
    """The attention's softmax scale (``1 / sqrt(head_dim)`` where the module does not store it)."""
    scale = getattr(mod, "scale", None)
    if isinstance(scale, (int, float)):
        return float(scale)
    to_q = getattr(mod, "to_q", None)
    dim = getattr(to_q, "out_features", None)
    return float((dim // max(heads, 1)) ** -0.5) if dim else 1.0


def _subset_inputs(adapter: ModelAdapter, role: str) -> Any:
    """How a module's (meta) inputs on ``k`` of its tokens follow from its full inputs (for the MAC book)."""

    def make(args: tuple, kwargs: dict, k: int) -> tuple[tuple, dict]:
        x = adapter.hidden_of(args, kwargs)
        meta = torch.empty((x.shape[0], k, *x.shape[2:]), dtype=x.dtype, device="meta")
        args_k, kwargs_k = adapter.with_hidden(args, kwargs, meta)
        if role == "attn1":
            kwargs_k["encoder_hidden_states"] = x
        return args_k, kwargs_k

    return make


def _check_partial(
    cfg: TransformerMethodConfig, spec: TokenCacheSpec, model: torch.nn.Module, adapter: ModelAdapter, present: set
) -> None:
    """Refuse ``partial_modules`` naming a role the model has but cannot compute on a token subset."""
    allowed = [r for r in DIT_MODULES if r in present and r in adapter.partial_roles]
    for role in spec.partial_modules:
        if role in present and role not in adapter.partial_roles:
            raise ValueError(
                f"{type(cfg).__name__}.partial_modules={list(spec.partial_modules)!r} is invalid for "
                f"{type(model).__name__}: its {role!r} modules cannot run on a subset of tokens (per-token "
                f"rotary embeddings or joint attention); allowed here: {allowed}"
            )


def install_token_cache(handle: Handle, adapter: ModelAdapter, cfg: TransformerMethodConfig) -> None:
    """Register the ToCa / DuCa / FORA hooks on a transformer the adapter describes.

    Hook state is keyed by ``handle.prefix`` + the module path, so two denoisers sharing one set of
    context states (Wan 2.2's experts) keep separate caches.
    """
    model, contexts, prefix = handle.denoiser, handle.contexts, handle.prefix
    spec = cfg.spec()
    stacks = adapter.block_stacks(model)
    present = {role for _, bl in stacks for b in bl for role, _, _ in adapter.block_modules(b)}
    if spec.score == "cross_entropy" and "attn2" not in present:
        raise ValueError(
            f"{type(cfg).__name__}.score='cross_entropy' is invalid for {type(model).__name__}: its blocks have no "
            "cross-attention; allowed: 'vnorm', 'attention', 'random'"
        )
    _check_partial(cfg, spec, model, adapter, present)
    scoring = bool(spec.partial_modules)
    for attr, blocks in stacks:
        for layer, blk in enumerate(blocks):
            name = f"{attr}.{layer}"
            modules = {role: (a, mod) for role, a, mod in adapter.block_modules(blk)}
            score = spec.score
            if score == "cross_entropy" and "attn2" not in modules:
                score = "vnorm"
            info = BlockInfo(prefix + name, layer, len(blocks), score)
            block_hook = BlockHook(contexts, adapter, info, cfg)
            handle.register(blk, block_hook, "dit_block")
            hooks: dict[str, TokenModuleHook] = {}
            readers = adapter.sole_readers_of(blk)
            # leaders first: a module that copies another's token choice, or reads others' rows, is prepared after
            late = set(adapter.linked_roles) | set(readers.values())
            for role, (a, mod) in sorted(modules.items(), key=lambda kv: kv[0] in late):
                heads = int(getattr(mod, "heads", 1) or 1)
                path = f"{prefix}{name}.{a}"
                inner = int(getattr(getattr(mod, "to_q", None), "out_features", 0) or 0)
                hook = TokenModuleHook(
                    contexts, adapter, info, role, path, spec, cfg, heads, _scale(mod, heads), inner
                )
                hooks[role] = hook
                # a Linear (FLUX single blocks' proj_mlp / proj_out) is what LoRA wraps and unwraps: follow its path
                linear = isinstance(mod, torch.nn.Linear) or hasattr(mod, "base_layer")
                handle.register(mod, hook, "dit_module", follow=f"{name}.{a}" if linear else None)
                handle.token_modules[path] = role
                if handle.book is not None:
                    handle.book.variant(path, _subset_inputs(adapter, role))
            for hook in hooks.values():
                hook.block_hook = block_hook
                if hook.leader is not None:
                    hook.leader_hook = hooks.get(hook.leader)
            if readers and all(role in hooks for role in (*readers, *readers.values())):
                for role, reader in readers.items():
                    hooks[role].reader_hook = hooks[reader]
                    hooks[reader].feeder_hooks.append(hooks[role])
            # after the module hooks, so each is prepared after the modules it reads the modes of
            for norm, roles in _norm_readers(adapter.norms_of(blk)):
                if all(role in hooks for role in roles):  # a reader left unhooked always needs every token
                    handle.register(norm, SkippedInputHook(contexts, [hooks[r] for r in roles]), "dit_norm")
            if not scoring:
                continue
            # The projections are leaf layers that LoRA loaded after apply wraps: the hooks follow their paths.
            for role, proj, key, full_only in _CAPTURES.get(score, ()):
                if role not in modules or getattr(modules[role][1], proj, None) is None:
                    continue
                a, mod = modules[role]
                hook = CaptureHook(contexts, info, key, int(getattr(mod, "heads", 1) or 1), full_only)
                hook.block_hook = block_hook
                handle.register(getattr(mod, proj), hook, "dit_capture", follow=f"{name}.{a}.{proj}")
    lasts = {attr: f"{prefix}{attr}.{len(blocks) - 1}" for attr, blocks in stacks}
    handle.prepare_first(StepFacts(adapter, lasts))
