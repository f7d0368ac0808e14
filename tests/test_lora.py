"""LoRA loaded before or after ``tc.apply``: SD through diffusers' LoRA loader, PixArt through peft.

The SD LoRA takes the realistic path: a UNet LoRA with random non-zero weights is saved with
``save_lora_weights`` and loaded back by path with ``load_lora_weights`` (offline). PixArt pipelines have
no diffusers LoRA loader; their LoRAs are peft adapters, injected into the transformer or loaded with
``PeftModel.from_pretrained`` (the transformer is then a ``PeftModel``, which ``tc.apply`` unwraps).
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, StableDiffusionPipeline
from peft import LoraConfig, PeftModel, get_peft_model, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._pytree import tree_map

import tokencache as tc
from conftest import run_sd, tiny_text_encoder, tiny_unet, tiny_vae
from test_dit import run_pixart, tiny_pixart
from tokencache.core.accounting import count_macs

STEPS = 6
#: every step full, nothing pruned: must reproduce the uncached output.
SD_ALL_FULL = tc.DaToConfig(cache_plan=["full"], prune_ratio=0.0)
#: partial steps that recompute every token of attn1, attn2 and ff: must reproduce the uncached output.
PIXART_ALL_FRESH = tc.ToCaConfig(interval=3, fresh_ratio=1.0, module_weights={"attn1": 1.0, "attn2": 1.0, "ff": 1.0},
                                 partial_modules=["attn1", "attn2", "ff"])


def lora_config() -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)


def no_registries(model: torch.nn.Module) -> bool:
    return not any(hasattr(m, "_diffusers_hook") for m in model.modules())


def lora_acts(out: torch.Tensor, lora_ref: torch.Tensor, base: torch.Tensor) -> bool:
    """An accelerated output is near the uncached LoRA output: at most half as far as from the no-LoRA one."""
    return bool((out - lora_ref).norm() < 0.5 * (out - base).norm())


def recorded_inputs(model: torch.nn.Module) -> tuple[tuple, dict]:
    h = model._tokencache
    return h.book.inputs[(h.state.last_key, "", "full")]


def plain_macs(model: torch.nn.Module, inputs: tuple[tuple, dict]) -> float:
    """MACs of one call of ``model``'s architecture without any adapter layer."""
    with torch.device("meta"):
        twin = type(model).from_config(model.config)
    return count_macs(twin, *inputs)


def real_macs(model: torch.nn.Module, inputs: tuple[tuple, dict]) -> float:
    """MACs of one call of the real model (LoRA layers included), math attention so flop_counter sees it."""
    zeros = tree_map(lambda t: torch.zeros(t.shape, dtype=t.dtype) if isinstance(t, torch.Tensor) else t, inputs)
    with sdpa_kernel(SDPBackend.MATH):
        return count_macs(model, *zeros)


# ---- Stable Diffusion: diffusers' LoRA loader ----------------------------------------------------


@pytest.fixture(scope="module")
def sd_lora(tmp_path_factory):
    """Path of a UNet LoRA with random non-zero weights, saved as diffusers saves LoRAs."""
    unet = tiny_unet()
    torch.manual_seed(1)
    unet.add_adapter(lora_config())
    path = tmp_path_factory.mktemp("sd_lora")
    StableDiffusionPipeline.save_lora_weights(path, unet_lora_layers=get_peft_model_state_dict(unet))
    return path


@pytest.fixture
def make_sd(sd_components):
    """Pipelines with their own UNet and text encoder (the shared ones stay LoRA-free); removed afterwards."""
    made = []

    def make(lora=None):
        pipe = StableDiffusionPipeline(**{**sd_components, "unet": tiny_unet(), "text_encoder": tiny_text_encoder()})
        pipe.set_progress_bar_config(disable=True)
        made.append(pipe)
        if lora is not None:
            pipe.load_lora_weights(lora, adapter_name="style")
        return pipe

    yield make
    for pipe in made:
        tc.remove(pipe)


@pytest.fixture
def sd_refs(make_sd, sd_lora):
    """Uncached outputs without and with the LoRA."""
    base = run_sd(make_sd(), steps=STEPS)
    lora = run_sd(make_sd(sd_lora), steps=STEPS)
    assert (lora - base).abs().max() > 1.0  # the LoRA changes the output clearly (|base| <= ~20)
    return base, lora


@pytest.mark.parametrize("when", ["before", "after"])
def test_sd_lora_is_active_counted_and_removed_cleanly(make_sd, sd_lora, sd_refs, when):
    base, lora_ref = sd_refs
    pipe = make_sd(sd_lora if when == "before" else None)
    tc.apply(pipe, SD_ALL_FULL)
    if when == "after":
        pipe.load_lora_weights(sd_lora, adapter_name="style")
    out = run_sd(pipe, steps=STEPS)
    assert (out - lora_ref).abs().max() <= 1e-5
    s = tc.summary(pipe)
    assert s.macs_ratio == pytest.approx(1.0)
    inputs = recorded_inputs(pipe.unet)
    tc.remove(pipe)
    assert torch.equal(run_sd(pipe, steps=STEPS), lora_ref)
    assert no_registries(pipe.unet)
    # the MAC count includes the LoRA layers: it equals the real LoRA UNet's, above the plain UNet's
    assert s.macs_full_step == real_macs(pipe.unet, inputs) > plain_macs(pipe.unet, inputs)


def test_sd_lora_with_an_accelerating_preset_before_or_after_apply(make_sd, sd_lora, sd_refs):
    base, lora_ref = sd_refs
    outs, summaries = [], []
    for when in ("before", "after"):
        pipe = make_sd(sd_lora if when == "before" else None)
        tc.apply(pipe, tc.DaToConfig.preset("balanced"))
        if when == "after":
            pipe.load_lora_weights(sd_lora, adapter_name="style")
        outs.append(run_sd(pipe, steps=STEPS))
        summaries.append(tc.summary(pipe))
        tc.remove(pipe)
        assert torch.equal(run_sd(pipe, steps=STEPS), lora_ref)
        assert no_registries(pipe.unet)
    out, s = outs[0], summaries[0]
    assert torch.equal(outs[1], out) and summaries[1].macs_ratio == s.macs_ratio
    assert out.shape == lora_ref.shape and torch.isfinite(out).all() and not torch.equal(out, lora_ref)
    assert lora_acts(out, lora_ref, base)
    assert s.steps_partial > 0 and 0.0 < s.macs_ratio < 1.0


def _run_and_macs(pipe):
    out = run_sd(pipe, steps=STEPS)
    return out, tc.summary(pipe).macs_full_step


def test_sd_lora_disabled_reweighted_and_unloaded_while_applied(make_sd, sd_lora, sd_refs):
    base, lora_ref = sd_refs
    pipe = make_sd(sd_lora)
    unet = pipe.unet
    tc.apply(pipe, SD_ALL_FULL)
    out, lora_macs = _run_and_macs(pipe)
    assert (out - lora_ref).abs().max() <= 1e-5
    plain = plain_macs(unet, recorded_inputs(unet))
    unet.disable_adapters()
    out, macs = _run_and_macs(pipe)
    assert (out - base).abs().max() <= 1e-5 and macs == plain  # disabled LoRA layers run only their base layer
    unet.enable_adapters()
    out, macs = _run_and_macs(pipe)
    assert (out - lora_ref).abs().max() <= 1e-5 and macs == lora_macs
    pipe.set_adapters("style", adapter_weights=0.0)
    out, macs = _run_and_macs(pipe)
    assert (out - base).abs().max() <= 1e-5 and macs == lora_macs  # a zero-weight LoRA still runs
    pipe.set_adapters("style", adapter_weights=1.0)
    pipe.unload_lora_weights()
    assert not any(isinstance(m, BaseTunerLayer) for m in unet.modules())
    out, macs = _run_and_macs(pipe)
    assert (out - base).abs().max() <= 1e-5 and macs == plain
    tc.remove(pipe)
    assert torch.equal(run_sd(pipe, steps=STEPS), base) and no_registries(unet)


def test_sd_lora_fused_while_applied(make_sd, sd_lora, sd_refs):
    _, lora_ref = sd_refs
    pipe = make_sd(sd_lora)
    tc.apply(pipe, SD_ALL_FULL)
    _, lora_macs = _run_and_macs(pipe)
    plain = plain_macs(pipe.unet, recorded_inputs(pipe.unet))
    pipe.fuse_lora(components=["unet"])
    out, macs = _run_and_macs(pipe)
    assert torch.allclose(out, lora_ref, rtol=1e-4, atol=1e-4) and macs == plain  # merged into the base weights
    pipe.unfuse_lora(components=["unet"])
    out, macs = _run_and_macs(pipe)
    assert torch.allclose(out, lora_ref, rtol=1e-4, atol=1e-4) and macs == lora_macs


# ---- PixArt: peft adapters ------------------------------------------------------------------------


def pixart_pipe(transformer: torch.nn.Module) -> PixArtAlphaPipeline:
    pipe = PixArtAlphaPipeline(tokenizer=None, text_encoder=None, vae=tiny_vae(), transformer=transformer,
                               scheduler=DPMSolverMultistepScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def add_lora(transformer: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(3)
    return inject_adapter_in_model(lora_config(), transformer)


@pytest.fixture(scope="module")
def pixart_refs():
    """Uncached outputs without and with the LoRA."""
    base = run_pixart(pixart_pipe(tiny_pixart()))
    lora = run_pixart(pixart_pipe(add_lora(tiny_pixart())))
    assert (lora - base).abs().max() > 1.0
    return base, lora


def applied_pixart_with_lora(cfg, when):
    """A tiny PixArt pipeline with ``cfg`` applied and a LoRA added ``"before"`` or ``"after"`` apply."""
    net = tiny_pixart()
    pipe = pixart_pipe(add_lora(net) if when == "before" else net)
    tc.apply(pipe, cfg)
    if when == "after":
        add_lora(net)
    return net, pipe


@pytest.mark.parametrize("when", ["before", "after"])
def test_pixart_lora_is_active_counted_and_removed_cleanly(pixart_refs, when):
    base, lora_ref = pixart_refs
    net, pipe = applied_pixart_with_lora(PIXART_ALL_FRESH, when)
    try:
        assert (run_pixart(pipe) - lora_ref).abs().max() <= 1e-5
        s = tc.summary(pipe)
        assert s.steps_partial > 0 and s.macs_ratio == pytest.approx(1.0)
        inputs = recorded_inputs(net)
    finally:
        tc.remove(pipe)
    assert torch.equal(run_pixart(pipe), lora_ref) and no_registries(net)
    assert s.macs_full_step == real_macs(net, inputs) > plain_macs(net, inputs)


@pytest.mark.parametrize("score", ["vnorm", "attention", "cross_entropy"])
def test_pixart_lora_after_apply_runs_exactly_as_before_apply(pixart_refs, score):
    """Token scores come from hooks on ``to_q``/``to_k``/``to_v``; LoRA loaded after apply wraps those
    layers, and the hooks move onto the LoRA layers so the scores see the adapted projections."""
    base, lora_ref = pixart_refs
    cfg = tc.ToCaConfig.preset("balanced", score=score, spatial_grid=4)
    outs, ratios = [], []
    for when in ("before", "after"):
        net, pipe = applied_pixart_with_lora(cfg, when)
        try:
            outs.append(run_pixart(pipe))
            ratios.append(tc.summary(pipe).macs_ratio)
            blk = net.transformer_blocks[0]
            proj = {"vnorm": blk.attn1.to_v, "attention": blk.attn1.to_k, "cross_entropy": blk.attn2.to_k}[score]
            assert isinstance(proj, BaseTunerLayer) and "tokencache.dit_capture" in proj._diffusers_hook.hooks
            assert not hasattr(proj.base_layer, "_diffusers_hook")
        finally:
            tc.remove(pipe)
        assert torch.equal(run_pixart(pipe), lora_ref) and no_registries(net)
    out = outs[0]
    assert torch.equal(outs[1], out) and ratios[1] == ratios[0]
    assert out.shape == lora_ref.shape and torch.isfinite(out).all() and not torch.equal(out, lora_ref)
    assert lora_acts(out, lora_ref, base)
    assert 0.0 < ratios[0] < 1.0


def test_pixart_peft_model_from_pretrained_disabled_and_unloaded_while_applied(pixart_refs, tmp_path):
    base, lora_ref = pixart_refs
    source = tiny_pixart()
    torch.manual_seed(3)  # the LoRA weights of add_lora
    get_peft_model(source, lora_config()).save_pretrained(tmp_path / "lora")
    peft_model = PeftModel.from_pretrained(tiny_pixart(), tmp_path / "lora")
    net = peft_model.get_base_model()
    pipe = pixart_pipe(peft_model)
    assert torch.equal(run_pixart(pipe), lora_ref)  # the same LoRA as the injected one

    preset = tc.ToCaConfig.preset("balanced", score="cross_entropy", spatial_grid=4)
    plain = pixart_pipe(tiny_pixart())
    tc.apply(plain, preset)
    plain_out, plain_ratio = run_pixart(plain), tc.summary(plain).macs_ratio
    tc.remove(plain)

    tc.apply(pipe, PIXART_ALL_FRESH)
    try:
        assert tc.is_applied(pipe) and tc.is_applied(net)  # the PeftModel is unwrapped
        assert (run_pixart(pipe) - lora_ref).abs().max() <= 1e-5
        with peft_model.disable_adapter():
            assert (run_pixart(pipe) - base).abs().max() <= 1e-5
        tc.remove(pipe)
        tc.apply(pipe, preset)
        out = run_pixart(pipe)
        assert not torch.equal(out, lora_ref) and lora_acts(out, lora_ref, base)
        peft_model.unload()  # the LoRA layers are replaced by their base Linear layers again
        assert not any(isinstance(m, BaseTunerLayer) for m in net.modules())
        # the scoring hooks followed the projections back: exactly a model that never had a LoRA
        assert torch.equal(run_pixart(pipe), plain_out) and tc.summary(pipe).macs_ratio == plain_ratio
    finally:
        tc.remove(pipe)
    assert torch.equal(run_pixart(pipe), base) and no_registries(net)


def test_adapter_layers_the_twin_cannot_rebuild_are_left_out_with_a_warning(pixart_refs):
    _, lora_ref = pixart_refs
    net = add_lora(tiny_pixart())
    del net.peft_config  # LoRA layers without the config that made them
    pipe = pixart_pipe(net)
    tc.apply(pipe, PIXART_ALL_FRESH)
    try:
        assert (run_pixart(pipe) - lora_ref).abs().max() <= 1e-5
        with pytest.warns(UserWarning, match="MACs exclude the peft adapter layers"):
            s = tc.summary(pipe)
        assert s.macs_full_step == plain_macs(net, recorded_inputs(net)) and s.macs_ratio == pytest.approx(1.0)
    finally:
        tc.remove(pipe)
