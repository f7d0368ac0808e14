"""Summary of the last generation and exact MAC accounting with ``torch.utils.flop_counter``.

The step hook notes the (shapes of the) denoiser's inputs once per input shape. MACs are counted
lazily, when a summary is asked for, by running a weightless twin of the denoiser on the ``meta``
device under :class:`~torch.utils.flop_counter.FlopCounterMode` (attention is counted there, unlike
the default CPU SDPA kernel): one twin pass records the inputs of every submodule, and a hook that
runs a module on a token subset registers how to make that module's inputs for ``k`` tokens
(:meth:`MacBook.variant`). Nothing is recorded while the real model runs, so hooks stay traceable.
A step's MACs are the full model's minus what its hooks skipped, plus the bookkeeping matmuls they
report. peft adapter layers (LoRA) of the denoiser are rebuilt on the twin, in the state they had when
the call started, so their MACs are counted too.
"""

from __future__ import annotations

import copy
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode

from .schedule import count_kinds
from .state import CallState, StepRecord

#: ends the prefix of hook names of a second denoiser sharing one MAC book (``"transformer_2:"``).
PREFIX_SEP = ":"


def _to_meta(x: Any) -> Any:
    return torch.empty_like(x, device="meta") if isinstance(x, torch.Tensor) else x


def count_macs(module: torch.nn.Module, args: tuple = (), kwargs: dict | None = None) -> float:
    """Multiply-accumulates of one forward of ``module`` (FLOPs / 2 as counted by flop_counter).

    Run it on a ``meta``-device module and inputs so attention is counted and nothing is computed.
    """
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*args, **(kwargs or {}))
    return counter.get_total_flops() / 2.0


def adapter_layout(model: torch.nn.Module) -> tuple:
    """What of a model's peft adapter layers changes its MACs; ``()`` for a model without any.

    Per adapter layer: its name, its adapters' ranks, the active adapters, and whether adapters are
    disabled or merged into the base weights (then only the base layer runs).
    """
    if "peft" not in sys.modules:  # no model can hold peft layers before peft is imported
        return ()
    from peft.tuners.tuners_utils import BaseTunerLayer

    def ranks(m: Any) -> Any:
        r = getattr(m, "r", None)
        return tuple(sorted(r.items())) if isinstance(r, dict) else r

    return tuple(
        (name, ranks(m), tuple(m.active_adapters), bool(m.disable_adapters), tuple(m.merged_adapters))
        for name, m in model.named_modules()
        if isinstance(m, BaseTunerLayer)
    )


def _add_adapters(twin: torch.nn.Module, configs: dict[str, Any], layout: tuple) -> None:
    """Inject peft adapters into the (meta) ``twin`` and set each layer's state as ``layout`` says."""
    from peft import inject_adapter_in_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, config in configs.items():
        inject_adapter_in_model(copy.deepcopy(config), twin, adapter_name=name)
    layers = dict(twin.named_modules())
    for name, _ranks, active, disabled, merged in layout:
        layer = layers.get(name)
        if isinstance(layer, BaseTunerLayer):
            layer.set_adapter(list(active))
            layer.enable_adapters(not disabled)
            layer.merged_adapters = list(merged)


class MacBook:
    """Remembers the input shapes of hooked modules and counts their MACs on a meta twin.

    Args:
        model: the real denoiser; its class and config build the twin, and its peft adapters (LoRA)
            are rebuilt on it.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.inputs: dict[tuple, tuple[tuple, dict]] = {}
        #: adapter layout at the start of the last call (see :func:`adapter_layout`), and its peft configs.
        self.layout: tuple = ()
        self._configs: dict[str, Any] = {}
        self._macs: dict[tuple, float] = {}
        self._twin: tuple[tuple, torch.nn.Module] | None = None
        #: module name -> makes its inputs for a variant from its full inputs: ``fn(args, kwargs, variant)``.
        self.makers: dict[str, Callable[[tuple, dict, Any], tuple[tuple, dict]]] = {}
        self._captured: set = set()

    def new_call(self) -> None:
        """Note the adapter layout the call that starts now runs with (a walk over the modules)."""
        layout = adapter_layout(self.model)
        if layout != self.layout:
            self.layout = layout
            self._configs = copy.deepcopy(dict(getattr(self.model, "peft_config", None) or {})) if layout else {}

    def want(self, key: tuple | None, name: str, variant: Any) -> bool:
        return (key, name, variant) not in self.inputs

    def note(self, key: tuple | None, name: str, variant: Any, args: tuple, kwargs: dict) -> None:
        """Record the shapes of one module call (``variant`` is ``"full"`` or a token count)."""
        self.inputs[(key, name, variant)] = tree_map(_to_meta, (args, dict(kwargs)))

    def variant(self, name: str, make: Callable[[tuple, dict, Any], tuple[tuple, dict]]) -> None:
        """Register how module ``name``'s (meta) inputs for a variant (a token count) follow from its full ones."""
        self.makers[name] = make

    def _capture(self, key: tuple | None) -> None:
        """One twin pass on the denoiser inputs noted for ``key``: record every submodule's full inputs."""
        self._captured.add(key)
        if (key, "", "full") not in self.inputs:
            return
        args, kwargs = self.inputs[(key, "", "full")]
        handles = []
        for path, module in self.twin().named_modules():
            if not path:
                continue

            def pre(_m: Any, a: tuple, kw: dict, path: str = path) -> None:
                self.inputs.setdefault((key, path, "full"), tree_map(_to_meta, (a, dict(kw))))

            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        try:
            with torch.no_grad():
                self.twin()(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()

    def _inputs(self, key: tuple | None, name: str, variant: Any) -> tuple[tuple, dict]:
        if (key, name, variant) in self.inputs:
            return self.inputs[(key, name, variant)]
        path = name.rpartition(PREFIX_SEP)[2]  # a second expert's modules: same config, same twin
        if variant == "full":
            if (key, path, "full") not in self.inputs and key not in self._captured:
                self._capture(key)
            if (key, path, "full") in self.inputs:
                return self.inputs[(key, path, "full")]
        elif name in self.makers:
            args, kwargs = self._inputs(key, name, "full")
            made = self.makers[name](args, dict(kwargs), variant)
            self.inputs[(key, name, variant)] = made
            return made
        raise KeyError(f"no recorded inputs for module {name!r} ({variant}); was the step run?")

    def twin(self) -> torch.nn.Module:
        """The weightless twin, with the adapter layers of :attr:`layout`."""
        if self._twin is None or self._twin[0] != self.layout:
            dtype = next(self.model.parameters()).dtype
            with torch.device("meta"):
                twin = type(self.model).from_config(self.model.config)
                if self.layout:
                    try:
                        _add_adapters(twin, self._configs, self.layout)
                        if adapter_layout(twin) != self.layout:
                            raise RuntimeError("the adapter layers differ")
                    except Exception as e:  # count without them rather than fail the summary
                        warnings.warn(f"tokencache: MACs exclude the peft adapter layers ({e})", stacklevel=2)
                        twin = type(self.model).from_config(self.model.config)
            twin = (twin.to(dtype) if dtype != torch.float32 else twin).eval()
            self._twin = (self.layout, twin)
        return self._twin[1]

    def macs(self, key: tuple | None, name: str, variant: Any) -> float:
        k = (self.layout, key, name, variant)
        if k not in self._macs:
            args, kwargs = self._inputs(key, name, variant)
            twin = self.twin()
            path = name.rpartition(PREFIX_SEP)[2]  # a second expert's modules: same config, same twin
            module = twin.get_submodule(path) if path else twin
            self._macs[k] = count_macs(module, args, kwargs)
        return self._macs[k]


@dataclass
class Summary:
    """What the last accelerated generation did.

    Step counts are over the denoiser calls of the last generation, every cache context together (one
    call per step for pipelines that batch classifier-free guidance); :attr:`contexts` breaks them down
    per context for pipelines that call the denoiser once per branch.

    Attributes:
        method: the config's method name.
        steps_total / steps_full / steps_partial / steps_reused / steps_aggressive: step counts.
        steps_by_kind: count of every step kind seen (open: a method may add kinds of its own).
        tokens_computed_fraction: over the token-level modules the method manages (pruned
            self-attention for UNet methods; attn1/attn2/ff for transformer methods), tokens computed
            divided by tokens the uncached model computes; skipped modules count as 0.
        tokens_computed_by_module: the same fraction per module role.
        macs_ratio: accelerated / baseline MACs of the denoiser over the generation (exact for the plan
            that ran, bookkeeping matmuls included).
        macs_full_step: MACs of one baseline denoiser call (all CFG rows).
        wall_time_s: wall-clock time from the first denoiser call's start to the last one's end.
        cache_bytes: bytes the caches held at the end of the generation (freed afterwards).
        contexts: cache context name -> ``{"steps_total": ..., "steps_by_kind": {...}}`` of that context.
    """

    method: str
    steps_total: int = 0
    steps_full: int = 0
    steps_partial: int = 0
    steps_reused: int = 0
    steps_aggressive: int = 0
    steps_by_kind: dict[str, int] = field(default_factory=dict)
    tokens_computed_fraction: float = 1.0
    tokens_computed_by_module: dict[str, float] = field(default_factory=dict)
    macs_ratio: float = 1.0
    macs_full_step: float = 0.0
    wall_time_s: float = 0.0
    cache_bytes: int = 0
    contexts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        speed = 1.0 / self.macs_ratio if self.macs_ratio > 0 else float("inf")
        ctx = f" in {len(self.contexts)} contexts ({', '.join(self.contexts)})" if len(self.contexts) > 1 else ""
        return (
            f"tokencache[{self.method}] {self.steps_total} steps{ctx} "
            f"(full {self.steps_full}, partial {self.steps_partial}, reused {self.steps_reused}, "
            f"aggressive {self.steps_aggressive}); tokens computed {self.tokens_computed_fraction:.1%}; "
            f"MACs {self.macs_ratio:.3f}x of baseline ({speed:.2f}x fewer); wall {self.wall_time_s:.3f}s; "
            f"cache {self.cache_bytes / 2**20:.1f} MiB"
        )


def _step_macs(book: MacBook, key: tuple | None, r: StepRecord, full: float) -> float:
    if r.action.kind == "reuse":
        return 0.0
    step = full + r.overhead_macs
    step -= sum(book.macs(key, n, "full") for n in r.skipped)
    for n, (k, _n_tok) in r.partial.items():
        step -= book.macs(key, n, "full") - (book.macs(key, n, k) if k > 0 else 0.0)
    return step


def build_summary(method: str, states: list[CallState], book: MacBook, token_modules: dict[str, str]) -> Summary:
    """Summarise the last finished generation of the cache contexts ``states``.

    Args:
        method: method name for the report.
        states: the context states whose last call belongs to the last generation.
        book: recorded module inputs for MAC counting.
        token_modules: name -> module role ("attn1", "attn2", "ff") of token-level modules.
    """
    states = [st for st in states if st.last_records]
    if not states:
        return Summary(method=method)
    records = [r for st in states for r in st.last_records]
    kinds = count_kinds([r.action for r in records])
    total = base = 0.0
    for st in states:
        full = book.macs(st.last_key, "", "full")
        base += full * len(st.last_records)
        total += sum(_step_macs(book, st.last_key, r, full) for r in st.last_records)
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for r in records:
        for name, mtype in token_modules.items():
            den[mtype] = den.get(mtype, 0.0) + 1.0
            if name in r.partial:
                k, n_tok = r.partial[name]
                num[mtype] = num.get(mtype, 0.0) + k / max(n_tok, 1)
            elif name in r.computed_full:
                num[mtype] = num.get(mtype, 0.0) + 1.0
    by_module = {m: num.get(m, 0.0) / den[m] for m in den}
    frac = sum(num.values()) / sum(den.values()) if den else 1.0
    start = min(st.last_t[0] for st in states)
    end = max(st.last_t[1] for st in states)
    return Summary(
        method=method,
        steps_total=len(records),
        steps_full=kinds["full"],
        steps_partial=kinds["partial"],
        steps_reused=kinds["reuse"],
        steps_aggressive=kinds["aggressive"],
        steps_by_kind={k: v for k, v in kinds.items() if v},
        tokens_computed_fraction=frac,
        tokens_computed_by_module=by_module,
        macs_ratio=total / base if base > 0 else 1.0,
        macs_full_step=book.macs(states[0].last_key, "", "full"),
        wall_time_s=end - start,
        cache_bytes=sum(st.last_cache_bytes for st in states),
        contexts={
            st.name: {
                "steps_total": len(st.last_records),
                "steps_by_kind": {k: v for k, v in count_kinds([r.action for r in st.last_records]).items() if v},
            }
            for st in states
        },
    )
