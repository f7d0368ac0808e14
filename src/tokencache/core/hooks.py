"""The hook machinery every method shares: the handle of one ``tc.apply``, its bindings, the call-scoped
hook base, and output slots that route skipped outputs through an approximator.

Hooks are diffusers ``ModelHook``s registered under ``tokencache.<name>`` on existing submodules.

Compile-friendly by construction: the hooks inside the model's block loops take no decision and keep no
books while the model runs. At the start of each denoiser call the step hook (outermost, eager, outside
any graph) calls :meth:`CallScopedHook.prepare` on every hook of the handle: it decides the hook's mode
for this step (compute, skip, compute a token subset, ...), picks the tokens, produces the forecasts of
skipped outputs from their approximators, writes the step's records, and leaves the result on the hook
as :attr:`CallScopedHook.now`, plain attributes and tensors. ``new_forward`` only reads ``now`` and runs
tensor code, so dynamo traces it inline, with guards on a few constants (mode, token count): a
compiled denoiser compiles once per step kind and shape, with no graph break inside its block loop.
Outputs computed during the step are left on ``now`` and fed to their approximators by
:meth:`CallScopedHook.finish`, after the call. Only the step hook's own bookkeeping runs under
:func:`outside_graph` (``torch.compiler.disable``), at the top of the denoiser's frame.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from diffusers.hooks import HookRegistry, ModelHook
from torch.utils._pytree import tree_flatten, tree_unflatten

from .state import CallState, ContextStates

HOOK_PREFIX = "tokencache."

F = TypeVar("F", bound=Callable[..., Any])


def outside_graph(fn: F) -> F:
    """Run ``fn`` eagerly, outside any ``torch.compile`` graph (decisions and bookkeeping)."""
    return functools.wraps(fn)(torch.compiler.disable(fn, recursive=True))  # type: ignore[return-value]


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
    """Everything one ``tc.apply`` installed on a denoiser.

    Attributes:
        config: the method config.
        denoiser: the model the hooks sit on.
        adapter: the model adapter that describes it.
        contexts: the per-cache-context states.
        book: the MAC book.
        pipe: the pipeline, when ``tc.apply`` got one.
    """

    config: Any
    denoiser: torch.nn.Module
    adapter: Any
    contexts: ContextStates
    book: Any
    pipe: Any = None
    #: the registered hooks, in registration order.
    bindings: list[Binding] = field(default_factory=list)
    #: modules whose diffusers ``HookRegistry`` this handle created (removed again when left empty).
    created: dict[int, torch.nn.Module] = field(default_factory=dict)
    #: token-level module name -> role ("attn1", "attn2", "ff"), for the summary's token fractions.
    token_modules: dict[str, str] = field(default_factory=dict)
    scheduler: Any = None
    #: prepended to the names hook state is kept under (``"transformer_2:"`` for Wan 2.2's second
    #: expert, which shares the first one's context states but never its caches).
    prefix: str = ""
    #: handles of further denoisers of the same pipeline accelerated together (Wan 2.2's second expert).
    linked: list[Handle] = field(default_factory=list)
    #: objects prepared before the hooks at each step (e.g. the token-cache step facts), in order.
    first: list[Any] = field(default_factory=list)
    _parts: list[Any] | None = field(default=None, repr=False)

    def step_parts(self) -> list[Any]:
        """What :meth:`prepare_step` prepares, in order: :attr:`first`, then every call-scoped hook.

        Built once per set of hooks (three walks per step otherwise): :meth:`register` and
        :meth:`remove_hooks` drop it.
        """
        if self._parts is None:
            self._parts = [*self.first, *(b.hook for b in self.bindings if isinstance(b.hook, CallScopedHook))]
        return self._parts

    def prepare_first(self, part: Any) -> None:
        """Prepare ``part`` (an object with ``prepare``/``finish``/``now``) before every hook at each step."""
        self.first.append(part)
        self._parts = None

    def prepare_step(self, st: CallState, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        """Decide every hook's mode for the denoiser call that starts now (eager, outside any graph)."""
        if not st.active:
            self.switch_off()
            return
        call = StepCall(module, args, kwargs)
        for part in self.step_parts():
            part.prepare(st, call)

    def finish_step(self, st: CallState) -> None:
        """Feed the outputs computed in the call that just ended to their approximators, then switch off."""
        for part in self.step_parts():
            if st.active:
                part.finish(st)
            part.now = OFF

    def switch_off(self) -> None:
        """Every hook passes calls through unchanged (between steps, in uncached calls, after an error)."""
        for part in self.step_parts():
            part.now = OFF

    @property
    def state(self) -> CallState:
        """The state of the current cache context (the ``"default"`` one outside ``cache_context``)."""
        return self.contexts.current

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
        self._parts = None

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
        ``base_layer``; the hook must sit on the outer layer to see the LoRA term.
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

    def remove_hooks(self) -> None:
        """Remove every hook this handle registered, and the registries it created that are left empty.

        Registries that existed before ``apply`` (the user's own diffusers hooks) stay, with their hooks.
        """
        # Newest first, so the hooks on one module come off outermost first: diffusers' ``remove_hook``
        # splices the chain wrongly when an inner hook with ``new_forward`` goes before the one around it.
        for b in reversed(self.bindings):
            self._detach(b)
        self.bindings.clear()
        self._parts = None
        for module in self.created.values():  # emptied by someone else's remove_hook since apply
            registry = getattr(module, "_diffusers_hook", None)
            if registry is not None and not registry.hooks:
                _drop_registry(module)
        self.created.clear()
        invalidate_registry_caches(self.denoiser)


@dataclass
class StepCall:
    """The denoiser call a step prepares for: the denoiser and its arguments."""

    module: torch.nn.Module
    args: tuple
    kwargs: dict


class Now:
    """A hook's decision for the current step (see :meth:`CallScopedHook.prepare`): plain attributes.

    ``mode`` is ``"off"`` when the hook passes calls through; hooks add what else they need.
    """

    def __init__(self, mode: str = "off", **fields: Any) -> None:
        self.mode = mode
        self.__dict__.update(fields)


#: the decision of a hook between steps: pass every call through.
OFF = Now()


class CallScopedHook(ModelHook):
    """Base of the hooks whose state lives in the per-context :class:`CallState`.

    diffusers' ``HookRegistry.reset_stateful_hooks`` calls ``reset_state`` on every stateful hook. These
    hooks keep nothing of their own to reset: the context states drop every cache at each call
    boundary, and the step hook, the outermost one, abandons an unfinished call when it is reset.

    Subclasses decide in :meth:`prepare` and keep in :meth:`finish` (both eager, per step); their
    ``new_forward`` reads only :attr:`now`. A hook may instead decide inside ``new_forward`` through
    :func:`outside_graph` helpers reading :attr:`st` (simpler; a whole-denoiser ``torch.compile`` then
    graph-breaks at that hook).

    Args:
        contexts: the per-context states of the denoiser.
    """

    _is_stateful = True
    #: this step's decision; :data:`OFF` between steps.
    now: Now = OFF

    def __init__(self, contexts: ContextStates) -> None:
        super().__init__()
        self.contexts = contexts
        self.now = OFF

    def prepare(self, st: CallState, call: StepCall) -> None:
        """Decide this step's :attr:`now` from the context state ``st`` (active); default: off."""
        self.now = OFF

    def finish(self, st: CallState) -> None:
        """After the call: feed what the step computed (left on :attr:`now`) to the approximators."""

    @property
    def st(self) -> CallState:
        """The state of the current cache context (call it only from :func:`outside_graph` code)."""
        return self.contexts.current

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        return module


class OutputSlot:
    """A module output (a tensor or a tuple/list of tensors) produced by one approximator per tensor.

    With ``reuse`` approximators the stored output object itself comes back (no copy), as the
    published caching methods do.

    Args:
        make: builds the approximator of one tensor leaf.
    """

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make
        self.obj: Any = None
        self.spec: Any = None
        self.approx: list[Any] = []
        self.leaves: list[Any] = []

    @property
    def ready(self) -> bool:
        return self.obj is not None

    def update(self, x: float, out: Any) -> None:
        leaves, spec = tree_flatten(out)
        if self.spec != spec or len(self.approx) != len(leaves):
            # non-tensor leaves (SD3's last block returns ``(None, hidden_states)``) are kept as they are
            self.approx = [self.make() if isinstance(leaf, torch.Tensor) else None for leaf in leaves]
            self.spec = spec
        self.leaves = leaves
        for a, leaf in zip(self.approx, leaves):
            if a is not None:
                a.update(x, leaf)
        self.obj = out

    def predict(self, x: float) -> Any:
        if all(a is None or a.name == "reuse" for a in self.approx):
            return self.obj
        return tree_unflatten(
            [leaf if a is None else a.predict(x) for a, leaf in zip(self.approx, self.leaves)], self.spec
        )

    def predict_rows(self, x: float, idx: torch.Tensor) -> Any:
        """Rows ``idx`` (``(B, k)``) of every tensor of :meth:`predict` ``(x)``."""
        return tree_unflatten(
            [leaf if a is None else a.predict_rows(x, idx) for a, leaf in zip(self.approx, self.leaves)], self.spec
        )

    def clear(self) -> None:
        self.obj, self.spec, self.approx, self.leaves = None, None, [], []

    def nbytes(self) -> int:
        return sum(a.nbytes() for a in self.approx if a is not None)
