"""Search spaces: a method's per-step genes, how an optuna trial samples them and how presets map onto them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ..config import CONFIG_CLASSES, BaseConfig, DaToConfig, DeepCacheConfig

DEFAULT_RATIOS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7)
DEFAULT_DEPTHS = (1, 2, 3)


class SearchSpace:
    """Base class: ``suggest(trial)`` builds a config; ``params_of(cfg)`` gives the genes of a config or ``None``."""

    method: str = ""

    def suggest(self, trial: Any) -> BaseConfig:  # pragma: no cover - overridden
        raise NotImplementedError

    def params_of(self, config: BaseConfig) -> dict[str, Any] | None:
        """Genes reproducing ``config`` (for enqueuing presets), or ``None`` if it is outside the space."""
        return None

    def presets(self) -> dict[str, BaseConfig]:
        cls = CONFIG_CLASSES[self.method]
        return {name: cls.preset(name) for name in ("quality", "balanced", "fast") if name in cls.PRESETS}

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
    ) -> None:
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
        return self.build(plan, ratios)

    def build(self, plan: list[Any], ratios: list[float]) -> DaToConfig:
        ratio: Any = ratios[0] if len(set(ratios)) == 1 else [float(r) for r in ratios]
        return DaToConfig(cache_plan=list(plan), prune_ratio=ratio, **self.base)

    def params_of(self, config: BaseConfig) -> dict[str, Any] | None:
        if not isinstance(config, DaToConfig):
            return None
        actions = config.unet_plan(self.steps)
        params: dict[str, Any] = {}
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
        return {"method": self.method, "depths": list(self.depths), "ratios": list(self.ratios), "base": self.base}


class DeepCacheSpace(SearchSpace):
    """DeepCache-like baseline: the full-step interval and the branch."""

    method = "deepcache"

    def __init__(self, steps: int, max_interval: int = 10, max_branch: int = 2) -> None:
        self.steps, self.max_interval, self.max_branch = steps, max_interval, max_branch

    def suggest(self, trial: Any) -> DeepCacheConfig:
        return DeepCacheConfig(
            interval=trial.suggest_int("interval", 1, self.max_interval),
            branch=trial.suggest_int("branch", 0, self.max_branch),
        )

    def params_of(self, config: BaseConfig) -> dict[str, Any] | None:
        if not isinstance(config, DeepCacheConfig):
            return None
        if config.interval > self.max_interval or config.branch > self.max_branch:
            return None
        return {"interval": config.interval, "branch": config.branch}

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "max_interval": self.max_interval, "max_branch": self.max_branch}


class TokenCacheSpace(SearchSpace):
    """ToCa / DuCa / FORA: the numeric fields ``interval`` and ``fresh_ratio`` where the config has them.

    Built only if the transformer configs exist in :mod:`tokencache.config`; other fields keep their defaults.
    """

    def __init__(self, method: str, steps: int, max_interval: int = 8) -> None:
        if method not in CONFIG_CLASSES:
            raise ValueError(f"method {method!r} has no config class yet; allowed: {sorted(SPACES_AVAILABLE())}")
        self.method, self.steps, self.max_interval = method, steps, max_interval
        self.fields = {f.name for f in dataclasses.fields(CONFIG_CLASSES[method])}
        if "interval" not in self.fields:
            raise ValueError(f"{method} config has no 'interval' field; its search space is not supported")

    def suggest(self, trial: Any) -> BaseConfig:
        kw: dict[str, Any] = {"interval": trial.suggest_int("interval", 1, self.max_interval)}
        if "fresh_ratio" in self.fields:
            kw["fresh_ratio"] = trial.suggest_float("fresh_ratio", 0.05, 0.5, step=0.05)
        return CONFIG_CLASSES[self.method](**kw)

    def params_of(self, config: BaseConfig) -> dict[str, Any] | None:
        params = {"interval": getattr(config, "interval", None)}
        if "fresh_ratio" in self.fields:
            params["fresh_ratio"] = getattr(config, "fresh_ratio", None)
        ok = isinstance(params["interval"], int) and 1 <= params["interval"] <= self.max_interval
        return params if ok else None


def SPACES_AVAILABLE() -> list[str]:  # noqa: N802 - reads like a constant
    """Methods that can be searched with the configs present now."""
    names = ["dato", "deepcache"]
    names += [m for m in ("toca", "duca", "fora") if m in CONFIG_CLASSES]
    return names


def make_space(method: str, steps: int, max_depth: int, **kw: Any) -> SearchSpace:
    """The search space of ``method`` for ``steps`` steps on a model whose branches go ``max_depth`` deep.

    Args:
        method: ``"dato"``, ``"deepcache"`` or (when their configs exist) ``"toca"``, ``"duca"``, ``"fora"``.
        steps: number of denoising steps.
        max_depth: deepest branch depth the UNet allows (0 for transformers).
        **kw: ``depths``, ``ratios`` and ``base`` for DaTo.
    """
    if method == "dato":
        depths = [d for d in kw.get("depths") or DEFAULT_DEPTHS if d <= max_depth]
        bad = [d for d in kw.get("depths") or () if d > max_depth]
        if bad:
            raise ValueError(f"depths {bad} are invalid for this UNet; allowed: 1..{max_depth}")
        return DaToSpace(steps, depths, kw.get("ratios") or DEFAULT_RATIOS, kw.get("base"))
    if method == "deepcache":
        return DeepCacheSpace(steps, max_branch=max(0, min(3, max_depth) - 1))
    if method in ("toca", "duca", "fora") and method in CONFIG_CLASSES:
        return TokenCacheSpace(method, steps)
    raise ValueError(f"method {method!r} cannot be searched; allowed: {SPACES_AVAILABLE()}")
