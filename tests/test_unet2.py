"""Tier-2 zoo: the SD-style UNet whose top attention level has 1024 tokens (`unet2`, prompts "the letter K").

The quality-bar test is marked slow (about 4 minutes on one thread) and skipped unless selected:
`pytest -p no:cacheprovider -m slow tests/test_unet2.py`.
"""

import json
import shutil

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline

import tokencache as tc
from tokencache import zoo
from tokencache.zoo.evaluate import evaluate
from tokencache.zoo.files import ChecksumError
from tokencache.zoo.tokenizer import letter_prompt

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pipe():
    return zoo.load("unet2")


def _top_attention_tokens(unet) -> int:
    """Tokens per self-attention at the highest-resolution level that has attention."""
    side = unet.config.sample_size
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            return side * side
        side //= 2
    raise AssertionError("no attention level")


def test_unet2_is_an_sd_pipeline_with_1024_token_top_attention(pipe):
    assert isinstance(pipe, StableDiffusionPipeline) and isinstance(pipe.scheduler, DDIMScheduler)
    assert _top_attention_tokens(pipe.unet) >= 1024
    assert pipe.unet.config.sample_size == 32 and pipe.unet.config.in_channels == 1
    assert not pipe.unet.training and all(not p.requires_grad for p in pipe.unet.parameters())
    assert zoo.family_tier("unet2") == 2 and "unet2" in zoo.TIER2_FAMILIES


def test_letter_prompts():
    assert letter_prompt(0) == "the letter A" and letter_prompt(25) == "the letter Z"
    with pytest.raises(ValueError, match="letter must be a class 0-25 \\(A-Z\\), got 26"):
        letter_prompt(26)


def test_unet2_two_step_sample(pipe):
    x = zoo.sample("unet2", pipe, [0, 25], seed=0, num_inference_steps=2, guidance_scale=3.0)
    assert x.shape == (2, 1, 32, 32) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    again = zoo.sample("unet2", pipe, [0, 25], seed=0, num_inference_steps=2, guidance_scale=3.0)
    torch.testing.assert_close(again, x, rtol=0, atol=0)
    other = zoo.sample("unet2", pipe, [1, 25], seed=0, num_inference_steps=2, guidance_scale=3.0)
    assert (other[0] - x[0]).abs().max() > 1e-3  # the prompt reaches the model
    with pytest.raises(ValueError, match="0-25 for 'unet2', got \\[26\\]"):
        zoo.sample("unet2", pipe, [26], seed=0, num_inference_steps=2)


@pytest.mark.parametrize("config", [tc.DaToConfig.preset("fast"), tc.DeepCacheConfig(interval=3, branch=0)],
                         ids=["dato", "deepcache"])
def test_unet_caching_applies_to_unet2(pipe, config):
    base = zoo.sample("unet2", pipe, [0, 1], seed=0, num_inference_steps=6, guidance_scale=3.0)
    tc.apply(pipe, config)
    try:
        cached = zoo.sample("unet2", pipe, [0, 1], seed=0, num_inference_steps=6, guidance_scale=3.0)
        summary = tc.summary(pipe)
    finally:
        tc.remove(pipe)
    assert torch.isfinite(cached).all() and (cached - base).abs().max() > 0
    assert summary.macs_ratio < 1.0
    restored = zoo.sample("unet2", pipe, [0, 1], seed=0, num_inference_steps=6, guidance_scale=3.0)
    torch.testing.assert_close(restored, base, rtol=0, atol=0)


def test_dato_prunes_the_1024_token_level(pipe):
    """Pruning alone (every step full) cuts MACs only through the top level's self-attention."""
    cfg = tc.DaToConfig(cache_plan=["full"] * 4, prune_ratio=0.6)
    tc.apply(pipe, cfg)
    try:
        zoo.sample("unet2", pipe, [2], seed=0, num_inference_steps=4, guidance_scale=3.0)
        ratio = tc.summary(pipe).macs_ratio
    finally:
        tc.remove(pipe)
    assert 0.5 < ratio < 0.98


def test_dato_without_pruning_is_deepcache_like(pipe):
    """The scale study's controlled pair: DaTo on DeepCache-like's schedule with r=0 is DeepCache-like, bit for
    bit and MAC for MAC, so DaTo (reuse) N=k minus DeepCache-like N=k is the pruning alone."""
    out = {}
    for name, cfg in (("deepcache", tc.DeepCacheConfig(interval=3, branch=0)),
                      ("dato", tc.DaToConfig(cache_plan=["full" if i % 3 == 0 else 1 for i in range(6)],
                                             prune_ratio=0.0, forecast="none"))):
        tc.apply(pipe, cfg)
        try:
            out[name] = (zoo.sample("unet2", pipe, [4], seed=0, num_inference_steps=6), tc.summary(pipe).macs_ratio)
        finally:
            tc.remove(pipe)
    torch.testing.assert_close(out["dato"][0], out["deepcache"][0], rtol=0, atol=0)
    assert out["dato"][1] == out["deepcache"][1] < 0.7


def test_corrupted_unet2_raises(tmp_path):
    dst = tmp_path / "weights"
    shutil.copytree(zoo.WEIGHTS_DIR, dst)
    path = dst / "unet2.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="unet2.safetensors"):
        zoo.load("unet2", weights_dir=dst)


def test_cli_bench_generate_and_search_take_unet2(tmp_path, cli):
    md = tmp_path / "b.md"
    r = cli("bench", "--reference", "unet2", "--steps", 2, "--batch", 2, "--repeats", 1, "--warmup", 0,
            "--methods", "dato:fast", "--markdown", md)
    assert r.returncode == 0, r.stderr
    assert "reference unet2 (trained zoo pipeline) 32x32" in md.read_text()
    prompts = tmp_path / "p.txt"
    prompts.write_text("the letter K\nthe letter Q\n")
    g = cli("generate", "--reference", "unet2", "--prompts", prompts, "--out", tmp_path / "g", "--steps", 2,
            "--method", "deepcache", "--json", "--no-progress")
    assert g.returncode == 0, g.stderr
    assert json.loads(g.stdout.strip().splitlines()[-1])["generated"] == 2
    s = cli("search", "--reference", "unet2", "--method", "deepcache", "--trials", 2, "--steps", 4,
            "--out", tmp_path / "s")
    assert s.returncode == 0, s.stderr
    assert list((tmp_path / "s" / "strategies").glob("*.yaml"))


@pytest.mark.slow
def test_unet2_draws_the_requested_letter():
    result = evaluate("unet2", per_digit=4, num_inference_steps=50, guidance_scale=3.0, seed=0)
    assert result["accuracy"] >= 0.8, result  # the bar
    assert result["fd_test"] < 25.0, result
