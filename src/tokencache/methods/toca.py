"""ToCa: token-wise feature caching for diffusion transformers (ICLR 2025, arXiv 2410.05317)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.schedule import StepAction
from .token_cache import TokenCacheFields, TokenCacheSpec, authors_plan, cycle_plan


@dataclass
class ToCaConfig(TokenCacheFields):
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
        schedule: ``"cycle"`` (a full step every ``interval`` steps after ``first_full_steps``) or the
            authors' step-dependent schedule with ``N = interval``: ``"authors-dit"`` / ``"authors-pixart"``
            (see :func:`~tokencache.methods.token_cache.authors_plan`; ``step_weight`` is then replaced
            by the authors' step factor).

    The named recipes ``ToCaConfig.preset("paper-dit")`` (DiT-XL/2, 50 DDIM steps, CFG 1.5) and
    ``preset("paper-pixart")`` (PixArt-alpha 256, 20 DPM-Solver++ steps, CFG 4.5) are the authors'
    published settings (``docs/transformers.md``).
    """

    method: ClassVar[str] = "toca"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # forecast: Taylor order 1 measured better than reuse at every preset on the reference DiT and
        # PixArt (+2.2 to +8.2 dB at the same MACs, docs/forecasting.md); "paper-*" keep the authors' reuse
        "quality": {"interval": 3, "first_full_steps": 3, "fresh_ratio": 0.2, "forecast": "taylor"},
        "balanced": {"interval": 4, "first_full_steps": 2, "fresh_ratio": 0.1, "forecast": "taylor"},
        "fast": {"interval": 5, "first_full_steps": 1, "fresh_ratio": 0.1, "forecast": "taylor"},
    }
    PAPERS: ClassVar[dict[str, dict[str, Any]]] = {
        # Shenyi-Z/ToCa DiT-ToCa README: N=3, R=0.07, ratio scheduler ToCa-ddim50, attention score
        "paper-dit": {
            "schedule": "authors-dit", "interval": 3, "first_full_steps": 1, "fresh_ratio": 0.07,
            "layer_weight": -0.2, "module_weights": {"attn1": 1.0, "attn2": 0.6, "ff": 2.5, "ff_context": 1.6},
            "partial_modules": ["ff"], "score": "attention", "staleness_weight": 0.25,
            "spatial_grid": 2, "spatial_bonus": 0.6,
        },
        # PixArt-alpha-ToCa README: N=3, R=0.30, cross-attention entropy score
        "paper-pixart": {
            "schedule": "authors-pixart", "interval": 3, "first_full_steps": 1, "fresh_ratio": 0.30,
            "layer_weight": 0.6, "module_weights": {"attn1": 1.0, "attn2": 0.6, "ff": 1.6, "ff_context": 1.6},
            "partial_modules": ["attn2", "ff"], "score": "cross_entropy", "staleness_weight": 0.25,
            "spatial_grid": 4, "spatial_bonus": 0.4,
        },
    }

    interval: int = 3

    def validate(self) -> None:
        self._check_int("interval", 1, 1000)
        self._validate_token_fields()

    def plan(self, num_steps: int) -> list[StepAction]:
        if self.schedule != "cycle":  # the authors' schedule, N = interval
            return authors_plan(self.schedule, self.interval, float(self.fresh_ratio), num_steps, dual=False)
        cycle = "F" + "C" * (self.interval - 1)
        return cycle_plan(cycle, self.first_full_steps, num_steps, float(self.fresh_ratio), float(self.step_weight))

    def spec(self) -> TokenCacheSpec:
        return self._spec(self.interval)
