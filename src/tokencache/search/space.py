"""Search spaces: a method's per-step genes, how an optuna trial samples them and how presets map onto them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..harness.registry import CONFIG_CLASSES, BaseConfig, DaToConfig, DeepCacheConfig

DEFAULT_RATIOS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7)
DEFAULT_DEPTHS = (1, 2, 3)

APPROXIMATORS = ("none", "taylor1", "taylor2", "foca")
"""The approximator gene's default choices: reuse, Taylor order 1 and 2, FoCa (``CachingConfig.forecast``)."""

ALL_APPROXIMATORS = ("none", "taylor1", "taylor2", "taylor3", "hermite1", "hermite2", "hermite3", "foca")


def approximator_fields(name: str) -> dict[str, Any]:
    """``"taylor2"`` -> ``{"forecast": "taylor", "forecast_order": 2}``; ``"none"`` / ``"foca"`` -> order 1."""
    if name not in ALL_APPROXIMATORS:
        raise ValueError(f"approximator {name!r} is invalid; allowed: {list(ALL_APPROXIMATORS)}")
    if name in ("none", "foca"):
        return {"forecast": name, "forecast_order": 1}
    return {"forecast": name[:-1], "forecast_order": int(name[-1])}


def approximator_name(config: BaseConfig) -> str:
    """The gene value of a config's approximator (inverse of :func:`approximator_fields`)."""
    forecast = getattr(config, "forecast", "none")
    return forecast if forecast in ("none", "foca") else f"{forecast}{config.forecast_order}"


class SearchSpace:
    """Base class: ``suggest(trial)`` builds a config; ``params_of(cfg)`` gives the genes of a config or ``None``.

    Every space also has the approximator gene ``approx`` (how skipped outputs are produced: reuse or a
    forecast, see :func:`approximator_fields`) when ``approximators`` offers more than one choice.
    """

    method: str = ""
    approximators: tuple[str, ...] = APPROXIMATORS

    def _set_approximators(self, approximators: Sequence[str]) -> None:
        if not approximators:
            raise ValueError(f"approximators is empty; allowed: a non-empty list from {list(ALL_APPROXIMATORS)}")
        for a in approximators:
            approximator_fields(a)  # raises naming the bad one
        self.approximators = tuple(approximators)

    def _suggest_approx(self, trial: Any) -> dict[str, Any]:
        if len(self.approximators) == 1:
            return approximator_fields(self.approximators[0])
        return approximator_fields(trial.suggest_categorical("approx", self.approximators))

    def _approx_params(self, config: BaseConfig) -> dict[str, Any] | None:
        """``{"approx": name}`` (or ``{}`` for a single choice), ``None`` when the config's is not offered."""
        name = approximator_name(config)
        if name not in self.approximators:
            return None
        return {"approx": name} if len(self.approximators) > 1 else {}

    def suggest(self, trial: Any) -> BaseConfig:  # pragma: no cover - overridden
        raise NotImplementedError

    def params_of(self, config: BaseConfig) -> dict[str, Any] | None:
        """Genes reproducing ``config`` (for enqueuing presets), or ``None`` if it is outside the space."""
        return None

    def presets(self) -> dict[str, BaseConfig]:
        cls = CONFIG_CLASSES[self.method]
        return {name: cls.preset(name) for name in ("quality", "balanced", "fast") if name in cls.PRESETS}

    def seeds(self) -> list[BaseConfig]:
        """Configs enqueued as the first trials (those inside the space): the presets by default."""
        return list(self.presets().values())

    def describe(self) -> dict[str, Any]:
        return {"method": self.method}


def _action_name(a: Any) -> str:
    return a if a in ("full", "reuse") else f"d{int(a)}"


def _action_value(name: str) -> str | int:
    return name if name in ("full", "reuse") else int(name[1:])


class DaToSpace(SearchSpace):
    """DaTo's per-step genes: the cache action of each step and the pruning ratio of each step.

    Step 0 is always ``"full"`` (the caches must be filled); the other steps choose among ``"full"``,
    ``"reuse"`` and the branch depths. Every step chooses a ratio in ``ratios``.

    Args:
        steps: number of denoising steps (genes per kind).
        depths: branch depths allowed for partial steps.
        ratios: pruning ratios allowed.
        base: further :class:`DaToConfig` fields kept fixed (e.g. ``{"patch_size": 2}``).
    """

    method = "dato"

    def __init__(
        self,
        steps: int,
        depths: Sequence[int] = DEFAULT_DEPTHS,
        ratios: Sequence[float] = DEFAULT_RATIOS,
        base: dict[str, Any] | None = None,
        approximators: Sequence[str] = APPROXIMATORS,
    ) -> None:
        self._set_approximators(approximators)
        if steps < 2:
            raise ValueError(f"steps={steps} is invalid for a DaTo search; allowed: >= 2")
        if not depths or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in depths):
            raise ValueError(f"depths={list(depths)!r} is invalid; allowed: a non-empty list of integers >= 1")
        if not ratios:
            raise ValueError("ratios is empty; allowed: a non-empty list of numbers in [0, 0.75)")
        self.steps, self.depths, self.ratios = steps, tuple(depths), tuple(float(r) for r in ratios)
        self.base = dict(base or {})
        self.actions = ("full", "reuse", *(f"d{d}" for d in self.depths))
        DaToConfig(cache_plan=["full"], prune_ratio=list(self.ratios), **self.base)  # validates ratios and base

    def suggest(self, trial: Any) -> DaToConfig:
        plan: list[Any] = ["full"]
        for i in range(1, self.steps):
            plan.append(_action_value(trial.suggest_categorical(f"a{i:03d}", self.actions)))
        ratios = [trial.suggest_categorical(f"r{i:03d}", self.ratios) for i in range(self.steps)]
        return self.build(plan, ratios, self._suggest_approx(trial))

    def build(self, plan: list[Any], ratios: list[float], approx: dict[str, Any] | None = None) -> DaToConfig:
        ratio: Any = ratios[0] if len(set(ratios)) == 1 else [float(r) for r in ratios]
        return DaToConfig(cache_plan=list(plan), prune_ratio=ratio, **{**self.base, **(approx or {})})

    def params_of(self, config: BaseConfig) -> dict[str, Any] | None:
        if not isinstance(config, DaToConfig):
            return None
        params = self._approx_params(config)
        if params is None:
            return None
        actions = config.plan(self.steps)
        for i, a in enumerate(actions):
            if i > 0:
                name = a.kind if a.kind in ("full", "reuse") else f"d{a.depth}"
                if name not in self.actions:
                    return None
                params[f"a{i:03d}"] = name
            r = a.ratio if a.kind != "reuse" else self.ratios[0]
            match = [x for x in self.ratios if abs(x - r) < 1e-9]
            if not match:
                return None
            params[f"r{i:03d}"] = match[0]
        return params

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "depths": list(self.depths), "ratios": list(self.ratios), "base": self.base,
                "approximators": list(self.approximators)}


class DeepCacheSpace(SearchSpace):
    """DeepCache-like baseline: the full-step interval and the branch."""

    method = "deepcache"

    def __init__(self, steps: int, max_interval: int = 10, max_branch: int = 2,
                 approximators: Sequence[str] = APPROXIMATORS) -> None:
        self._set_approximators(approximators)
        self.steps, self.max_interval, self.max_branch = steps, max_interval, max_branch

    def suggest(self, trial: Any) -> DeepCacheConfig:
        return DeepCacheConfig(
            interval=trial.suggest_int("interval", 1, self.max_interval),
            branch=trial.suggest_int("branch", 0, self.max_branch),
            **self._suggest_approx(trial),
        )

    def params_of(self, config: BaseConfig) -> dict[str, Any] | None:
        if not isinstance(config, DeepCacheConfig):
            return None
        approx = self._approx_params(config)
        if approx is None or config.interval > self.max_interval or config.branch > self.max_branch:
            return None
        return {"interval": config.interval, "branch": config.branch, **approx}

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "max_interval": self.max_interval, "max_branch": self.max_branch,
                "approximators": list(self.approximators)}


DUCA_CYCLES = ("FC", "FA", "FCA", "FAC", "FCAC", "FACA", "FACAC", "FCACA", "FCACAC")
"""DuCa cycles a search chooses from: the authors' patterns and their neighbours (see :class:`DuCaConfig`)."""

FACTOR_CHOICES = (-0.4, -0.2, 0.0, 0.2, 0.4)
"""Step and layer factor weights ``w_t``, ``w_l`` a ToCa/DuCa search chooses from (0 = flat)."""


class TokenCacheSpace(SearchSpace):
    """ToCa / DuCa genes: the full-step pattern, the fresh ratio and the step/layer factors.

    ToCa chooses ``interval`` (1..``max_interval``); DuCa chooses ``cycle`` from ``cycles``. Both choose
    ``first_full_steps`` (1..3), ``fresh_ratio`` (0.05..0.5 by 0.05) and ``step_weight`` / ``layer_weight``
    from ``factors``; the other fields (module weights, score, staleness) keep their defaults.

    Args:
        method: ``"toca"`` or ``"duca"``.
        steps: number of denoising steps.
        max_interval: largest ToCa interval.
        cycles: DuCa cycles to choose from.
        factors: values of ``step_weight`` and ``layer_weight``.
    """

    RATIOS = tuple(round(0.05 * i, 2) for i in range(1, 11))

    def __init__(
        self,
        method: str,
        steps: int,
        max_interval: int = 8,
        cycles: Sequence[str] = DUCA_CYCLES,
        factors: Sequence[float] = FACTOR_CHOICES,
        approximators: Sequence[str] = APPROXIMATORS,
    ) -> None:
        self._set_approximators(approximators)
        if method not in ("toca", "duca"):
            raise ValueError(f"method={method!r} is invalid for a token-cache space; allowed: 'toca', 'duca'")
        if max_interval < 1:
            raise ValueError(f"max_interval={max_interval} is invalid; allowed: >= 1")
        self.method, self.steps, self.max_interval = method, steps, max_interval
        self.cycles, self.factors = tuple(cycles), tuple(float(f) for f in factors)
        for c in self.cycles:  # validates every cycle up front
            CONFIG_CLASSES["duca"](cycle=c)

    def _pattern_gene(self) -> tuple[str, tuple[Any, ...]]:
        if self.method == "toca":
            return "interval", tuple(range(1, self.max_interval + 1))
        return "cycle", self.cycles

    def suggest(self, trial: Any) -> BaseConfig:
        name, choices = self._pattern_gene()
        kw: dict[str, Any] = {
            name: trial.suggest_categorical(name, choices),
            "first_full_steps": trial.suggest_int("first_full_steps", 1, 3),
            "fresh_ratio": trial.suggest_categorical("fresh_ratio", self.RATIOS),
            "step_weight": trial.suggest_categorical("step_weight", self.factors),
            "layer_weight": trial.suggest_categorical("layer_weight", self.factors),
            **self._suggest_approx(trial),
        }
        return CONFIG_CLASSES[self.method](**kw)

    def params_of(self, config: BaseConfig) -> dict[str, Any] | None:
        if not isinstance(config, CONFIG_CLASSES[self.method]):
            return None
        approx = self._approx_params(config)
        if approx is None or config.schedule != "cycle":
            return None
        name, choices = self._pattern_gene()
        params = {
            name: getattr(config, name),
            "first_full_steps": config.first_full_steps,
            "fresh_ratio": _match(config.fresh_ratio, self.RATIOS),
            "step_weight": _match(config.step_weight, self.factors),
            "layer_weight": _match(config.layer_weight, self.factors),
        }
        ok = params[name] in choices and 1 <= params["first_full_steps"] <= 3
        return {**params, **approx} if ok and None not in params.values() else None

    def describe(self) -> dict[str, Any]:
        name, choices = self._pattern_gene()
        return {"method": self.method, name: list(choices), "fresh_ratio": list(self.RATIOS),
                "factors": list(self.factors), "approximators": list(self.approximators)}


class FORASpace(SearchSpace):
    """FORA-like baseline: the full-step interval, or with ``placement`` where every full step falls.

    With ``placement=True`` each step after the first has a gene ``f001``.. (``"F"`` full or ``"C"``
    cached) and the config is a :attr:`FORAConfig.step_plan`; the first trials are then the presets and
    TaylorSeer-style plans (``warmup`` 1-3 full steps, then every 2-8 steps) forecast with Taylor order 1,
    so the search starts from the uniform schedules' frontier and moves full steps from there.
    """

    method = "fora"

    def __init__(self, steps: int, max_interval: int = 8, approximators: Sequence[str] = APPROXIMATORS,
                 placement: bool = False) -> None:
        self._set_approximators(approximators)
        if placement and steps < 2:
            raise ValueError(f"steps={steps} is invalid for a placement search; allowed: >= 2")
        self.steps, self.max_interval, self.placement = steps, max_interval, placement

    def suggest(self, trial: Any) -> BaseConfig:
        approx = self._suggest_approx(trial)
        if self.placement:
            plan = "F" + "".join(trial.suggest_categorical(f"f{i:03d}", ("F", "C")) for i in range(1, self.steps))
            return CONFIG_CLASSES["fora"](step_plan=plan, **approx)
        return CONFIG_CLASSES["fora"](interval=trial.suggest_int("interval", 1, self.max_interval), **approx)

    def params_of(self, config: BaseConfig) -> dict[str, Any] | None:
        if not isinstance(config, CONFIG_CLASSES["fora"]):
            return None
        approx = self._approx_params(config)
        if approx is None:
            return None
        if self.placement:
            letters = ["F" if a.kind == "full" else "C" for a in config.plan(self.steps)]
            return {**{f"f{i:03d}": c for i, c in enumerate(letters) if i > 0}, **approx}
        ok = config.step_plan is None and 1 <= config.interval <= self.max_interval
        return {"interval": config.interval, **approx} if ok else None

    def seeds(self) -> list[BaseConfig]:
        out = super().seeds()
        if self.placement and "taylor1" in self.approximators:
            from ..methods.fora import taylorseer_plan

            out += [CONFIG_CLASSES["fora"](step_plan=taylorseer_plan(w, k, self.steps), forecast="taylor")
                    for w in (1, 2, 3) for k in range(2, self.max_interval + 1)]
        return out

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "max_interval": self.max_interval, "approximators": list(self.approximators),
                "placement": self.placement}


def _match(value: float, choices: Sequence[float]) -> float | None:
    found = [c for c in choices if abs(c - float(value)) < 1e-9]
    return found[0] if found else None


SEARCHABLE = ("dato", "deepcache", "toca", "duca", "fora")
"""Methods with a search space."""


def make_space(method: str, steps: int, max_depth: int, **kw: Any) -> SearchSpace:
    """The search space of ``method`` for ``steps`` steps on a model whose branches go ``max_depth`` deep.

    Args:
        method: one of :data:`SEARCHABLE`.
        steps: number of denoising steps.
        max_depth: deepest branch depth the UNet allows (0 for transformers).
        **kw: ``depths``, ``ratios`` and ``base`` for DaTo; ``approximators`` for every method (default
            :data:`APPROXIMATORS`); ``placement`` for FORA (a gene per step instead of the interval).
    """
    if kw.get("placement") and method != "fora":
        raise ValueError(f"placement is invalid for method {method!r}; allowed: 'fora' (DaTo's genes are per step)")
    approx = tuple(kw.get("approximators") or APPROXIMATORS)
    if method == "dato":
        depths = [d for d in kw.get("depths") or DEFAULT_DEPTHS if d <= max_depth]
        bad = [d for d in kw.get("depths") or () if d > max_depth]
        if bad:
            raise ValueError(f"depths {bad} are invalid for this UNet; allowed: 1..{max_depth}")
        return DaToSpace(steps, depths, kw.get("ratios") or DEFAULT_RATIOS, kw.get("base"), approx)
    if method == "deepcache":
        return DeepCacheSpace(steps, max_branch=max(0, min(3, max_depth) - 1), approximators=approx)
    if method in ("toca", "duca"):
        return TokenCacheSpace(method, steps, approximators=approx)
    if method == "fora":
        return FORASpace(steps, approximators=approx, placement=bool(kw.get("placement")))
    raise ValueError(f"method {method!r} cannot be searched; allowed: {list(SEARCHABLE)}")
