"""torch.compile with a method applied: compiled once per step kind and shape, never recompiled per step.

The hooks take their decisions in functions run outside the graph (``torch.compiler.disable``), so
dynamo sees each step's decision as a few constants. Bound checked here: the graphs compiled over a
whole call are at most (distinct step kinds of the plan) x (graphs of an all-full call), and a second
call with the same shapes compiles nothing.
"""

from __future__ import annotations

import pytest
import torch

import tokencache as tc
from conftest import tiny_unet
from test_dit import tiny_dit, tiny_pixart
from tokencache.config import CONFIG_CLASSES

dynamo = pytest.importorskip("torch._dynamo")
from torch._dynamo.utils import counters  # noqa: E402

STEPS = 8


def _dit_call(model):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    y = torch.tensor([1, 1000])
    return [model(x + 0.1 * i, timestep=torch.tensor([900 - 100 * i] * 2), class_labels=y).sample for i in range(STEPS)]


def _pixart_call(model):
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, 24, generator=g)
    return [
        model(x + 0.1 * i, encoder_hidden_states=c, timestep=torch.tensor([900 - 100 * i] * 2),
              added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
        for i in range(STEPS)
    ]


def _unet_call(model):
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 7, 32, generator=g)
    return [model(x + 0.1 * i, torch.tensor([900 - 100 * i] * 2), encoder_hidden_states=c).sample for i in range(STEPS)]


def _step_kinds(cfg) -> int:
    """Distinct (step kind, depth, ratio, forecast order in use) of the plan: the graph bound per call.

    A forecasting approximator holds ``min(order, full steps so far)`` differences, so its first
    interval traces a lower-order graph than later ones; reuse (order 0 throughout) adds nothing.
    """
    order = getattr(cfg, "forecast_order", 0) if getattr(cfg, "forecast", "none") != "none" else 0
    seen, fulls = set(), 0
    for a in cfg.plan(STEPS):
        seen.add((a.kind, a.depth, a.ratio, min(order, max(fulls - (a.kind != "full"), 0))))
        fulls += a.kind == "full"
    return len(seen)


def _regional(model, backend):
    for m in model.modules():
        if type(m).__name__ == "BasicTransformerBlock":
            m.compile(backend=backend)
    return model


def _compiled_runs(model, call, cfg, backend, mode):
    """(eager outputs, compiled outputs, graphs after call 1, graphs after call 2, skipped frames)."""
    tc.apply(model, cfg, num_inference_steps=STEPS, cfg=True)
    try:
        with torch.no_grad():
            eager = call(model)
            dynamo.reset()
            counters.clear()
            compiled = torch.compile(model, backend=backend) if mode == "whole" else _regional(model, backend)
            first = call(compiled)
            g1 = counters["stats"]["unique_graphs"]
            call(compiled)
            g2 = counters["stats"]["unique_graphs"]
        skipped = [k for k in counters["unimplemented"] if "frame skipped" in k]
        kinds = _step_kinds(cfg)
        return eager, first, g1, g2, skipped, kinds
    finally:
        if mode != "whole":  # regional compilation replaced the blocks' forwards: undo it
            for m in model.modules():
                if getattr(m, "_compiled_call_impl", None) is not None:
                    m._compiled_call_impl = None
        tc.remove(model)
        dynamo.reset()


def _assert_compiled_like_eager(eager, first, g1, g2, skipped, bound, whole=False):
    """No frame fell back to eager, nothing recompiled, at most ``bound`` graphs, outputs equal eager."""
    assert not skipped, skipped
    if whole:
        assert not _breaks_outside_top_level()
    assert g2 == g1, "the second call recompiled"
    assert 0 < g1 <= bound
    for a, b in zip(eager, first):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_regional_inductor_toca_compiles_once_per_step_kind():
    net = tiny_dit(layers=2)
    _, _, g_full, _, _, _ = _compiled_runs(net, _dit_call, tc.FORAConfig(interval=1), "eager", "regional")
    eager, first, g1, g2, skipped, kinds = _compiled_runs(
        net, _dit_call, tc.ToCaConfig.preset("balanced"), "inductor", "regional"
    )
    _assert_compiled_like_eager(eager, first, g1, g2, skipped, kinds * g_full)


@pytest.mark.parametrize(
    "cfg",
    [tc.DuCaConfig.preset("fast"), tc.FORAConfig.preset("balanced"), tc.ToCaConfig.preset("fast", score="attention")],
    ids=["duca", "fora", "toca-attention"],
)
def test_regional_transformer_methods_do_not_recompile(cfg):
    net = tiny_dit(layers=2)
    eager, first, g1, g2, skipped, _ = _compiled_runs(net, _dit_call, cfg, "eager", "regional")
    assert not skipped and g2 == g1 > 0
    for a, b in zip(eager, first):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", ["dato", "deepcache", "tome"])
def test_unet_compile_repeated_blocks_with_every_unet_method(method):
    unet = tiny_unet()
    cfg = tc.config.CONFIG_CLASSES[method].preset("balanced")
    tc.apply(unet, cfg, num_inference_steps=STEPS, cfg=True)
    try:
        with torch.no_grad():
            eager = _unet_call(unet)
            dynamo.reset()
            counters.clear()
            unet.compile_repeated_blocks(backend="eager")  # diffusers' regional compilation
            first = _unet_call(unet)
            g1 = counters["stats"]["unique_graphs"]
            _unet_call(unet)
            g2 = counters["stats"]["unique_graphs"]
    finally:
        tc.remove(unet)
        dynamo.reset()
    assert not [k for k in counters["unimplemented"] if "frame skipped" in k]
    assert g2 == g1 > 0
    for a, b in zip(eager, first):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def _breaks_outside_top_level() -> list[str]:
    """Graph-break reasons naming a tokencache function other than the step hook's (top of the frame)."""
    top = ("StepHook.", "OutputReuseHook.")
    reasons = [*counters["graph_break"], *counters["unimplemented"]]
    return [r.split("\n")[1][:160] for r in reasons if "tokencache" in r or "Hook" in r if not any(t in r for t in top)]


_WHOLE = [(name, cls.structures[0]) for name, cls in CONFIG_CLASSES.items()]
#: graphs of an all-full call in whole-denoiser mode, per structure (measured once per test process)
_G_FULL: dict[str, int] = {}


@pytest.mark.parametrize(("method", "structure"), _WHOLE, ids=[m for m, _ in _WHOLE])
def test_whole_denoiser_compile_every_method(method, structure):
    """``torch.compile(denoiser)``: no frame falls back to eager, one graph per step kind, no recompile.

    The hooks inside the block loop read decisions taken before the call, so the only graph breaks are
    the step hook's own, at the top of the denoiser's frame; the bound is the plan's distinct step kinds
    times the graphs of an all-full call.
    """
    transformer = structure == "transformer"
    net = tiny_dit(layers=2) if transformer else tiny_unet()
    call = _dit_call if transformer else _unet_call
    if structure not in _G_FULL:
        all_full = tc.FORAConfig(interval=1) if transformer else tc.DeepCacheConfig(interval=1)
        _G_FULL[structure] = _compiled_runs(net, call, all_full, "eager", "whole")[2]
    g_full = _G_FULL[structure]
    cfg = CONFIG_CLASSES[method].preset("fast")
    eager, first, g1, g2, skipped, kinds = _compiled_runs(net, call, cfg, "eager", "whole")
    _assert_compiled_like_eager(eager, first, g1, g2, skipped, kinds * g_full, whole=True)


@pytest.mark.parametrize(
    "cfg",
    [tc.ToCaConfig.preset("balanced"), tc.ToCaConfig.preset("fast", score="attention", forecast="taylor"),
     tc.DuCaConfig.preset("fast", score="cross_entropy", forecast="foca")],
    ids=["toca-inductor", "toca-attention-taylor", "duca-entropy-foca"],
)
def test_whole_denoiser_compile_transformer_variants(cfg):
    """Scores captured inside blocks and forecasting approximators trace too (inductor for the first)."""
    pixart = cfg.score == "cross_entropy"
    net, call = (tiny_pixart(), _pixart_call) if pixart else (tiny_dit(layers=2), _dit_call)
    backend = "inductor" if cfg.forecast == "none" else "eager"
    eager, first, g1, g2, skipped, kinds = _compiled_runs(net, call, cfg, backend, "whole")
    _assert_compiled_like_eager(eager, first, g1, g2, skipped, kinds, whole=True)


@pytest.mark.parametrize(("method", "mode"), [("toca", "regional"), ("fora", "regional"), ("duca", "whole")])
def test_flux_compile_does_not_recompile(method, mode):
    """FLUX (joint and single-stream blocks): diffusers' regional compile, and ``torch.compile(model)``."""
    from mmdit_tiny import flux_inputs, tiny_flux

    model = tiny_flux()
    g = torch.Generator().manual_seed(0)
    steps = [flux_inputs(2, g) for _ in range(STEPS)]

    def call(m):
        return [m(*a, timestep=torch.full((2,), 1.0 - i / STEPS), **kw)[0] for i, (a, kw) in enumerate(steps)]

    cfg = CONFIG_CLASSES[method].preset("fast")
    tc.apply(model, cfg, num_inference_steps=STEPS, cfg=False)
    try:
        with torch.no_grad():
            eager = call(model)
            dynamo.reset()
            counters.clear()
            if mode == "whole":
                compiled = torch.compile(model, backend="eager")
            else:
                model.compile_repeated_blocks(backend="eager")
                compiled = model
            first = call(compiled)
            g1 = counters["stats"]["unique_graphs"]
            call(compiled)
            g2 = counters["stats"]["unique_graphs"]
    finally:
        if mode != "whole":
            for m in model.modules():
                if getattr(m, "_compiled_call_impl", None) is not None:
                    m._compiled_call_impl = None
        tc.remove(model)
        dynamo.reset()
    assert not [k for k in counters["unimplemented"] if "frame skipped" in k]
    assert g2 == g1 > 0
    if mode == "whole":
        assert not _breaks_outside_top_level()
        assert g1 <= _step_kinds(cfg) < STEPS
    for a, b in zip(eager, first):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_hooks_decide_before_the_call_and_are_off_between_calls():
    """Every hook's decision is prepared at the step's start and switched off after it (and after an error)."""
    from tokencache.core.hooks import OFF

    net = tiny_dit(layers=2)
    tc.apply(net, tc.DuCaConfig.preset("fast"), num_inference_steps=STEPS, cfg=True)
    handle = net._tokencache
    seen: set[str] = set()
    block = net.transformer_blocks[1]
    orig = block.ff.forward

    def spy(*a, **kw):  # inside the call: the ff hook holds this step's decision
        seen.add(handle.bindings[[b.module for b in handle.bindings].index(block.ff)].hook.now.mode)
        return orig(*a, **kw)

    try:
        with torch.no_grad():
            _dit_call(net)
            assert all(p.now is OFF for p in handle.step_parts())
            block.ff.forward = spy
            _dit_call(net)
            block.ff.forward = lambda *a, **kw: (_ for _ in ()).throw(RuntimeError("boom"))
            with pytest.raises(RuntimeError, match="boom"):
                _dit_call(net)
            assert all(p.now is OFF for p in handle.step_parts())
    finally:
        block.ff.forward = orig
        tc.remove(net)
    assert {"full", "partial"} <= seen
