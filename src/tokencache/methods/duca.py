"""DuCa: dual feature caching (arXiv 2412.18911): aggressive and conservative steps alternate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.config import _fail
from ..core.schedule import StepAction
from .token_cache import DUCA_LETTERS, TokenCacheFields, TokenCacheSpec, authors_plan, cycle_plan


@dataclass
class DuCaConfig(TokenCacheFields):
    """DuCa: dual feature caching (arXiv 2412.18911): aggressive and conservative steps alternate.

    Args:
        cycle: the repeating pattern of step kinds, a string of ``F`` (full), ``C`` (conservative: a ToCa
            partial step) and ``A`` (aggressive: every block is skipped; the last block returns its output
            from the previous computed step, the model's input and output layers still run with the
            current timestep). It must start with ``F``. The authors' patterns are ``"FCA"`` (PixArt),
            ``"FAC"``, ``"FCAC"`` and ``"FACAC"`` (DiT).
        **others: as in :class:`ToCaConfig`; the staleness term is normalised by ``len(cycle)``. With
            ``schedule="authors-dit"`` / ``"authors-pixart"`` the authors' step-dependent schedule runs with
            ``N = len(cycle)`` (conservative at odd ``s % I``, aggressive at even), and the cycle's letters
            are not used. ``DuCaConfig.preset("paper-dit")`` is the authors' DiT-XL/2 recipe.
    """

    method: ClassVar[str] = "duca"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # forecast: Taylor order 1 measured better than reuse at every preset (+2.1 to +7.0 dB on the reference
        # DiT and PixArt; FoCa is unstable on DuCa's aggressive steps), docs/forecasting.md
        "quality": {"cycle": "FCA", "first_full_steps": 2, "fresh_ratio": 0.2, "forecast": "taylor"},
        "balanced": {"cycle": "FCAC", "first_full_steps": 2, "fresh_ratio": 0.1, "forecast": "taylor"},
        "fast": {"cycle": "FACAC", "first_full_steps": 1, "fresh_ratio": 0.1, "forecast": "taylor"},
    }
    PAPERS: ClassVar[dict[str, dict[str, Any]]] = {
        # Shenyi-Z/DuCa DuCa-DiT README: N=3, R=0.05, ratio scheduler ToCa, attention score, 50 DDIM steps
        "paper-dit": {
            "schedule": "authors-dit", "cycle": "FCA", "first_full_steps": 1, "fresh_ratio": 0.05,
            "layer_weight": -0.2, "module_weights": {"attn1": 1.0, "attn2": 0.6, "ff": 2.5, "ff_context": 1.6},
            "partial_modules": ["ff"], "score": "attention", "staleness_weight": 0.25,
            "spatial_grid": 2, "spatial_bonus": 0.8,
        },
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

    def plan(self, num_steps: int) -> list[StepAction]:
        ratio, weight = float(self.fresh_ratio), float(self.step_weight)
        if self.schedule != "cycle":  # the authors' schedule, N = len(cycle)
            return authors_plan(self.schedule, len(self.cycle), ratio, num_steps, dual=True)
        return cycle_plan(self.cycle, self.first_full_steps, num_steps, ratio, weight)

    def spec(self) -> TokenCacheSpec:
        return self._spec(len(self.cycle))
