"""The one place where the harness (bench, demo, generate, eval, search) reaches into the tokencache core.

Everything the harness needs from the method side goes through this module: the public API
(``apply`` / ``remove`` / ``summary``), the config registry and loader, MAC counting, and the UNet
structure used by the DaTo search space.

Vocabulary: a *family* is a model family (``"unet"``, ``"dit"``, ``"pixart"``, ``"latte"``; the zoo's
reference families are a subset). A method config says which model *structures* it runs on
(``BaseConfig.structures``: ``"unet"`` or ``"transformer"``, the ``structure`` of a model adapter in
:mod:`tokencache.models`); :data:`STRUCTURE` maps a family to its structure.
"""

from __future__ import annotations

from pathlib import Path

from ..api import apply, is_applied, remove, summary  # noqa: F401  (re-exported)
from ..config import CONFIG_CLASSES, BaseConfig, DaToConfig, DeepCacheConfig, load_config  # noqa: F401
from ..core.accounting import MacBook, count_macs  # noqa: F401
from ..models.sd_unet import unet_units  # noqa: F401

#: model family -> the model structure a method config names in ``BaseConfig.structures``
STRUCTURE = {"unet": "unet", "dit": "transformer", "pixart": "transformer", "latte": "transformer",
             "flux": "transformer", "sd3": "transformer", "wan": "transformer", "qwen": "transformer"}
#: the order presets are listed in (a method's other presets follow, sorted)
PRESET_ORDER = ("quality", "balanced", "fast")
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def method_names() -> list[str]:
    """Registered method names, in registration order."""
    return list(CONFIG_CLASSES)


def applies(method: str, family: str) -> bool:
    """Whether ``method`` runs on models of ``family``."""
    return STRUCTURE.get(family, "unet") in CONFIG_CLASSES[method].structures


def presets_of(method: str) -> list[str]:
    """The presets of ``method``, quality first, fast last."""
    names = list(CONFIG_CLASSES[method].PRESETS)
    return [p for p in PRESET_ORDER if p in names] + sorted(p for p in names if p not in PRESET_ORDER)


def method_specs(family: str, presets: tuple[str, ...] | None = None) -> list[str]:
    """``method:preset`` of every registered method that applies to ``family``.

    Args:
        family: a model family (``"unet"``, ``"dit"``, ``"pixart"``, ``"latte"``).
        presets: only these presets (where a method has them); ``None``: all of each method's presets.
    """
    out = []
    for m in method_names():
        if applies(m, family):
            out += [f"{m}:{p}" for p in presets_of(m) if presets is None or p in presets]
    return out


def is_config_file(spec: str) -> bool:
    return Path(spec).suffix.lower() in CONFIG_SUFFIXES


def parse_method(spec: str, default_preset: str | None = "balanced", what: str = "method=") -> BaseConfig:
    """``method[:preset]`` (e.g. ``dato:fast``) or a config file (``.yaml``/``.yml``/``.json``) -> config.

    Args:
        spec: the text the user gave.
        default_preset: preset used for a bare ``method``; ``None``: the config class's defaults.
        what: how the field is named in error messages, with its separator (e.g. ``"--method "``).

    Raises:
        ValueError: unknown method or preset (naming the allowed ones); FileNotFoundError: a missing file.
    """
    if is_config_file(spec):
        return load_config(spec)
    method, _, preset = spec.partition(":")
    if method not in CONFIG_CLASSES:
        raise ValueError(f"{what}{method!r} is unknown; allowed: {method_names()} (optionally :PRESET) "
                         f"or a config file ({', '.join(CONFIG_SUFFIXES)})")
    cls = CONFIG_CLASSES[method]
    preset = preset or default_preset
    if preset is None:
        return cls()
    if preset not in cls.PRESETS and preset not in cls.PAPERS:
        allowed = presets_of(method) + sorted(cls.PAPERS)
        raise ValueError(f"{what}{spec!r}: preset {preset!r} is unknown for {method!r}; allowed: {allowed}")
    return cls.preset(preset)


def spec_label(spec: str) -> str:
    """The row name of a spec: a config file's stem, else the spec itself."""
    return Path(spec).stem if is_config_file(spec) else spec
