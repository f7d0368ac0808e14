"""Method configurations: dataclasses with presets, (de)serialisation and validation.

Every config validates itself on construction and raises ``ValueError`` naming the field, the value
and what is allowed. ``to_dict()`` / ``from_dict()`` round-trip, and ``save()`` / ``load()`` write
YAML or JSON by file extension. :func:`load_config` reads any of them back by its ``method`` key.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .schedule import StepAction, resample, resample_plan

CONFIG_CLASSES: dict[str, type[BaseConfig]] = {}


def _fail(cls_name: str, name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{cls_name}.{name}={value!r} is invalid; allowed: {allowed}")


class BaseConfig:
    """Shared behaviour of the method configs (presets, validation, serialisation)."""

    method: ClassVar[str] = ""
    #: Model families the method applies to: "unet" and/or "transformer".
    families: ClassVar[tuple[str, ...]] = ()
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.method:
            CONFIG_CLASSES[cls.method] = cls

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:  # pragma: no cover - overridden
        """Raise ``ValueError`` for any out-of-range field."""

    # ---- field checks -------------------------------------------------------------------------
    def _check_int(self, name: str, lo: int, hi: int | None = None) -> None:
        v = getattr(self, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            _fail(type(self).__name__, name, v, f"an integer in [{lo}, {hi if hi is not None else 'inf'}]")

    def _check_float(self, name: str, lo: float, hi: float, hi_open: bool = False) -> None:
        v = getattr(self, name)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v and (v < hi if hi_open else v <= hi)
        if not ok:
            _fail(type(self).__name__, name, v, f"a number in [{lo}, {hi}{')' if hi_open else ']'}")

    def _check_choice(self, name: str, choices: tuple[str, ...]) -> None:
        v = getattr(self, name)
        if v not in choices:
            _fail(type(self).__name__, name, v, f"one of {list(choices)}")

    def _check_bool(self, name: str) -> None:
        v = getattr(self, name)
        if not isinstance(v, bool):
            _fail(type(self).__name__, name, v, "True or False")

    # ---- presets and (de)serialisation --------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any):
        """Build a config from a named preset, optionally overriding fields.

        Args:
            name: one of ``cls.PRESETS`` (``"quality"``, ``"balanced"``, ``"fast"``).
            **overrides: fields to change after the preset is applied.

        Returns:
            A validated config.

        Example:
            >>> cfg = DaToConfig.preset("balanced", patch_size=2)
        """
        if name not in cls.PRESETS:
            raise ValueError(f"{cls.__name__}.preset name={name!r} is unknown; allowed: {sorted(cls.PRESETS)}")
        kwargs = {**cls.PRESETS[name], **overrides}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data dict of the fields, with a ``method`` key for :func:`load_config`."""
        return {"method": self.method, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        data = dict(data)
        method = data.pop("method", cls.method)
        if method != cls.method:
            raise ValueError(f"{cls.__name__}.from_dict method={method!r} does not match {cls.method!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {unknown}; allowed: {sorted(names)}")
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        """Write the config as YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
        path = Path(path)
        data = self.to_dict()
        if path.suffix in (".yaml", ".yml"):
            path.write_text(yaml.safe_dump(data, sort_keys=False))
        elif path.suffix == ".json":
            path.write_text(json.dumps(data, indent=2))
        else:
            raise ValueError(f"config path suffix {path.suffix!r} is unsupported; allowed: .yaml, .yml, .json")
        return path

    @classmethod
    def load(cls, path: str | Path):
        """Read a config written by :meth:`save` (it must be of this class)."""
        return cls.from_dict(_read(path))

    def fingerprint(self) -> str:
        """Short stable hash of the config, for manifests and file names."""
        import hashlib

        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def _read(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping, got {type(data).__name__}")
    return data


def load_config(path: str | Path) -> BaseConfig:
    """Load any tokencache config file, choosing the class by its ``method`` key.

    Example:
        >>> cfg = load_config("strategy.yaml")
        >>> tc.apply(pipe, cfg)
    """
    data = _read(path)
    method = data.get("method")
    if method not in CONFIG_CLASSES:
        raise ValueError(f"config file {str(path)!r} method={method!r} is unknown; allowed: {sorted(CONFIG_CLASSES)}")
    return CONFIG_CLASSES[method].from_dict(data)


# ================================================================================================
# UNet methods: DaTo and its baselines
# ================================================================================================


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


class UNetMethodConfig(BaseConfig):
    """A UNet method resolves to a per-step plan and a pruning spec."""

    families = ("unet",)

    def unet_plan(self, num_steps: int) -> list[StepAction]:  # pragma: no cover - overridden
        raise NotImplementedError

    def prune_spec(self) -> PruneSpec:
        return PruneSpec()

    @property
    def max_depth(self) -> int:
        """Deepest partial branch depth the plan uses (0 if none); checked against the model."""
        return 0


def _levels_ok(cls_name: str, levels: Any) -> None:
    if levels is None:
        return
    if not isinstance(levels, (list, tuple)) or not levels or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in levels
    ):
        _fail(cls_name, "prune_levels", levels, "None (auto) or a non-empty list of UNet level indices >= 0")


def _fast_plan() -> list[str | int]:
    """50-step plan close to the most aggressive strategy the DaTo authors evaluated.

    Full steps at 0, 13, 23, 35, 45; shallow (depth 1) steps dominate the first half and whole-output
    reuse the second half: 5 full, 20 shallow, 25 reuse.
    """
    full = {0, 13, 23, 35, 45}
    plan: list[str | int] = []
    for i in range(50):
        if i in full:
            plan.append("full")
        elif i < 25:
            plan.append("reuse" if i % 4 == 0 else 1)
        else:
            plan.append(1 if (i - 1) in full or i % 4 == 3 else "reuse")
    return plan


def _uniform_plan(interval: int, depth: int, n: int = 50) -> list[str | int]:
    return ["full" if i % interval == 0 else depth for i in range(n)]


@dataclass
class DaToConfig(UNetMethodConfig):
    """DaTo: dynamics-aware token pruning with step-wise UNet feature caching (arXiv 2501.00375).

    Args:
        cache_plan: the per-step strategy F(t): for each step ``"full"``, ``"reuse"`` (return the
            previous noise prediction) or an integer branch depth ``d >= 1`` (a partial step: the
            ``d`` outermost input and output units run, deeper ones return cached outputs). Written for
            ``len(cache_plan)`` steps and mapped to any step count by relative position. Must start
            with ``"full"``.
        prune_ratio: fraction ``r`` of all tokens pruned in self-attention of the pruned levels; one
            number, or one per step (mapped by relative position). ``0 <= r < 1 - 1/patch_size**2``.
        patch_size: ``s``; one base token is kept per ``s x s`` patch.
        prune_levels: UNet resolution levels whose transformer blocks are pruned (0 = highest).
            ``None``: the highest-resolution level that has attention (SD 1.x/2.x: 0; SDXL: 1).
        base_selection: ``"diffscore"`` (temporal noise-difference score, the paper) or ``"random"``.
        align_cfg: copy the unconditional half's base positions to the conditional half.
        score_weight: ``gamma``, weight of the per-sample z-scored DiffScore.
        score_noise: ``alpha``, weight of the seeded Gaussian noise added to the score.
        random_sign: flip the score's sign with probability 0.5 per block call, as the authors' code does.
        recovery: a pruned token copies the output of its nearest ``"base"`` token (the paper) or its
            nearest ``"kept"`` token (the authors' code; costs an extra similarity product).
        seed: seed of tokencache's own generator (never the user's).
    """

    method: ClassVar[str] = "dato"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quality": {"cache_plan": _uniform_plan(3, 2), "prune_ratio": 0.3},
        "balanced": {"cache_plan": _uniform_plan(5, 1), "prune_ratio": 0.4},
        "fast": {"cache_plan": _fast_plan(), "prune_ratio": 0.4},
    }

    cache_plan: list[Any] = field(default_factory=lambda: _uniform_plan(5, 1))
    prune_ratio: Any = 0.4
    patch_size: int = 2
    prune_levels: list[int] | None = None
    base_selection: str = "diffscore"
    align_cfg: bool = True
    score_weight: float = 1.0
    score_noise: float = 0.1
    random_sign: bool = False
    recovery: str = "base"
    seed: int = 0

    def validate(self) -> None:
        name = type(self).__name__
        self._check_int("patch_size", 1, 16)
        _validate_cache_plan(name, self.cache_plan)
        hi = 1.0 - 1.0 / self.patch_size**2
        ratios = self.prune_ratio if isinstance(self.prune_ratio, (list, tuple)) else [self.prune_ratio]
        if not ratios:
            _fail(name, "prune_ratio", self.prune_ratio, "a number or a non-empty list of numbers")
        for r in ratios:
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not (0.0 <= r < hi) and not (r == 0 == hi):
                _fail(name, "prune_ratio", r, f"a number in [0, {hi:g}) (below 1 - 1/patch_size**2)")
        _levels_ok(name, self.prune_levels)
        self._check_choice("base_selection", ("diffscore", "random"))
        self._check_choice("recovery", ("base", "kept"))
        self._check_bool("align_cfg")
        self._check_bool("random_sign")
        self._check_float("score_weight", 0.0, 1e6)
        self._check_float("score_noise", 0.0, 1e6)
        self._check_int("seed", 0)

    def unet_plan(self, num_steps: int) -> list[StepAction]:
        kinds = resample_plan(self.cache_plan, num_steps)
        ratios = self.prune_ratio if isinstance(self.prune_ratio, (list, tuple)) else [self.prune_ratio]
        ratios = resample(list(ratios), num_steps)
        return [_unet_action(k, float(r)) for k, r in zip(kinds, ratios)]

    def prune_spec(self) -> PruneSpec:
        return PruneSpec(
            patch_size=self.patch_size,
            levels=tuple(self.prune_levels) if self.prune_levels is not None else None,
            base_selection=self.base_selection,
            align_cfg=self.align_cfg,
            score_weight=self.score_weight,
            score_noise=self.score_noise,
            random_sign=self.random_sign,
            recovery=self.recovery,
            seed=self.seed,
        )

    @property
    def max_depth(self) -> int:
        return max([d for d in self.cache_plan if isinstance(d, int)], default=0)


def _validate_cache_plan(name: str, plan: Any) -> None:
    if not isinstance(plan, (list, tuple)) or not plan:
        _fail(name, "cache_plan", plan, "a non-empty list of 'full', 'reuse' or branch depths >= 1")
    for i, a in enumerate(plan):
        ok = a in ("full", "reuse") or (isinstance(a, int) and not isinstance(a, bool) and a >= 1)
        if not ok:
            _fail(name, f"cache_plan[{i}]", a, "'full', 'reuse' or an integer branch depth >= 1")
    if plan[0] != "full":
        _fail(name, "cache_plan[0]", plan[0], "'full' (the first step must fill the caches)")


def _unet_action(entry: Any, ratio: float) -> StepAction:
    if entry == "full":
        return StepAction("full", None, ratio)
    if entry == "reuse":
        return StepAction("reuse", None, 0.0)
    return StepAction("partial", int(entry), ratio)


@dataclass
class DeepCacheConfig(UNetMethodConfig):
    """DeepCache-like baseline: uniform UNet branch caching, no pruning.

    Args:
        interval: a full step every ``interval`` steps; the others are partial.
        branch: branch id of the partial steps, 0 = shallowest; it runs at depth ``branch + 1``
            (conv_in plus ``branch + 1`` outermost output units).
    """

    method: ClassVar[str] = "deepcache"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quality": {"interval": 2, "branch": 2},
        "balanced": {"interval": 3, "branch": 0},
        "fast": {"interval": 5, "branch": 0},
    }

    interval: int = 3
    branch: int = 0

    def validate(self) -> None:
        self._check_int("interval", 1, 1000)
        self._check_int("branch", 0, 64)

    def unet_plan(self, num_steps: int) -> list[StepAction]:
        return [
            StepAction("full") if i % self.interval == 0 else StepAction("partial", self.branch + 1)
            for i in range(num_steps)
        ]

    @property
    def max_depth(self) -> int:
        return self.branch + 1 if self.interval > 1 else 0


@dataclass
class ToMeConfig(UNetMethodConfig):
    """ToMe-like baseline: prune self-attention tokens with a random base token per patch; no caching.

    Args:
        ratio: fraction of all tokens pruned, ``0 <= ratio < 1 - 1/patch_size**2``.
        patch_size: one random base token per ``patch_size x patch_size`` patch.
        prune_levels: as in :class:`DaToConfig`.
        seed: seed of tokencache's own generator.
    """

    method: ClassVar[str] = "tome"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quality": {"ratio": 0.3},
        "balanced": {"ratio": 0.5},
        "fast": {"ratio": 0.7},
    }

    ratio: float = 0.5
    patch_size: int = 2
    prune_levels: list[int] | None = None
    seed: int = 0

    def validate(self) -> None:
        self._check_int("patch_size", 1, 16)
        hi = 1.0 - 1.0 / self.patch_size**2
        if self.ratio != 0:
            self._check_float("ratio", 0.0, hi, hi_open=True)
        _levels_ok(type(self).__name__, self.prune_levels)
        self._check_int("seed", 0)

    def unet_plan(self, num_steps: int) -> list[StepAction]:
        return [StepAction("full", None, float(self.ratio)) for _ in range(num_steps)]

    def prune_spec(self) -> PruneSpec:
        levels = tuple(self.prune_levels) if self.prune_levels is not None else None
        return PruneSpec(self.patch_size, levels, "random", False, 0.0, 1.0, False, "base", self.seed)


# ================================================================================================
# Transformer methods: ToCa, DuCa and the FORA baseline (BasicTransformerBlock models, see dit.py)
# ================================================================================================

#: Token-level modules of a ``BasicTransformerBlock`` that transformer methods cache.
DIT_MODULES: tuple[str, ...] = ("attn1", "attn2", "ff")
#: Token scores: ToCa's self-attention influence (s1) and cross-attention entropy (s2), DuCa's V-norm,
#: and seeded random scores (DuCa v2).
DIT_SCORES: tuple[str, ...] = ("attention", "cross_entropy", "vnorm", "random")
#: DuCa step letters: Full, Conservative (a ToCa partial step), Aggressive (every block skipped).
DUCA_LETTERS: dict[str, str] = {"F": "full", "C": "partial", "A": "aggressive"}


@dataclass(frozen=True)
class DiTSpec:
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

    partial_modules: tuple[str, ...] = ("attn2", "ff")
    score: str = "vnorm"
    layer_weight: float = 0.0
    module_weights: tuple[tuple[str, float], ...] = (("attn1", 1.0), ("attn2", 1.0), ("ff", 1.0))
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


class DiTMethodConfig(BaseConfig):
    """A transformer method resolves to a per-step plan and a :class:`DiTSpec`."""

    families = ("transformer",)

    def dit_plan(self, num_steps: int) -> list[StepAction]:  # pragma: no cover - overridden
        raise NotImplementedError

    def dit_spec(self) -> DiTSpec:  # pragma: no cover - overridden
        return DiTSpec()


def _step_factor(weight: float, step: int, num_steps: int) -> float:
    """``f_step = 1 + w - 2 w x`` with ``x = step / num_steps`` (steps counted upward from 0)."""
    x = step / max(num_steps, 1)
    return 1.0 + weight - 2.0 * weight * x


def _cycle_plan(cycle: str, first_full: int, num_steps: int, ratio: float, step_weight: float) -> list[StepAction]:
    """Steps ``< first_full`` are full; then ``cycle`` repeats, its ``F`` on step ``first_full - 1``."""
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r} is invalid; it must be a positive integer")
    out: list[StepAction] = []
    for i in range(num_steps):
        letter = "F" if i < first_full else cycle[(i - first_full + 1) % len(cycle)]
        kind = DUCA_LETTERS[letter]
        r = ratio * _step_factor(step_weight, i, num_steps) if kind == "partial" else (ratio if kind == "full" else 0.0)
        out.append(StepAction(kind, None, float(r)))
    return out


@dataclass
class _TokenCacheFields(DiTMethodConfig):
    """Fields shared by :class:`ToCaConfig` and :class:`DuCaConfig` (see there)."""

    first_full_steps: int = 1
    fresh_ratio: float = 0.1
    step_weight: float = 0.0
    layer_weight: float = 0.0
    module_weights: dict[str, float] = field(default_factory=lambda: {"attn1": 1.0, "attn2": 0.6, "ff": 1.6})
    partial_modules: list[str] = field(default_factory=lambda: ["attn2", "ff"])
    score: str = "vnorm"
    staleness_weight: float = 0.25
    spatial_grid: int = 2
    spatial_bonus: float = 0.6
    share_cfg_selection: bool | None = None
    seed: int = 0

    def _validate_token_fields(self) -> None:
        name = type(self).__name__
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

    def _spec(self, norm: int) -> DiTSpec:
        return DiTSpec(
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


@dataclass
class ToCaConfig(_TokenCacheFields):
    """ToCa: token-wise feature caching for diffusion transformers (ICLR 2025, arXiv 2410.05317).

    A full step every ``interval`` steps computes every token and refreshes the caches (each module's
    pre-gate output per token). On the partial steps between them, self-attention returns its cached
    output and each module in ``partial_modules`` recomputes only its ``k`` highest-scoring tokens of the
    *current* input, scattered into its cache; the block's gates and modulation always use the current
    timestep.

    Args:
        interval: ``N``, a full step every ``interval`` steps (counted from the last warm-up step).
        first_full_steps: steps always full at the start of a call (the authors use 1 to 3).
        fresh_ratio: ``R``, the base fraction of tokens recomputed on a partial step (the paper's cache
            ratio is ``1 - R``).
        step_weight: ``w_t`` of the step factor ``1 + w_t - 2 w_t s/T`` (positive: more tokens early).
        layer_weight: ``w_l`` of the layer factor ``1 + w_l - 2 w_l l/(L-1)`` (positive: more in the
            first blocks).
        module_weights: module type -> factor. A module recomputes
            ``k = floor(clamp(R f_step f_layer f_module, 0, 1) N_tokens)`` tokens, fixed per (block, step).
        partial_modules: module types computed on a token subset on partial steps: ``"ff"``,
            ``"attn2"`` (cross-attention, PixArt-style blocks) and ``"attn1"`` (partial-query
            self-attention: selected queries against every key; off by default, as the authors advise).
            Modules not listed return their cached output whole.
        score: ``"vnorm"`` (DuCa's V-norm, needs no attention map, keeps fused SDPA), ``"attention"``
            (attention each token receives, from an explicit softmax on full steps), ``"cross_entropy"``
            (entropy of the cross-attention rows; blocks without cross-attention fall back to ``"vnorm"``)
            or ``"random"``.
        staleness_weight: ``lambda3``; a token skipped ``c`` steps in a row gets ``+ lambda3 c / N``.
        spatial_grid: ``g``; the spatial-uniformity bonus works on ``g x g`` cells of the token grid
            (any ``h x w``, square or not); 0 disables it.
        spatial_bonus: ``b``; the best token of each cell gets ``+ b * max(score)``; 0 disables it.
        share_cfg_selection: both classifier-free-guidance halves recompute the same tokens (scores
            averaged over the halves). ``None`` follows the authors' code: shared for every score except
            ``"attention"``.
        seed: seed of tokencache's own generator for ``"random"`` (never the user's generator).
    """

    method: ClassVar[str] = "toca"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quality": {"interval": 3, "first_full_steps": 3, "fresh_ratio": 0.2},
        "balanced": {"interval": 4, "first_full_steps": 2, "fresh_ratio": 0.1},
        "fast": {"interval": 5, "first_full_steps": 1, "fresh_ratio": 0.1},
    }

    interval: int = 3

    def validate(self) -> None:
        self._check_int("interval", 1, 1000)
        self._validate_token_fields()

    def dit_plan(self, num_steps: int) -> list[StepAction]:
        cycle = "F" + "C" * (self.interval - 1)
        return _cycle_plan(cycle, self.first_full_steps, num_steps, float(self.fresh_ratio), float(self.step_weight))

    def dit_spec(self) -> DiTSpec:
        return self._spec(self.interval)


@dataclass
class DuCaConfig(_TokenCacheFields):
    """DuCa: dual feature caching (arXiv 2412.18911): aggressive and conservative steps alternate.

    Args:
        cycle: the repeating pattern of step kinds, a string of ``F`` (full), ``C`` (conservative: a ToCa
            partial step) and ``A`` (aggressive: every block is skipped; the last block returns its output
            from the previous computed step, the model's input and output layers still run with the
            current timestep). It must start with ``F``. The authors' patterns are ``"FCA"`` (PixArt),
            ``"FAC"``, ``"FCAC"`` and ``"FACAC"`` (DiT).
        **others: as in :class:`ToCaConfig`; the staleness term is normalised by ``len(cycle)``.
    """

    method: ClassVar[str] = "duca"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quality": {"cycle": "FCA", "first_full_steps": 2, "fresh_ratio": 0.2},
        "balanced": {"cycle": "FCAC", "first_full_steps": 2, "fresh_ratio": 0.1},
        "fast": {"cycle": "FACAC", "first_full_steps": 1, "fresh_ratio": 0.1},
    }

    cycle: str = "FCA"

    def validate(self) -> None:
        name = type(self).__name__
        if not isinstance(self.cycle, str) or not self.cycle:
            _fail(name, "cycle", self.cycle, "a non-empty string of the letters F, C, A starting with F")
        bad = sorted(set(self.cycle) - set(DUCA_LETTERS))
        if bad:
            _fail(name, "cycle", self.cycle, f"only the letters F, C, A (found {bad})")
        if self.cycle[0] != "F":
            _fail(name, "cycle", self.cycle, "a cycle starting with 'F' (the first step must fill the caches)")
        self._validate_token_fields()

    def dit_plan(self, num_steps: int) -> list[StepAction]:
        ratio, weight = float(self.fresh_ratio), float(self.step_weight)
        return _cycle_plan(self.cycle, self.first_full_steps, num_steps, ratio, weight)

    def dit_spec(self) -> DiTSpec:
        return self._spec(len(self.cycle))


@dataclass
class FORAConfig(DiTMethodConfig):
    """FORA-like baseline: every module's output is reused whole between full steps.

    On the steps between full steps no token is recomputed; the blocks' gates and modulation still use
    the current timestep (cached pre-gate outputs, as in ToCa).

    Args:
        interval: a full step every ``interval`` steps, starting with step 0.
    """

    method: ClassVar[str] = "fora"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quality": {"interval": 2},
        "balanced": {"interval": 3},
        "fast": {"interval": 4},
    }

    interval: int = 3

    def validate(self) -> None:
        self._check_int("interval", 1, 1000)

    def dit_plan(self, num_steps: int) -> list[StepAction]:
        return _cycle_plan("F" + "C" * (self.interval - 1), 1, num_steps, 0.0, 0.0)

    def dit_spec(self) -> DiTSpec:
        return DiTSpec(partial_modules=(), score="random", staleness_norm=self.interval, spatial_bonus=0.0)
