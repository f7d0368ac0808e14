"""Model families in a registry keyed by class, and the handle that ties an applied method together.

A family is one entry: the denoiser classes it accepts, the config kinds it runs ("unet" or
"transformer") and an ``install(handle)`` function that registers its hooks. Adding a model family
(SD3/FLUX joint blocks, CogVideoX, Wan...) means one new module that calls :func:`register_family`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks import HookRegistry

from .config import BaseConfig
from .state import CallState
from .stats import MacBook, Summary, build_summary

HOOK_PREFIX = "tokencache."


@dataclass
class Family:
    name: str
    classes: tuple[type, ...]
    kind: str
    install: Callable[[Handle], None]


FAMILIES: list[Family] = []


def register_family(family: Family) -> Family:
    """Add a model family to the registry (later entries win for the same class)."""
    FAMILIES.insert(0, family)
    return family


def find_family(denoiser: torch.nn.Module) -> Family:
    for fam in FAMILIES:
        if isinstance(denoiser, fam.classes):
            return fam
    supported = sorted({c.__name__ for f in FAMILIES for c in f.classes})
    raise TypeError(
        f"tokencache does not support denoiser class {type(denoiser).__name__}; supported classes: {supported}"
    )


@dataclass
class Handle:
    """Everything one ``tc.apply`` installed on a denoiser."""

    config: BaseConfig
    denoiser: torch.nn.Module
    family: Family
    state: CallState
    book: MacBook
    pipe: Any = None
    hook_names: list[str] = field(default_factory=list)
    #: token-level module name -> type ("attn1", "attn2", "ff"), for the summary's token fractions.
    token_modules: dict[str, str] = field(default_factory=dict)
    scheduler: Any = None

    def register(self, module: torch.nn.Module, hook: Any, name: str) -> None:
        """Register ``hook`` on ``module`` under ``tokencache.<name>`` and track it for removal."""
        full = HOOK_PREFIX + name
        HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, full)
        if full not in self.hook_names:
            self.hook_names.append(full)

    def module_name(self, module: torch.nn.Module) -> str:
        for n, m in self.denoiser.named_modules():
            if m is module:
                return n
        raise KeyError("module is not part of the denoiser")

    def remove_hooks(self) -> None:
        # Outermost first: removing an inner hook that has ``new_forward`` before the hook wrapped
        # around it would splice the chain wrongly.
        registry = HookRegistry.check_if_exists_or_initialize(self.denoiser)
        for name in reversed(self.hook_names):
            registry.remove_hook(name, recurse=True)
        self.hook_names.clear()

    def summary(self) -> Summary:
        return build_summary(self.config.method, self.state, self.book, self.token_modules)
