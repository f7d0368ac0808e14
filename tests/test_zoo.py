import json
import shutil

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DiTPipeline,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    PixArtAlphaPipeline,
    StableDiffusionPipeline,
    WanPipeline,
)

from conftest import corrupt_zoo_copy
from tokencache import zoo
from tokencache.zoo.files import CHECKSUMS_FILE, ChecksumError, sha256_of
from tokencache.zoo.train import train

PIPELINE_TYPES = {"unet": StableDiffusionPipeline, "dit": DiTPipeline, "pixart": PixArtAlphaPipeline,
                  "flux": FluxPipeline, "wan": WanPipeline}


@pytest.fixture(scope="module")
def pipes():
    return {family: zoo.load(family) for family in zoo.FAMILIES}


@pytest.fixture(scope="module")
def classifier():
    return zoo.load_classifier()


def test_families():
    assert zoo.FAMILIES == ("unet", "dit", "pixart", "flux", "wan") and zoo.VIDEO_FAMILIES == ("wan",)


def test_shipped_files_match_checksums_and_are_small():
    sums = json.loads((zoo.WEIGHTS_DIR / CHECKSUMS_FILE).read_text())
    shipped = {p.name for p in zoo.WEIGHTS_DIR.iterdir() if p.is_file() and p.name != CHECKSUMS_FILE}
    assert set(sums) == shipped
    for family in (*zoo.FAMILIES, "vae", "classifier"):
        assert f"{family}.safetensors" in sums and f"{family}.json" in sums
    for name, digest in sums.items():
        assert sha256_of(zoo.WEIGHTS_DIR / name) == digest, name
    total = sum((zoo.WEIGHTS_DIR / name).stat().st_size for name in sums)
    assert total < 40 * 2**20  # the whole zoo, tier 2 included


@pytest.mark.parametrize("family", ["unet", "dit", "pixart", "flux", "wan"])
def test_load_gives_real_pipeline(pipes, family):
    pipe = pipes[family]
    assert isinstance(pipe, PIPELINE_TYPES[family])
    flow = family in ("flux", "wan")  # flow matching through FluxPipeline / WanPipeline
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler if flow else DDIMScheduler)
    # wan: the clip VAE (Wan's causal 1 + 4k layout) decodes each frame with the shared VAE
    assert (pipe.vae.frame_vae if family == "wan" else pipe.vae).config.latent_channels == 1
    denoiser = pipe.unet if family == "unet" else pipe.transformer
    assert not denoiser.training
    assert all(not p.requires_grad for p in denoiser.parameters())
    if family == "unet":
        assert pipe.safety_checker is None
        assert pipe.unet.config.sample_size == 16
        assert "CrossAttnDownBlock2D" in pipe.unet.config.down_block_types
        tokens = pipe.tokenizer.convert_ids_to_tokens(pipe.tokenizer("a handwritten 7").input_ids)
        assert tokens == ["<|startoftext|>", "a</w>", "handwritten</w>", "7</w>", "<|endoftext|>"]
    elif family == "flux":
        assert not denoiser.config.guidance_embeds and pipe.prompt_table.embeds.shape == (11, 4, 32)
    elif family == "wan":
        assert pipe.text_encoder is None and pipe.prompt_table.embeds.shape == (11, 4, 32)
        assert pipe.vae.config.z_dim == denoiser.config.in_channels == 4 and pipe.vae.config.scale_factor_temporal == 4
    else:
        # >= 64 tokens per image
        cfg = denoiser.config
        assert (cfg.sample_size // cfg.patch_size) ** 2 >= 64


def test_flux_reference_calls_the_model_per_cache_context(pipes):
    """Guided FLUX sampling is true CFG: one call per branch in cache_context, steps counted per context."""
    import tokencache as tc

    pipe = pipes["flux"]
    tc.apply(pipe, tc.ToCaConfig.preset("fast"))
    try:
        x = zoo.sample("flux", pipe, [3, 4, 5], seed=0, num_inference_steps=8, guidance_scale=3.0)
        s = tc.summary(pipe)
    finally:
        tc.remove(pipe)
    assert x.shape == (3, 1, 8, 8)
    assert set(s.contexts) == {"cond", "uncond"} and s.steps_total == 16 and s.macs_ratio < 0.6


@pytest.mark.parametrize("family", ["unet", "dit", "pixart", "flux", "wan"])
def test_two_step_sample(pipes, family):
    pipe = pipes[family]
    x = zoo.sample(family, pipe, [0, 7], seed=0, num_inference_steps=2, guidance_scale=2.0)
    assert x.shape == (2, 1, 8, 8) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    images = zoo.sample(
        family, pipe, [0, 7], seed=0, num_inference_steps=2, guidance_scale=2.0, output="images"
    )
    assert images.shape == (2, 3, 16, 16)
    torch.testing.assert_close(zoo.to_digit_space(images), x)
    again = zoo.sample(family, pipe, [0, 7], seed=0, num_inference_steps=2, guidance_scale=2.0)
    torch.testing.assert_close(again, x, rtol=0, atol=0)
    other = zoo.sample(family, pipe, [0, 7], seed=1, num_inference_steps=2, guidance_scale=2.0)
    assert (other - x).abs().max() > 1e-3


@pytest.mark.parametrize("family", ["unet", "dit", "pixart", "flux", "wan"])
def test_trained_models_draw_the_requested_digit(pipes, classifier, family):
    # a random-weight model scores ~10%; the shipped models score 98-100% at 50 steps (docs/zoo_and_metrics.md)
    digits = list(range(10))
    x = zoo.sample(family, pipes[family], digits, seed=0, num_inference_steps=20, guidance_scale=3.0)
    correct = (classifier(x).argmax(-1) == torch.tensor(digits)).sum().item()
    assert correct >= 8, f"{family}: {correct}/10 samples classified as requested (quality bar: 80%)"


def test_classifier_test_accuracy(classifier):
    _, _, x_test, y_test = zoo.load_digits_split()
    assert len(y_test) == 360
    accuracy = (classifier(x_test).argmax(-1) == y_test).float().mean().item()
    assert accuracy >= 0.95
    assert classifier.features(x_test).shape == (360, 64)


def test_unknown_family_raises():
    with pytest.raises(ValueError, match=r"'sdxl'.*unet, dit, pixart, flux"):
        zoo.load("sdxl")
    with pytest.raises(ValueError, match="'latte'"):
        zoo.sample("latte", None, [1], seed=0, num_inference_steps=2, guidance_scale=1.0)


def test_sample_rejects_bad_digits(pipes):
    with pytest.raises(ValueError, match="0-9"):
        zoo.sample("dit", pipes["dit"], [10], seed=0, num_inference_steps=2, guidance_scale=1.0)


@pytest.fixture
def weights_copy(tmp_path):
    dst = tmp_path / "weights"
    shutil.copytree(zoo.WEIGHTS_DIR, dst)
    return dst


def test_corrupted_weights_raise_naming_the_file(weights_copy):
    corrupt_zoo_copy(weights_copy.parent, "dit.safetensors")
    with pytest.raises(ChecksumError, match="dit.safetensors"):
        zoo.load("dit", weights_dir=weights_copy)
    zoo.load("unet", weights_dir=weights_copy)  # other families are unaffected


def test_corrupted_vae_and_classifier_raise(weights_copy):
    (weights_copy / "vae.json").write_text((weights_copy / "vae.json").read_text() + " ")
    with pytest.raises(ChecksumError, match="vae.json"):
        zoo.load("pixart", weights_dir=weights_copy)
    (weights_copy / "classifier.safetensors").write_bytes(b"garbage")
    with pytest.raises(ChecksumError, match="classifier.safetensors"):
        zoo.load_classifier(weights_dir=weights_copy)


def test_missing_weights_raise(weights_copy):
    (weights_copy / "clip_merges.txt").unlink()
    with pytest.raises(FileNotFoundError, match="clip_merges.txt"):
        zoo.load("unet", weights_dir=weights_copy)
    (weights_copy / CHECKSUMS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=CHECKSUMS_FILE):
        zoo.load("dit", weights_dir=weights_copy)


def train_twice(tmp_path, family: str, steps: int) -> list:
    """Train ``family`` twice from seed 3 into two folders (each with the shipped VAE); the folders."""
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        out.mkdir()
        for shipped in ("vae.safetensors", "vae.json"):
            shutil.copy(zoo.WEIGHTS_DIR / shipped, out / shipped)
        train(family, seed=3, out=out, steps=steps, batch_size=4)
        outs.append(out)
    return outs


def test_training_is_reproducible_and_loadable(tmp_path):
    outs = train_twice(tmp_path, "dit", 3)
    assert sha256_of(outs[0] / "dit.safetensors") == sha256_of(outs[1] / "dit.safetensors")
    meta = json.loads((outs[0] / "dit.json").read_text())
    assert meta["training"]["steps_done"] == 3 and meta["training"]["seed"] == 3
    pipe = zoo.load("dit", weights_dir=outs[0])
    x = zoo.sample("dit", pipe, [1], seed=0, num_inference_steps=2, guidance_scale=1.0)
    assert x.shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match="unknown family"):
        train("gan", out=tmp_path)


def test_digit_space_conversions():
    x = zoo.load_digits_split()[2][:3]  # real digits: smooth enough for the up/down round trip
    up = zoo.to_model_space(x)
    assert up.shape == (3, 1, 16, 16) and up.min() >= -1 and up.max() <= 1
    back = zoo.to_digit_space((up + 1) / 2)
    assert back.shape == (3, 1, 8, 8)
    assert (back - x).abs().mean() < 0.1
    with pytest.raises(ValueError):
        zoo.to_digit_space(torch.rand(2, 1, 10, 10))


@pytest.mark.parametrize("family", ["flux", "wan"])
def test_encoder_free_pipelines_take_prompts_naming_digits(pipes, family):
    """generate/search drive the zoo's FLUX and Wan (no text encoder) through prompts that name a digit."""
    from tokencache.harness.pipeline_io import run_pipeline

    pipe = pipes[family]

    def run(prompts, out="pt"):
        return run_pipeline(pipe, prompts, [0] * len(prompts), steps=2, guidance_scale=3.0, output_type=out)

    by_text, by_label, other = run(["a handwritten 3"]), run([3]), run(["7"])
    torch.testing.assert_close(by_text, by_label, atol=0, rtol=0)
    assert (by_text - other).abs().max() > 1e-3  # the digit reaches the model
    pil = run(["a handwritten 3", "a handwritten 7"], "pil")
    frames = 5 if family == "wan" else 1  # a Wan clip is saved as its frames side by side
    assert len(pil) == 2 and pil[0].size == (16 * frames, 16)


@pytest.mark.parametrize("prompt", ["a cat", "12", "3 and 4", 10, ""])
def test_prompt_digit_rejects_prompts_naming_no_single_digit(prompt):
    with pytest.raises(ValueError, match="exactly one digit 0-9"):
        zoo.prompt_digit(prompt)
    assert zoo.prompt_digit("a handwritten 7") == zoo.prompt_digit(7) == 7


@pytest.mark.parametrize("clock_schedule", [True, False])
def test_clock_schedule_fits_the_cosine_to_the_cap(monkeypatch, clock_schedule):
    """On a machine too slow for `steps` within `minutes`, `clock_schedule` plans the cosine over the steps that
    fit (at the pace of the first `PLAN_AFTER`), so the run ends annealed instead of being cut at a high lr."""
    from types import SimpleNamespace

    import tokencache.zoo.train as train_module

    clock = [0.0]  # a fake clock: every step takes one second
    monkeypatch.setattr(train_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    param = torch.nn.Parameter(torch.ones(1))
    cfg = train_module.TrainConfig(steps=1000, batch_size=1, lr=1.0, minutes=3.0, clock_schedule=clock_schedule)
    loop = train_module._Loop([param], cfg, "test")
    lrs = []
    for _ in loop:
        loop.backward((param**2).sum())
        lrs.append(loop.opt.param_groups[0]["lr"])
        clock[0] += 1.0
    info = loop.info()
    if clock_schedule:  # 50 s for 50 steps, 130 s left: 50 + int(0.97 * 130) steps, all done within the cap
        assert info["steps_planned"] == info["steps_done"] == 176 and not info["stopped_early"]
        assert lrs[-1] == pytest.approx(0.1, abs=1e-3)
    else:  # cut by the cap at step 181 with the cosine barely started
        assert info["steps_planned"] == 1000 and info["stopped_early"] and info["steps_done"] == 181
        assert lrs[-1] > 0.9
