"""The base of every method config, and the method registry.

A method is one config dataclass (in ``tokencache.methods``): validation on construction (a
``ValueError`` naming the field, the value and what is allowed), presets, ``to_dict()`` /
``from_dict()``, YAML/JSON ``save()`` / ``load()``, and the two calls the core makes:
``plan(num_steps)`` (one :class:`~tokencache.core.schedule.StepAction` per denoiser call) and
``install(handle, adapter)`` (register its hooks on a denoiser described by a model adapter).
Subclassing registers the method under its ``method`` name in :data:`CONFIG_CLASSES`; everything that
lists methods (bench, demo, generate, search, the contract tests) reads that registry.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .schedule import StepAction

#: method name -> config class, filled by subclassing :class:`BaseConfig` (the method registry).
CONFIG_CLASSES: dict[str, type[BaseConfig]] = {}


def _fail(cls_name: str, name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{cls_name}.{name}={value!r} is invalid; allowed: {allowed}")


class BaseConfig:
    """Shared behaviour of the method configs (presets, validation, serialisation) and the method contract."""

    method: ClassVar[str] = ""
    #: Structures the method runs on: the ``structure`` of a model adapter ("unet" branch structure,
    #: "transformer" blocks with token-level modules).
    structures: ClassVar[tuple[str, ...]] = ()
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    #: the authors' published recipes, by name (``"paper-dit"``, ...): loaded with :meth:`preset` like the
    #: presets, but not part of "every preset" of the benchmarks, demo and test matrix.
    PAPERS: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.method:
            CONFIG_CLASSES[cls.method] = cls

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:  # pragma: no cover - overridden
        """Raise ``ValueError`` for any out-of-range field."""

    # ---- the method contract ------------------------------------------------------------------
    def plan(self, num_steps: int) -> list[StepAction]:  # pragma: no cover - overridden
        """The action of each of ``num_steps`` denoiser calls of one generation (per cache context)."""
        raise NotImplementedError

    def install(self, handle: Any, adapter: Any) -> None:  # pragma: no cover - overridden
        """Register the method's hooks through ``handle`` on the denoiser that ``adapter`` describes."""
        raise NotImplementedError

    def check_model(self, adapter: Any) -> None:
        """Raise ``ValueError`` if this config cannot run on the model (e.g. a branch deeper than the UNet)."""

    def approximator(self) -> Any:
        """A new approximator for one cache slot: how a skipped output is produced (``reuse`` by default)."""
        from .approximators import make_approximator

        return make_approximator("reuse")

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
            name: one of ``cls.PRESETS`` (``"quality"``, ``"balanced"``, ``"fast"``) or of ``cls.PAPERS``
                (the authors' published recipes, e.g. ``"paper-dit"``; see ``docs/transformers.md``).
            **overrides: fields to change after the preset is applied.

        Returns:
            A validated config.

        Example:
            >>> cfg = DaToConfig.preset("balanced", patch_size=2)
        """
        named = {**cls.PRESETS, **cls.PAPERS}
        if name not in named:
            raise ValueError(f"{cls.__name__}.preset name={name!r} is unknown; allowed: {sorted(named)}")
        kwargs = {**named[name], **overrides}
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


#: ``forecast_coordinate`` values: what the approximators' ``x`` is (see ``approximators.coordinate``).
COORDINATES: tuple[str, ...] = ("step", "timestep", "sigma")
#: storage dtypes ``cache_dtype`` accepts (``None``: the dtype the model computes in).
CACHE_DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")


@dataclass
class CachingConfig(BaseConfig):
    """The fields every caching method shares: how a skipped output is produced, and how it is stored.

    Args:
        forecast: the approximator of every cache slot: ``"none"`` (reuse the last computed output, the
            published methods' behaviour), ``"taylor"``, ``"hermite"`` or ``"foca"``
            (:mod:`tokencache.core.approximators`).
        forecast_coordinate: the variable the forecasts are polynomials in: ``"step"`` (the step index
            of the context, default), ``"timestep"`` or ``"sigma"`` (the scheduler's value at each step;
            needs a pipeline, whose scheduler tells them). The same on uniform schedules; they differ on
            DPM-Solver / Karras / shifted flow-matching sigmas (``docs/forecasting.md``).
        forecast_order: order of ``"taylor"`` / ``"hermite"`` (1-3); ignored by ``"none"`` and ``"foca"``.
        cache_dtype: store caches in this dtype (``"bfloat16"``, ``"float16"``, ``"float32"``) and cast
            back when they are used; ``None`` keeps the model's dtype (and reuse returns the cached
            tensor itself, no copy).
    """

    forecast: str = field(default="none", kw_only=True)
    forecast_order: int = field(default=1, kw_only=True)
    cache_dtype: str | None = field(default=None, kw_only=True)
    forecast_coordinate: str = field(default="step", kw_only=True)

    def __post_init__(self) -> None:
        self.validate()
        name = type(self).__name__
        order = self.forecast_order
        if isinstance(order, bool) or not isinstance(order, int) or not 0 <= order <= 3:
            _fail(name, "forecast_order", order, "an integer in [0, 3] (taylor/hermite: 1-3)")
        self._check_choice("forecast_coordinate", COORDINATES)
        if self.cache_dtype is not None and self.cache_dtype not in CACHE_DTYPES:
            _fail(name, "cache_dtype", self.cache_dtype, f"None or one of {list(CACHE_DTYPES)}")
        try:
            self.approximator()
        except ValueError as e:
            raise ValueError(f"{name}.{e}") from None

    def approximator(self) -> Any:
        from .approximators import make_approximator

        options: dict[str, Any] = {}
        if self.cache_dtype is not None:
            import torch

            options["dtype"] = getattr(torch, self.cache_dtype)
        return make_approximator(self.forecast, self.forecast_order, **options)


def _read(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"config file {str(path)!r} is not valid {'JSON' if path.suffix == '.json' else 'safe YAML'}: {reason}; "
            "allowed: plain mappings, lists, strings and numbers (no !!python tags)"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping, got {type(data).__name__}")
    return data


def load_config(path: str | Path) -> BaseConfig:
    """Load any tokencache config file, choosing the class by its ``method`` key.

    Example:
        >>> cfg = load_config("strategy.yaml")
        >>> tc.apply(pipe, cfg)
    """
    from .. import methods  # noqa: F401  (fills the registry)

    data = _read(path)
    method = data.get("method")
    if method not in CONFIG_CLASSES:
        raise ValueError(f"config file {str(path)!r} method={method!r} is unknown; allowed: {sorted(CONFIG_CLASSES)}")
    return CONFIG_CLASSES[method].from_dict(data)


