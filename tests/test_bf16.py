"""bfloat16 on the CPU: every method config and preset on the tiny SD, DiT and PixArt pipelines.

No NaN or inf; an "all full" config of each method equals the uncached bf16 output within bf16 tolerance;
``remove()`` restores bit-identical outputs.
"""

from __future__ import annotations

import copy

import pytest
import torch

import tokencache as tc
from test_dit import tiny_dit, tiny_pixart

BF16 = torch.bfloat16


def _tiny_dit():
    return tiny_dit(layers=3)


def _tiny_pixart():
    return tiny_pixart(layers=2)


@pytest.fixture(scope="module")
def pipes(sd_components):
    from diffusers import DDIMScheduler, DiTPipeline, PixArtAlphaPipeline, StableDiffusionPipeline

    from conftest import tiny_vae

    parts = {k: copy.deepcopy(sd_components[k]).to(BF16) for k in ("unet", "vae", "text_encoder")}
    sd = StableDiffusionPipeline(**{**sd_components, **parts})
    dit = DiTPipeline(transformer=_tiny_dit().to(BF16), vae=tiny_vae().to(BF16), scheduler=DDIMScheduler())
    pixart = PixArtAlphaPipeline(tokenizer=None, text_encoder=None, vae=tiny_vae().to(BF16),
                                 transformer=_tiny_pixart().to(BF16), scheduler=DDIMScheduler())
    for p in (sd, dit, pixart):
        p.set_progress_bar_config(disable=True)
    return {"sd": sd, "dit": dit, "pixart": pixart}


def generate(name: str, pipe, steps: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if name == "sd":
        out = pipe("a cat", num_inference_steps=steps, guidance_scale=7.5, generator=g, output_type="latent",
                   height=32, width=32).images
    elif name == "dit":
        out = pipe(class_labels=[1, 3], num_inference_steps=steps, guidance_scale=1.5, generator=g,
                   output_type="latent").images
    else:
        emb = torch.randn(2, 7, 24, generator=torch.Generator().manual_seed(1)).to(BF16)
        out = pipe(negative_prompt=None, prompt_embeds=emb, prompt_attention_mask=torch.ones(2, 7),
                   negative_prompt_embeds=torch.zeros_like(emb), negative_prompt_attention_mask=torch.ones(2, 7),
                   num_inference_steps=steps, guidance_scale=4.5, height=64, width=64,
                   use_resolution_binning=False, generator=g, output_type="latent").images
    out = torch.as_tensor(out)
    assert name == "dit" or out.dtype == BF16  # DiTPipeline always decodes and returns float images
    return out


@pytest.fixture(scope="module")
def baselines(pipes):
    return {name: generate(name, pipe) for name, pipe in pipes.items()}


def _presets():
    from tokencache.config import CONFIG_CLASSES

    out = []
    for method, cls in CONFIG_CLASSES.items():
        names = ["sd"] if "unet" in cls.structures else ["dit", "pixart"]
        out += [pytest.param(n, method, preset, id=f"{n}-{method}:{preset}") for preset in cls.PRESETS for n in names]
    return out


@pytest.mark.parametrize(("pipe_name", "method", "preset"), _presets())
def test_presets_run_in_bf16_and_remove_restores(pipes, baselines, pipe_name, method, preset):
    from tokencache.config import CONFIG_CLASSES

    pipe, base = pipes[pipe_name], baselines[pipe_name]
    tc.apply(pipe, CONFIG_CLASSES[method].preset(preset))
    try:
        out = generate(pipe_name, pipe)
        s = tc.summary(pipe)
    finally:
        tc.remove(pipe)
    assert torch.isfinite(out.float()).all()
    assert s.macs_ratio < 1.0 or method == "tome"  # something was skipped (ToMe prunes little at 4x4 tokens)
    assert torch.equal(generate(pipe_name, pipe), base)  # remove() -> bit-identical


ALL_FULL = [
    pytest.param("sd", tc.DaToConfig(cache_plan=["full"], prune_ratio=0.0), id="sd-dato"),
    pytest.param("sd", tc.DeepCacheConfig(interval=1), id="sd-deepcache"),
    pytest.param("sd", tc.ToMeConfig(ratio=0.0), id="sd-tome"),
] + [
    pytest.param(name, cfg, id=f"{name}-{cfg.method}")
    for name in ("dit", "pixart")
    for cfg in (tc.ToCaConfig(interval=1), tc.DuCaConfig(cycle="F"), tc.FORAConfig(interval=1))
]


@pytest.mark.parametrize(("pipe_name", "cfg"), ALL_FULL)
def test_all_full_equals_uncached_within_bf16_tolerance(pipes, baselines, pipe_name, cfg):
    pipe, base = pipes[pipe_name], baselines[pipe_name]
    tc.apply(pipe, cfg)
    try:
        out = generate(pipe_name, pipe)
        s = tc.summary(pipe)
    finally:
        tc.remove(pipe)
    assert s.macs_ratio == pytest.approx(1.0, abs=1e-3)
    assert torch.isfinite(out.float()).all()
    rel = (out.float() - base.float()).norm() / base.float().norm()
    assert rel <= 1e-2, f"relative error {rel:.2e} vs uncached bf16"
    assert torch.allclose(out.float(), base.float(), atol=3e-2, rtol=3e-2)
