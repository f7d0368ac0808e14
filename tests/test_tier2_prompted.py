"""Tier-2 zoo, the text-conditioned families: `unet2` (SD-style, 1024-token top attention) and `pixart2`
(PixArt-alpha-style, 256 tokens x 8 blocks), both prompted "the letter K".

The quality-bar tests are marked slow (about 4 and 2 minutes on one thread) and skipped unless selected:
`pytest -p no:cacheprovider -m slow tests/test_tier2_prompted.py`.
"""

import json

import pytest
import torch
from diffusers import DDIMScheduler, PixArtAlphaPipeline, StableDiffusionPipeline

import tokencache as tc
from conftest import corrupt_zoo_copy
from tokencache import zoo
from tokencache.zoo.evaluate import evaluate
from tokencache.zoo.files import ChecksumError
from tokencache.zoo.tokenizer import letter_prompt

torch.set_num_threads(1)

PROMPTED = ("unet2", "pixart2")


@pytest.fixture(scope="module")
def pipes():
    return {}


def _pipe(pipes, family):
    if family not in pipes:
        pipes[family] = zoo.load(family)
    return pipes[family]


def _top_attention_tokens(unet) -> int:
    """Tokens per self-attention at the highest-resolution UNet level that has attention."""
    side = unet.config.sample_size
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            return side * side
        side //= 2
    raise AssertionError("no attention level")


def test_unet2_is_an_sd_pipeline_with_1024_token_top_attention(pipes):
    pipe = _pipe(pipes, "unet2")
    assert isinstance(pipe, StableDiffusionPipeline) and isinstance(pipe.scheduler, DDIMScheduler)
    assert _top_attention_tokens(pipe.unet) >= 1024
    assert pipe.unet.config.sample_size == 32 and pipe.unet.config.in_channels == 1


def test_pixart2_is_a_256_token_8_block_pixart_pipeline(pipes):
    pipe = _pipe(pipes, "pixart2")
    assert isinstance(pipe, PixArtAlphaPipeline) and isinstance(pipe.scheduler, DDIMScheduler)
    cfg = pipe.transformer.config
    assert (cfg.sample_size // cfg.patch_size) ** 2 >= 256 and cfg.num_layers >= 8
    assert len(pipe.transformer.transformer_blocks) == cfg.num_layers


@pytest.mark.parametrize("family", PROMPTED)
def test_prompted_tier2_families_are_frozen_and_tier_2(pipes, family):
    pipe = _pipe(pipes, family)
    denoiser = pipe.unet if family == "unet2" else pipe.transformer
    assert not denoiser.training and all(not p.requires_grad for p in denoiser.parameters())
    assert zoo.family_tier(family) == 2 and family in zoo.TIER2_FAMILIES


def test_letter_prompts():
    assert letter_prompt(0) == "the letter A" and letter_prompt(25) == "the letter Z"
    with pytest.raises(ValueError, match="letter must be a class 0-25 \\(A-Z\\), got 26"):
        letter_prompt(26)


@pytest.mark.parametrize("family", PROMPTED)
def test_two_step_sample_follows_the_prompt(pipes, family):
    pipe = _pipe(pipes, family)
    x = zoo.sample(family, pipe, [0, 25], seed=0, num_inference_steps=2, guidance_scale=3.0)
    assert x.shape == (2, 1, 32, 32) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    again = zoo.sample(family, pipe, [0, 25], seed=0, num_inference_steps=2, guidance_scale=3.0)
    torch.testing.assert_close(again, x, rtol=0, atol=0)
    other = zoo.sample(family, pipe, [1, 25], seed=0, num_inference_steps=2, guidance_scale=3.0)
    assert (other[0] - x[0]).abs().max() > 1e-3  # the prompt reaches the model
    torch.testing.assert_close(other[1], x[1], rtol=0, atol=1e-6)  # and only the image it is for
    with pytest.raises(ValueError, match=f"0-25 for '{family}', got \\[26\\]"):
        zoo.sample(family, pipe, [26], seed=0, num_inference_steps=2)


CACHING = {
    "unet2": [tc.DaToConfig.preset("fast"), tc.DeepCacheConfig(interval=3, branch=0)],
    "pixart2": [tc.ToCaConfig.preset("balanced"), tc.DuCaConfig.preset("fast"), tc.FORAConfig.preset("fast")],
}


@pytest.mark.parametrize("family,config", [(f, c) for f, cs in CACHING.items() for c in cs],
                         ids=lambda v: v if isinstance(v, str) else type(v).__name__)
def test_caching_applies_and_removes_bit_identically(pipes, family, config):
    pipe = _pipe(pipes, family)
    base = zoo.sample(family, pipe, [0, 1], seed=0, num_inference_steps=6, guidance_scale=3.0)
    tc.apply(pipe, config)
    try:
        cached = zoo.sample(family, pipe, [0, 1], seed=0, num_inference_steps=6, guidance_scale=3.0)
        summary = tc.summary(pipe)
    finally:
        tc.remove(pipe)
    assert torch.isfinite(cached).all() and (cached - base).abs().max() > 0
    assert summary.macs_ratio < 1.0 and summary.steps_total == 6
    restored = zoo.sample(family, pipe, [0, 1], seed=0, num_inference_steps=6, guidance_scale=3.0)
    torch.testing.assert_close(restored, base, rtol=0, atol=0)


@pytest.mark.parametrize("family", PROMPTED)
def test_corrupted_weights_raise(tmp_path, family):
    dst = corrupt_zoo_copy(tmp_path, f"{family}.safetensors")
    with pytest.raises(ChecksumError, match=f"{family}.safetensors"):
        zoo.load(family, weights_dir=dst)


@pytest.mark.parametrize("family,method", [("unet2", "deepcache"), ("pixart2", "fora")])
def test_cli_bench_generate_and_search_take_them(tmp_path, cli, family, method):
    md = tmp_path / "b.md"
    r = cli("bench", "--reference", family, "--steps", 2, "--batch", 2, "--repeats", 1, "--warmup", 0,
            "--methods", f"{method}:fast", "--markdown", md)
    assert r.returncode == 0, r.stderr
    assert f"reference {family} (trained zoo pipeline) 32x32" in md.read_text()
    prompts = tmp_path / "p.txt"
    prompts.write_text("the letter K\nthe letter Q\n")
    g = cli("generate", "--reference", family, "--prompts", prompts, "--out", tmp_path / "g", "--steps", 2,
            "--method", method, "--json", "--no-progress")
    assert g.returncode == 0, g.stderr
    assert json.loads(g.stdout.strip().splitlines()[-1])["generated"] == 2
    s = cli("search", "--reference", family, "--method", method, "--trials", 2, "--steps", 4,
            "--out", tmp_path / "s")
    assert s.returncode == 0, s.stderr
    assert list((tmp_path / "s" / "strategies").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("family", PROMPTED)
def test_draws_the_requested_letter(family):
    result = evaluate(family, per_digit=4, num_inference_steps=50, guidance_scale=3.0, seed=0)
    assert result["accuracy"] >= 0.8, result  # the bar
    assert result["fd_test"] < 25.0, result
