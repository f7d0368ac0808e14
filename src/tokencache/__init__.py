"""tokencache: training-free acceleration of diffusers pipelines (DaTo, ToCa, DuCa and baselines).

The public names are loaded on first use, so ``import tokencache`` (and ``tokencache --help``) does not
import torch or diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it
_PUBLIC = {
    "apply": "api",
    "remove": "api",
    "summary": "api",
    "is_applied": "api",
    "Summary": "core.accounting",
    "load_config": "core.config",
    "DaToConfig": "methods",
    "DeepCacheConfig": "methods",
    "ToMeConfig": "methods",
    "ToCaConfig": "methods",
    "DuCaConfig": "methods",
    "FORAConfig": "methods",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'tokencache' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
