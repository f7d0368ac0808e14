"""The Wan-family reference model: 5-frame clips of a moving digit through the real WanPipeline."""

import json

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

import tokencache as tc
from conftest import corrupt_zoo_copy
from test_zoo import train_twice
from tokencache import zoo
from tokencache.zoo import wan
from tokencache.zoo.evaluate import evaluate
from tokencache.zoo.files import ChecksumError, sha256_of


@pytest.fixture(scope="module")
def pipe():
    return zoo.load("wan")


@pytest.fixture(scope="module")
def classifier():
    return zoo.load_classifier()


def test_clip_layout_is_wans_causal_one_plus_four_k():
    frames = torch.randn(3, 9, 16, 16)
    latents = wan.pack_clip(frames)
    assert latents.shape == (3, 4, 3, 16, 16) and wan.latent_frames(9) == 3 and wan.latent_frames(5) == 2
    torch.testing.assert_close(latents[:, :, 0], frames[:, :1].expand(3, 4, 16, 16))  # frame 0 alone
    torch.testing.assert_close(latents[:, :, 2], frames[:, 5:9])  # then 4 frames per latent frame
    assert torch.equal(wan.unpack_clip(latents), frames)
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        wan.pack_clip(torch.randn(1, 4, 16, 16))


def test_moving_digit_clips():
    x = zoo.to_model_space(zoo.load_digits_split()[0][:3])
    clips = wan.shift_frames(x, torch.tensor([[1, 0], [0, -1], [0, 0]]))
    assert clips.shape == (3, 5, 16, 16)
    assert torch.equal(clips[:, wan.MIDDLE_FRAME], x[:, 0])  # the middle frame is the digit itself
    assert torch.equal(clips[0, 3, 1:], x[0, 0, :-1]) and (clips[0, 3, 0] == -1).all()  # one row down
    assert torch.equal(clips[1, 4, :, :-2], x[1, 0, :, 2:])  # two columns left at t = 4
    assert torch.equal(clips[2], x[2, 0].expand(5, 16, 16))  # velocity 0: a still clip
    g = torch.Generator().manual_seed(0)
    assert torch.equal(wan.random_clips(x, g), wan.random_clips(x, torch.Generator().manual_seed(0)))


def test_load_gives_a_ready_wan_pipeline(pipe):
    assert isinstance(pipe, WanPipeline) and isinstance(pipe.transformer, WanTransformer3DModel)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler) and pipe.scheduler.config.shift == 1.0
    assert pipe.text_encoder is None and pipe.tokenizer is None and pipe.transformer_2 is None
    assert isinstance(pipe.vae, wan.ClipVAE) and pipe.vae.config.latents_std == [1.0] * 4
    assert not pipe.transformer.training and all(not p.requires_grad for p in pipe.transformer.parameters())
    meta = json.loads((zoo.WEIGHTS_DIR / "wan.json").read_text())
    assert meta["training"]["steps_done"] == meta["training"]["steps"] and not meta["training"]["stopped_early"]
    assert (zoo.WEIGHTS_DIR / "wan.safetensors").stat().st_size < 2 * 2**20


def test_corrupted_wan_weights_raise(tmp_path):
    dst = corrupt_zoo_copy(tmp_path, "wan.safetensors")
    with pytest.raises(ChecksumError, match="wan.safetensors"):
        zoo.load("wan", weights_dir=dst)


def test_guided_clips_through_the_pipeline(pipe):
    video = zoo.sample("wan", pipe, [0, 7], seed=0, num_inference_steps=3, guidance_scale=3.0, output="video")
    assert video.shape == (2, 5, 3, 16, 16) and video.min() >= 0 and video.max() <= 1
    clips = zoo.sample("wan", pipe, [0, 7], seed=0, num_inference_steps=3, guidance_scale=3.0, output="clips")
    assert clips.shape == (2, 5, 1, 8, 8)
    torch.testing.assert_close(clips, zoo.to_digit_space(video.flatten(0, 1)).view(2, 5, 1, 8, 8))
    middle = zoo.sample("wan", pipe, [0, 7], seed=0, num_inference_steps=3, guidance_scale=3.0)
    torch.testing.assert_close(middle, clips[:, wan.MIDDLE_FRAME], rtol=0, atol=0)
    with pytest.raises(ValueError, match="output must be 'digits' or 'images' for 'dit'"):
        zoo.sample("dit", None, [1], seed=0, num_inference_steps=2, output="clips")
    with pytest.raises(ValueError, match="'digits' or 'images' or 'clips' or 'video' for 'wan'"):
        zoo.sample("wan", pipe, [1], seed=0, num_inference_steps=2, output="frames")


@pytest.mark.parametrize("guidance, contexts", [(3.0, {"cond", "uncond"}), (1.0, {"cond"})])
def test_toca_counts_steps_per_cache_context(pipe, guidance, contexts):
    """WanPipeline's CFG is one call per branch in cache_context("cond") / ("uncond") with the step index."""
    tc.apply(pipe, tc.ToCaConfig.preset("balanced"))
    try:
        x = zoo.sample("wan", pipe, [3, 4, 5], seed=0, num_inference_steps=8, guidance_scale=guidance)
        s = tc.summary(pipe)
    finally:
        tc.remove(pipe)
    assert x.shape == (3, 1, 8, 8)
    assert set(s.contexts) == contexts and s.steps_total == 8 * len(contexts) and s.macs_ratio < 0.8
    assert all(c["steps_total"] == 8 for c in s.contexts.values())


def test_guided_clips_show_the_requested_digit_in_every_frame(pipe, classifier):
    # random weights score ~10%; on 100 clips at 50 steps: 87% of middle frames, 84.6% of all frames
    # (docs/zoo_and_metrics.md). These 10 clips: 9/10 middle frames, 82% of all frames (frame 0 is the weakest)
    digits = list(range(10))
    clips = zoo.sample("wan", pipe, digits, seed=0, num_inference_steps=50, guidance_scale=3.0, output="clips")
    right = classifier(clips.flatten(0, 1)).argmax(-1).view(10, 5) == torch.tensor(digits)[:, None]
    assert right[:, wan.MIDDLE_FRAME].sum() >= 8, f"middle frames: {right[:, wan.MIDDLE_FRAME].tolist()}"
    assert right.float().mean() >= 0.75, f"all frames: {right.tolist()}"


def test_generated_clips_move_rigidly(pipe):
    """Consecutive frames are a <= 1 pixel translation of each other (as in training), not unrelated digits."""
    video = zoo.sample("wan", pipe, list(range(10)), seed=1, num_inference_steps=20, output="video")[:, :, 0]
    a, b = video[:, :-1], video[:, 1:]

    def shifted(x, dy, dx):
        return torch.roll(x, (dy, dx), dims=(-2, -1))[..., 2:-2, 2:-2]

    best = torch.stack([((shifted(a, dy, dx) - b[..., 2:-2, 2:-2]) ** 2).mean((-2, -1))
                        for dy in (-1, 0, 1) for dx in (-1, 0, 1)]).min(0).values
    other = ((a[..., 2:-2, 2:-2] - a.roll(1, 0)[..., 2:-2, 2:-2]) ** 2).mean((-2, -1))  # another digit's frame
    assert best.mean() < 0.25 * other.mean(), (best.mean().item(), other.mean().item())


def test_wan_training_is_reproducible_and_loadable(tmp_path):
    outs = train_twice(tmp_path, "wan", 2)
    assert sha256_of(outs[0] / "wan.safetensors") == sha256_of(outs[1] / "wan.safetensors")
    meta = json.loads((outs[0] / "wan.json").read_text())
    assert meta["configs"]["num_frames"] == 5 and meta["configs"]["vae"]["scale_factor_temporal"] == 4
    x = zoo.sample("wan", zoo.load("wan", weights_dir=outs[0]), [1], seed=0, num_inference_steps=2)
    assert x.shape == (1, 1, 8, 8)


@pytest.mark.slow
def test_evaluate_wan_reports_frame_figures():
    res = evaluate("wan", per_digit=2, num_inference_steps=10)
    assert res["num_images"] == 20 and res["classified_frame"] == wan.MIDDLE_FRAME
    assert len(res["per_frame_accuracy"]) == 5 and 0 <= res["clip_accuracy"] <= res["accuracy_frames"] <= 1
    assert res["fd_test_frames"] > 0
