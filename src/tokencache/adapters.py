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
class Binding:
    """One hook that ``tc.apply`` registered: where it sits, and the path it follows (if any)."""

    module: torch.nn.Module
    hook: Any
    name: str
    path: str | None = None


def invalidate_registry_caches(module: torch.nn.Module) -> None:
    """Drop the cached child-registry lists below ``module`` (diffusers >= 0.42 caches them)."""
    registry = getattr(module, "_diffusers_hook", None)
    if registry is not None and hasattr(registry, "invalidate_child_registries_cache"):
        registry.invalidate_child_registries_cache()


def _drop_registry(module: torch.nn.Module) -> None:
    """Delete an empty registry, and the plain bound ``forward`` that diffusers leaves on the instance."""
    del module._diffusers_hook
    forward = vars(module).get("forward")
    if getattr(forward, "__self__", None) is module and getattr(forward, "__func__", None) is type(module).forward:
        del module.forward  # the class's own forward again; behaviour unchanged


@dataclass
class Handle:
    """Everything one ``tc.apply`` installed on a denoiser."""

    config: BaseConfig
    denoiser: torch.nn.Module
    family: Family
    state: CallState
    book: MacBook
    pipe: Any = None
    #: the registered hooks, in registration order.
    bindings: list[Binding] = field(default_factory=list)
    #: modules whose diffusers ``HookRegistry`` this handle created (removed again when left empty).
    created: dict[int, torch.nn.Module] = field(default_factory=dict)
    #: token-level module name -> type ("attn1", "attn2", "ff"), for the summary's token fractions.
    token_modules: dict[str, str] = field(default_factory=dict)
    scheduler: Any = None

    def register(self, module: torch.nn.Module, hook: Any, name: str, *, follow: str | None = None) -> None:
        """Register ``hook`` on ``module`` under ``tokencache.<name>`` and track it for removal.

        Args:
            follow: the module's path inside the denoiser, for hooks on leaf layers that adapters replace
                (peft wraps a ``Linear`` in a LoRA layer, and unwraps it again on unload): at the start of each
                call the hook moves to whatever module is at that path now (see :meth:`follow_modules`).
        """
        binding = Binding(module, hook, HOOK_PREFIX + name, follow)
        self._attach(binding)
        self.bindings.append(binding)

    def _attach(self, b: Binding) -> None:
        if not hasattr(b.module, "_diffusers_hook"):
            self.created[id(b.module)] = b.module
        HookRegistry.check_if_exists_or_initialize(b.module).register_hook(b.hook, b.name)

    def _detach(self, b: Binding) -> None:
        registry = getattr(b.module, "_diffusers_hook", None)
        if registry is None:
            return
        registry.remove_hook(b.name, recurse=False)
        if not registry.hooks and self.created.pop(id(b.module), None) is not None:
            _drop_registry(b.module)

    def follow_modules(self) -> None:
        """Move each path-following hook to the module now at its path, if that module changed.

        LoRA loaded after ``apply`` replaces a hooked ``Linear`` by a peft layer that holds it as
        ``base_layer``: the hook moves to the peft layer, so it sees the adapted output. Unloading the
        adapter puts the ``Linear`` back, and the hook follows it back.
        """
        for b in self.bindings:
            if b.path is None:
                continue
            try:
                now = self.denoiser.get_submodule(b.path)
            except AttributeError:  # the path is gone: leave the hook where it is
                continue
            if now is not b.module:
                self._detach(b)
                b.module = now
                self._attach(b)

    def module_name(self, module: torch.nn.Module) -> str:
        for n, m in self.denoiser.named_modules():
            if m is module:
                return n
        raise KeyError("module is not part of the denoiser")

    def remove_hooks(self) -> None:
        """Remove every hook this handle registered, and the registries it created that are left empty.

        Registries that existed before ``apply`` (the user's own diffusers hooks) stay, with their hooks.
        """
        # Newest first, so the hooks on one module come off outermost first: diffusers' ``remove_hook``
        # splices the chain wrongly when an inner hook with ``new_forward`` goes before the one around it.
        for b in reversed(self.bindings):
            self._detach(b)
        self.bindings.clear()
        for module in self.created.values():  # emptied by someone else's remove_hook since apply
            registry = getattr(module, "_diffusers_hook", None)
            if registry is not None and not registry.hooks:
                _drop_registry(module)
        self.created.clear()
        invalidate_registry_caches(self.denoiser)

    def summary(self) -> Summary:
        return build_summary(self.config.method, self.state, self.book, self.token_modules)
