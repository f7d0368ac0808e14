"""DaTo: dynamics-aware token pruning with step-wise UNet feature caching (arXiv 2501.00375)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..core.config import _fail
from ..core.schedule import StepAction, resample, resample_plan
from .unet_branch import PruneSpec, UNetMethodConfig, _levels_ok


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


#: ``search_old``, the most aggressive cache strategy the DaTo authors evaluated with DaTo on COCO-30k
#: (EvelynZhang-epiclab/DaTo ``sd1/.ipynb_checkpoints/run_command8/9``): one value per UNet call after the
#: first, 12 = full, 1 = the shallowest branch, 0 = the previous noise prediction.
AUTHORS_STRATEGY: tuple[int, ...] = (
    1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 12, 1, 0, 0, 0, 1, 1, 0, 1, 0, 12, 0,
    0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 12, 0, 0, 0, 0, 0, 0, 1, 0, 1, 12, 0, 1, 0, 1,
)


def _authors_plan() -> list[str | int]:
    """The authors' strategy on diffusers' 50 calls: call 0 full, then its first 49 values (PLMS made 51)."""
    code = {12: "full", 1: 1, 0: "reuse"}
    return ["full", *(code[v] for v in AUTHORS_STRATEGY[:49])]


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
        # forecast: the cached deep features forecast with Taylor order 1, measured better than reuse at every
        # preset on the reference UNet (+1.0 to +3.1 dB at the same MACs, docs/forecasting.md)
        "quality": {"cache_plan": _uniform_plan(3, 2), "prune_ratio": 0.3, "forecast": "taylor"},
        "balanced": {"cache_plan": _uniform_plan(5, 1), "prune_ratio": 0.4, "forecast": "taylor"},
        "fast": {"cache_plan": _fast_plan(), "prune_ratio": 0.4, "forecast": "taylor"},
    }
    PAPERS: ClassVar[dict[str, dict[str, Any]]] = {
        # the authors' SD 1.5 run of that strategy with DaTo (run_command9: r=0.4, align_cfg, gamma 1,
        # alpha 0.1) and their code's selection details (random sign flip, nearest-kept recovery)
        "paper-sd15": {
            "cache_plan": _authors_plan(), "prune_ratio": 0.4, "align_cfg": True, "score_weight": 1.0,
            "score_noise": 0.1, "random_sign": True, "recovery": "kept",
        },
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

    def plan(self, num_steps: int) -> list[StepAction]:
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
