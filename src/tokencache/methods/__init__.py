"""Methods: one module per method (config + plan + install), and the registry everything lists them from.

| module | config | structure | shared hooks |
|---|---|---|---|
| ``dato`` | :class:`DaToConfig` | unet | :mod:`.unet_branch` (branch skipping, pruned self-attention) |
| ``deepcache`` | :class:`DeepCacheConfig` | unet | :mod:`.unet_branch` |
| ``tome`` | :class:`ToMeConfig` | unet | :mod:`.unet_branch` |
| ``toca`` | :class:`ToCaConfig` | transformer | :mod:`.token_cache` (token-wise module caching) |
| ``duca`` | :class:`DuCaConfig` | transformer | :mod:`.token_cache` |
| ``fora`` | :class:`FORAConfig` | transformer | :mod:`.token_cache` |

A method is a :class:`~tokencache.core.config.BaseConfig` subclass with a ``method`` name, ``PRESETS``,
``structures``, ``plan(num_steps)`` and ``install(handle, adapter)``; defining it registers it in
:data:`~tokencache.core.config.CONFIG_CLASSES`. Adding one is a new module here and its import below.
"""

from __future__ import annotations

from ..core.config import CONFIG_CLASSES, BaseConfig
from .dato import DaToConfig
from .deepcache import DeepCacheConfig
from .duca import DuCaConfig
from .fora import FORAConfig
from .toca import ToCaConfig
from .tome import ToMeConfig


def method_names() -> list[str]:
    """Every registered method name, in registration order."""
    return list(CONFIG_CLASSES)


def config_class(method: str) -> type[BaseConfig]:
    """The config class of ``method``; ``ValueError`` listing the allowed names otherwise."""
    if method not in CONFIG_CLASSES:
        raise ValueError(f"method={method!r} is unknown; allowed: {sorted(CONFIG_CLASSES)}")
    return CONFIG_CLASSES[method]


def methods_for(structure: str) -> list[type[BaseConfig]]:
    """The config classes of the methods that run on a model adapter of ``structure``."""
    return [cls for cls in CONFIG_CLASSES.values() if structure in cls.structures]


__all__ = [
    "DaToConfig",
    "DeepCacheConfig",
    "ToMeConfig",
    "ToCaConfig",
    "DuCaConfig",
    "FORAConfig",
    "method_names",
    "config_class",
    "methods_for",
]
