"""Tier-2 zoo, the FLUX family: `flux2` (flow matching through `FluxPipeline`, 32x32 glyphs packed into 256 image
tokens, 2 double-stream + 6 single-stream blocks, learned prompt embeddings per letter, true CFG per context).

The quality-bar test is marked slow (about 3 minutes on one thread) and skipped unless selected:
`pytest -p no:cacheprovider -m slow tests/test_tier2_flux.py`.
"""

import json
import shutil

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

import tokencache as tc
from conftest import corrupt_zoo_copy
from tokencache import zoo
from tokencache.zoo.evaluate import evaluate
from tokencache.zoo.files import CHECKSUMS_FILE, ChecksumError, sha256_of
from tokencache.zoo.train import train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pipe():
    return zoo.load("flux2")


def test_flux2_is_a_256_token_8_block_flux_pipeline(pipe):
    assert isinstance(pipe, FluxPipeline) and isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    cfg = pipe.transformer.config
    assert cfg.num_layers + cfg.num_single_layers >= 8 and cfg.num_layers >= 1 and cfg.num_single_layers >= 1
    assert len(pipe.transformer.transformer_blocks) == cfg.num_layers
    assert pipe.image_size == 32 and pipe.prompt_table.embeds.shape[0] == len(zoo.CLASSES) + 1
    seen = []
    hook = pipe.transformer.register_forward_pre_hook(lambda m, a, k: seen.append(k["hidden_states"].shape),
                                                      with_kwargs=True)
    try:
        zoo.sample("flux2", pipe, [3], seed=0, num_inference_steps=1, guidance_scale=1.0)
    finally:
        hook.remove()
    assert seen == [torch.Size([1, 256, 4])]  # 32x32 latent, 2x2 packing: 256 image tokens
    assert not pipe.transformer.training and all(not p.requires_grad for p in pipe.transformer.parameters())
    assert zoo.family_tier("flux2") == 2 and "flux2" in zoo.TIER2_FAMILIES
    sums = json.loads((zoo.WEIGHTS_DIR / CHECKSUMS_FILE).read_text())
    for name in ("flux2.safetensors", "flux2.json"):
        assert sha256_of(zoo.WEIGHTS_DIR / name) == sums[name]
    meta = json.loads((zoo.WEIGHTS_DIR / "flux2.json").read_text())
    assert meta["tier"] == 2 and meta["family"] == "flux2"


def test_two_step_sample_follows_the_prompt(pipe):
    x = zoo.sample("flux2", pipe, [0, 25], seed=0, num_inference_steps=2, guidance_scale=3.0)
    assert x.shape == (2, 1, 32, 32) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    again = zoo.sample("flux2", pipe, [0, 25], seed=0, num_inference_steps=2, guidance_scale=3.0)
    torch.testing.assert_close(again, x, rtol=0, atol=0)
    other = zoo.sample("flux2", pipe, [1, 25], seed=0, num_inference_steps=2, guidance_scale=3.0)
    assert (other[0] - x[0]).abs().max() > 1e-3  # the prompt reaches the model
    torch.testing.assert_close(other[1], x[1], rtol=0, atol=1e-6)  # and only the image it is for
    with pytest.raises(ValueError, match="0-25 for 'flux2', got \\[26\\]"):
        zoo.sample("flux2", pipe, [26], seed=0, num_inference_steps=2)


def test_letter_prompts_through_the_encoder_free_call(pipe):
    assert [zoo.prompt_letter(p) for p in ("the letter K", "k", "The Letter z", 3, "7")] == [10, 10, 25, 3, 7]
    for bad in ("the letter KK", "a handwritten 7 and 8", 26, "", "the number 3"):
        with pytest.raises(ValueError, match="invalid for the reference FLUX tier-2 model"):
            zoo.prompt_letter(bad)
    g = [torch.Generator().manual_seed(0) for _ in range(2)]
    by_prompt = zoo.call_encoder_free(pipe, ["the letter A", "Z"], num_inference_steps=2, guidance_scale=3.0,
                                      generator=g, output_type="pt")
    by_class = zoo.sample("flux2", pipe, [0, 25], seed=0, num_inference_steps=2, guidance_scale=3.0,
                          output="images")
    assert by_prompt.shape == (2, 3, 32, 32)
    torch.testing.assert_close(by_prompt[0], by_class[0], rtol=0, atol=0)  # same seed for the first image


CACHING = [tc.ToCaConfig.preset("balanced"), tc.DuCaConfig.preset("fast"), tc.FORAConfig.preset("fast")]


@pytest.mark.parametrize("config", CACHING, ids=lambda c: type(c).__name__)
def test_caching_applies_per_context_and_removes_bit_identically(pipe, config):
    base = zoo.sample("flux2", pipe, [0, 1], seed=0, num_inference_steps=6, guidance_scale=3.0)
    tc.apply(pipe, config)
    try:
        cached = zoo.sample("flux2", pipe, [0, 1], seed=0, num_inference_steps=6, guidance_scale=3.0)
        summary = tc.summary(pipe)
    finally:
        tc.remove(pipe)
    assert torch.isfinite(cached).all() and (cached - base).abs().max() > 0
    # true CFG: the pipeline calls the model once per branch, each in its own cache context of 6 steps
    assert summary.macs_ratio < 1.0 and set(summary.contexts) == {"cond", "uncond"} and summary.steps_total == 12
    restored = zoo.sample("flux2", pipe, [0, 1], seed=0, num_inference_steps=6, guidance_scale=3.0)
    torch.testing.assert_close(restored, base, rtol=0, atol=0)


def test_corrupted_weights_raise(tmp_path):
    dst = corrupt_zoo_copy(tmp_path, "flux2.safetensors")
    with pytest.raises(ChecksumError, match="flux2.safetensors"):
        zoo.load("flux2", weights_dir=dst)


def test_training_is_reproducible_and_loads_by_path(tmp_path):
    a = train("flux", seed=0, out=tmp_path / "a", steps=2, batch_size=2, tier=2, threads=1)
    b = train("flux", seed=0, out=tmp_path / "b", steps=2, batch_size=2, tier=2, threads=1)
    assert a.name == "flux2.safetensors" and sha256_of(a) == sha256_of(b)
    meta = json.loads((tmp_path / "a" / "flux2.json").read_text())
    assert meta["tier"] == 2 and meta["configs"]["flux"]["num_single_layers"] == 6
    for name in ("vae.safetensors", "vae.json"):  # load() decodes through the shipped VAE
        shutil.copy(zoo.WEIGHTS_DIR / name, tmp_path / "a" / name)
    sums = json.loads((tmp_path / "a" / CHECKSUMS_FILE).read_text())
    sums.update({n: sha256_of(tmp_path / "a" / n) for n in ("vae.safetensors", "vae.json")})
    (tmp_path / "a" / CHECKSUMS_FILE).write_text(json.dumps(sums))
    fresh = zoo.load("flux2", weights_dir=tmp_path / "a")
    x = zoo.sample("flux2", fresh, [4], seed=0, num_inference_steps=2, guidance_scale=3.0)
    assert x.shape == (1, 1, 32, 32) and torch.isfinite(x).all()


def test_cli_bench_generate_and_search_take_it(tmp_path, cli):
    md = tmp_path / "b.md"
    r = cli("bench", "--reference", "flux2", "--steps", 2, "--batch", 2, "--repeats", 1, "--warmup", 0,
            "--methods", "duca:fast", "--markdown", md)
    assert r.returncode == 0, r.stderr
    assert "reference flux2 (trained zoo pipeline) 32x32" in md.read_text()
    prompts = tmp_path / "p.txt"
    prompts.write_text("the letter K\nthe letter Q\n")
    g = cli("generate", "--reference", "flux2", "--prompts", prompts, "--out", tmp_path / "g", "--steps", 2,
            "--method", "fora", "--json", "--no-progress")
    assert g.returncode == 0, g.stderr
    assert json.loads(g.stdout.strip().splitlines()[-1])["generated"] == 2
    s = cli("search", "--reference", "flux2", "--method", "fora", "--trials", 2, "--steps", 4, "--out", tmp_path / "s")
    assert s.returncode == 0, s.stderr
    assert list((tmp_path / "s" / "strategies").glob("*.yaml"))


@pytest.mark.slow
def test_draws_the_requested_letter():
    result = evaluate("flux2", per_digit=4, num_inference_steps=50, guidance_scale=3.0, seed=0)
    assert result["accuracy"] >= 0.8, result  # the bar
    assert result["fd_test"] < 25.0, result
