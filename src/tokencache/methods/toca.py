"""ToCa: token-wise feature caching for diffusion transformers (ICLR 2025, arXiv 2410.05317)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.schedule import StepAction
from .token_cache import TokenCacheFields, TokenCacheSpec, cycle_plan


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

    def plan(self, num_steps: int) -> list[StepAction]:
        cycle = "F" + "C" * (self.interval - 1)
        return cycle_plan(cycle, self.first_full_steps, num_steps, float(self.fresh_ratio), float(self.step_weight))

    def spec(self) -> TokenCacheSpec:
        return self._spec(self.interval)
