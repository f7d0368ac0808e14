"""A new method and a new model family are each one definition plus its registry entry.

``EveryOtherConfig`` is a whole method in a few lines (config + plan + install) with a step kind of its
own; ``TinyNet`` is a model family the shipped transformer methods run on once its adapter is
registered. Both are picked up by ``tc.apply`` / ``tc.summary`` without touching the core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.modeling_utils import ModelMixin

import tokencache as tc
from tokencache.core.config import CONFIG_CLASSES, CachingConfig
from tokencache.core.hooks import CallScopedHook, OutputSlot, outside_graph
from tokencache.core.schedule import StepAction
from tokencache.models import ADAPTERS, BlockIO, ModelAdapter, register_adapter


# ---- a method: on "echo" steps the denoiser's output comes from its slot --------------------------
class _EchoHook(CallScopedHook):
    def __init__(self, contexts, config):
        super().__init__(contexts)
        self.config = config

    @outside_graph
    def _echo(self):
        st = self.st
        slot = st.get("echo", lambda: OutputSlot(self.config.approximator))
        if st.action.kind != "echo" or not slot.ready:
            return None
        st.record.skipped.append("")  # the whole denoiser ("") was skipped: the MACs book subtracts it
        return slot.predict(float(st.step))

    @outside_graph
    def _keep(self, out):
        self.st.get("echo", lambda: OutputSlot(self.config.approximator)).update(float(self.st.step), out)

    def new_forward(self, module, *args, **kwargs):
        out = self._echo()
        if out is None:
            out = self.fn_ref.original_forward(*args, **kwargs)
            self._keep(out)
        return out


@pytest.fixture
def every_other():
    """The method, defined (and so registered) only for the test that asks for it."""

    @dataclass
    class EveryOtherConfig(CachingConfig):
        method: ClassVar[str] = "test-every-other"
        structures: ClassVar[tuple[str, ...]] = ("transformer",)
        PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"balanced": {}}

        def plan(self, num_steps):
            return [StepAction("full" if i % 2 == 0 else "echo") for i in range(num_steps)]

        def install(self, handle, adapter):
            handle.register(handle.denoiser, _EchoHook(handle.contexts, self), "echo")

    yield EveryOtherConfig
    del CONFIG_CLASSES[EveryOtherConfig.method]


# ---- a family: a plain stack of BasicTransformerBlocks over (B, N, C) tokens ----------------------
class TinyNet(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, dim: int = 16, layers: int = 2, side: int = 4):
        super().__init__()
        self.blocks = torch.nn.ModuleList(BasicTransformerBlock(dim, 2, dim // 2) for _ in range(layers))

    def forward(self, hidden_states, timestep=None):
        for blk in self.blocks:
            hidden_states = blk(hidden_states)
        return (hidden_states,)


@pytest.fixture
def tiny_family():
    adapter = register_adapter(ModelAdapter(
        name="test-tiny-net", classes=("TinyNet",), structure="transformer", block_io=BlockIO("hidden_states"),
        roles={"attn1": "attn1", "ff": "ff"}, block_classes=("BasicTransformerBlock",),
        stacks=lambda m: [("blocks", m.blocks)], token_grid=lambda m, x, kw: (m.config.side, m.config.side),
    ))
    yield adapter
    ADAPTERS.remove(adapter)


def _calls(model, n=6):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 16, generator=g)
    with torch.no_grad():
        return [model(x + 0.1 * i)[0] for i in range(n)]


def test_a_new_method_is_one_class_and_its_registry_entry(tiny_family, every_other):
    EveryOtherConfig = every_other
    assert CONFIG_CLASSES["test-every-other"] is EveryOtherConfig
    torch.manual_seed(0)
    net = TinyNet().eval()
    base = _calls(net)
    tc.apply(net, EveryOtherConfig(), num_inference_steps=6)
    out = _calls(net)
    s = tc.summary(net)
    tc.remove(net)
    assert s.steps_by_kind == {"full": 3, "echo": 3} and s.steps_total == 6
    assert all(torch.equal(out[i], base[i]) for i in (0, 2, 4))
    assert all(out[i] is out[i - 1] for i in (1, 3, 5))  # reuse: the cached output itself
    assert s.macs_ratio == pytest.approx(0.5)
    # forecasting comes with the shared fields: a first-order forecast of the linear ramp
    tc.apply(net, EveryOtherConfig(forecast="taylor", forecast_order=1), num_inference_steps=6)
    fc = _calls(net)
    tc.remove(net)
    assert torch.allclose(fc[3], base[2] + (base[2] - base[0]) / 2)
    assert all(torch.equal(a, b) for a, b in zip(_calls(net), base))


def test_a_new_family_runs_the_shipped_transformer_methods(tiny_family):
    torch.manual_seed(0)
    net = TinyNet().eval()
    base = _calls(net)
    for cfg in (tc.ToCaConfig.preset("balanced"), tc.DuCaConfig.preset("fast"), tc.FORAConfig.preset("balanced")):
        tc.apply(net, cfg, num_inference_steps=6)
        out = _calls(net)
        s = tc.summary(net)
        tc.remove(net)
        assert s.steps_total == 6 and s.macs_ratio < 1.0 and all(not o.isnan().any() for o in out)
        assert set(s.tokens_computed_by_module) == {"attn1", "ff"}
    assert all(torch.equal(a, b) for a, b in zip(_calls(net), base))


def test_an_unregistered_class_is_refused_with_the_supported_list():
    with pytest.raises(TypeError, match="supported classes"):
        tc.apply(TinyNet(), tc.ToCaConfig())
