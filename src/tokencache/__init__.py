"""tokencache: training-free acceleration of diffusers pipelines (DaTo, ToCa, DuCa and baselines)."""

from .api import apply, is_applied, remove, summary
from .config import DaToConfig, DeepCacheConfig, ToMeConfig, load_config
from .stats import Summary

try:
    from .config import DuCaConfig, FORAConfig, ToCaConfig  # noqa: F401
except ImportError:  # pragma: no cover - transformer methods not built yet
    pass

__version__ = "0.1.0"

__all__ = [
    "apply",
    "remove",
    "summary",
    "is_applied",
    "Summary",
    "DaToConfig",
    "DeepCacheConfig",
    "ToMeConfig",
    "ToCaConfig",
    "DuCaConfig",
    "FORAConfig",
    "load_config",
]
