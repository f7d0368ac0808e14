"""The contract every (model family x method) pair keeps, parametrized from the registries.

A new family is covered by adding its tiny model to ``TINY`` (the first test fails until it is there);
a new method is covered by registering it. Each pair is driven as a bare denoiser with seeded inputs
that change every step, as a sampler would feed them.
"""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch

import tokencache as tc
from conftest import tiny_unet
from mmdit_tiny import flux_inputs, qwen_inputs, sd3_inputs, tiny_flux, tiny_qwen, tiny_sd3, tiny_wan, wan_inputs
from test_dit import tiny_dit, tiny_pixart
from tokencache.core.schedule import StepAction, count_kinds
from tokencache.methods import methods_for
from tokencache.models import adapters


def _latte():
    from diffusers import LatteTransformer3DModel

    torch.manual_seed(0)
    return LatteTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2, sample_size=8,
        patch_size=2, cross_attention_dim=16, caption_channels=24, video_length=2,
    ).eval()


def _unet_inputs(b, g):
    return (torch.randn(b, 4, 16, 16, generator=g),), {"encoder_hidden_states": torch.randn(b, 7, 32, generator=g)}


def _dit_inputs(b, g):
    return (torch.randn(b, 4, 8, 8, generator=g),), {"class_labels": torch.arange(b) % 10}


def _pixart_inputs(b, g):
    kw = {"encoder_hidden_states": torch.randn(b, 7, 24, generator=g),
          "added_cond_kwargs": {"resolution": None, "aspect_ratio": None}}
    return (torch.randn(b, 4, 8, 12, generator=g),), kw  # non-square token grid


def _latte_inputs(b, g):
    return (torch.randn(b, 4, 2, 8, 8, generator=g),), {"encoder_hidden_states": torch.randn(b, 7, 24, generator=g)}


#: denoiser class name -> (tiny model, seeded inputs for a batch)
TINY = {
    "UNet2DConditionModel": (tiny_unet, _unet_inputs),
    "DiTTransformer2DModel": (lambda: tiny_dit(layers=2), _dit_inputs),
    "PixArtTransformer2DModel": (tiny_pixart, _pixart_inputs),
    "LatteTransformer3DModel": (_latte, _latte_inputs),
    "FluxTransformer2DModel": (tiny_flux, flux_inputs),
    "SD3Transformer2DModel": (tiny_sd3, sd3_inputs),
    "WanTransformer3DModel": (tiny_wan, wan_inputs),
    "QwenImageTransformer2DModel": (tiny_qwen, qwen_inputs),
}
STEPS = 6
PAIRS = [
    (cls_name, cfg_cls, preset)
    for adapter in adapters()
    for cls_name in adapter.classes
    for cfg_cls in methods_for(adapter.structure)
    for preset in cfg_cls.PRESETS
]


def _ids(p):
    return f"{p[0]}-{p[1].method}-{p[2]}"


def test_every_registered_family_has_a_tiny_model():
    missing = [c for a in adapters() for c in a.classes if c not in TINY]
    assert not missing, f"add tiny models for {missing} to TINY"
    assert {a.structure for a in adapters()} <= {s for c in tc.config.CONFIG_CLASSES.values() for s in c.structures}


@contextlib.contextmanager
def cache_context(model, name):
    """What diffusers' ``CacheMixin.cache_context`` does, for model classes without the mixin."""
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    _set_cache_context(model, CacheContext(name))
    try:
        yield
    finally:
        _set_cache_context(model, None)


def _run(model, make_inputs, batch, steps=STEPS, contexts=None):
    """``steps`` denoiser calls (per context); returns the outputs."""
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([999 - 150 * i for i in range(steps)])
    outs = []
    with torch.no_grad():
        for i in range(steps):
            args, kwargs = make_inputs(batch, g)
            for name in contexts or [None]:
                if name is None:
                    outs.append(model(*args, timestep=t[i].expand(batch), **kwargs)[0])
                else:
                    with cache_context(model, name):
                        outs.append(model(*args, timestep=t[i].expand(batch), **kwargs)[0])
    return outs


def _all_full(cfg):
    """``cfg`` with every step planned full and unpruned (instance attribute over the method's plan)."""
    cfg = dataclasses.replace(cfg)
    object.__setattr__(cfg, "plan", lambda n: [StepAction("full") for _ in range(n)])
    return cfg


@pytest.fixture(scope="module")
def models():
    return {name: make() for name, (make, _) in TINY.items()}


@pytest.mark.parametrize("pair", PAIRS, ids=_ids)
def test_method_contract(models, pair):
    cls_name, cfg_cls, preset = pair
    model, make_inputs = models[cls_name], TINY[cls_name][1]
    cfg = cfg_cls.preset(preset)
    base = _run(model, make_inputs, 2)

    # all-full plan == uncached
    tc.apply(model, _all_full(cfg), num_inference_steps=STEPS, cfg=False)
    full = _run(model, make_inputs, 2)
    tc.remove(model)
    for a, b in zip(full, base):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)

    # the preset: counts match its plan, no NaN, odd batch runs
    tc.apply(model, cfg, num_inference_steps=STEPS, cfg=False)
    out = _run(model, make_inputs, 2)
    s = tc.summary(model)
    expected = count_kinds(cfg.plan(STEPS))
    assert (s.steps_total, s.steps_full, s.steps_partial, s.steps_reused, s.steps_aggressive) == (
        STEPS, expected["full"], expected["partial"], expected["reuse"], expected["aggressive"])
    assert s.steps_by_kind == {k: v for k, v in expected.items() if v}
    assert all(not o.isnan().any() for o in out)
    assert 0 < s.macs_ratio <= 1.0 + 1e-9
    odd = _run(model, make_inputs, 3)
    assert all(o.shape[0] == 3 and not o.isnan().any() for o in odd)

    # contexts: cond/uncond calls per step count steps per context and never share caches
    per_ctx = _run(model, make_inputs, 1, contexts=["cond", "uncond"])
    s = tc.summary(model)
    assert set(s.contexts) == {"cond", "uncond"} and s.steps_total == 2 * STEPS
    assert all(c["steps_total"] == STEPS for c in s.contexts.values())
    tc.remove(model)
    tc.apply(model, cfg, num_inference_steps=STEPS, cfg=False)
    alone = _run(model, make_inputs, 1, contexts=["cond"])
    tc.remove(model)
    # the cond outputs with uncond calls interleaved equal the cond outputs run alone (inputs drawn the same way)
    assert len(alone) == STEPS and len(per_ctx) == 2 * STEPS
    for i in range(STEPS):
        torch.testing.assert_close(per_ctx[2 * i], alone[i], atol=1e-6, rtol=0)

    # remove() is bit-identical
    again = _run(model, make_inputs, 2)
    assert all(torch.equal(a, b) for a, b in zip(again, base))
