"""The method configs under their historical import path (``tokencache.config``).

The configs live in :mod:`tokencache.methods` (one module per method) and their base in
:mod:`tokencache.core.config`; this module re-exports them so existing imports and YAML files keep working.
"""

from .core.config import CONFIG_CLASSES, BaseConfig, load_config
from .methods import DaToConfig, DeepCacheConfig, DuCaConfig, FORAConfig, ToCaConfig, ToMeConfig
from .methods.token_cache import DIT_MODULES, DIT_SCORES, DUCA_LETTERS, TokenCacheSpec
from .methods.unet_branch import PruneSpec

__all__ = [
    "CONFIG_CLASSES",
    "BaseConfig",
    "load_config",
    "DaToConfig",
    "DeepCacheConfig",
    "ToMeConfig",
    "ToCaConfig",
    "DuCaConfig",
    "FORAConfig",
    "TokenCacheSpec",
    "PruneSpec",
    "DIT_MODULES",
    "DIT_SCORES",
    "DUCA_LETTERS",
]
