"""Tiny diffusers components built from configs, offline (tokenizer from a vocab file we write)."""

from __future__ import annotations

import json

import pytest
import torch


def write_clip_tokenizer(path) -> None:
    """A CLIP BPE tokenizer over lowercase letters, digits and a few words: no download."""
    path.mkdir(parents=True, exist_ok=True)
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")


def corrupt_zoo_copy(tmp_path, name: str):
    """A copy of the shipped zoo weights in ``tmp_path / "weights"`` with the last byte of ``name`` flipped."""
    import shutil

    from tokencache import zoo

    dst = tmp_path / "weights"
    if not dst.exists():
        shutil.copytree(zoo.WEIGHTS_DIR, dst)
    path = dst / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    return dst


def tiny_text_encoder(dim: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    cfg = CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=dim, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=80, max_position_embeddings=77,
        projection_dim=dim,
    )
    return CLIPTextModel(cfg).eval()


def tiny_unet(sdxl: bool = False):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    kw = dict(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, norm_num_groups=8,
        block_out_channels=(16, 32), cross_attention_dim=32, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )
    if sdxl:
        kw.update(
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=80,
            cross_attention_dim=64, transformer_layers_per_block=(1, 2),
        )
    return UNet2DConditionModel(**kw).eval()


def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    ).eval()


@pytest.fixture(scope="session")
def sd_components(tmp_path_factory):
    from diffusers import DDIMScheduler
    from transformers import CLIPTokenizer

    tok_dir = tmp_path_factory.mktemp("tok")
    write_clip_tokenizer(tok_dir)
    return dict(
        unet=tiny_unet(), vae=tiny_vae(), text_encoder=tiny_text_encoder(),
        tokenizer=CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77),
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


@pytest.fixture
def sd_pipe(sd_components):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**sd_components)
    pipe.set_progress_bar_config(disable=True)
    yield pipe
    import tokencache as tc

    tc.remove(pipe)


def run_sd(pipe, steps=10, seed=0, guidance=7.5, prompt="a cat", **kw):
    g = torch.Generator().manual_seed(seed)
    return pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, generator=g,
                output_type="latent", height=16, width=16, **kw).images


@pytest.fixture(scope="module")
def saved_pipe(sd_components, tmp_path_factory):
    from diffusers import StableDiffusionPipeline

    path = tmp_path_factory.mktemp("pipe") / "sd"
    StableDiffusionPipeline(**sd_components).save_pretrained(path)
    return path


class _Result:
    def __init__(self, rc, out, err):
        self.returncode, self.stdout, self.stderr = rc, out, err


@pytest.fixture
def cli(capsys):
    """Run the ``tokencache`` command in this process; returns code, stdout, stderr."""
    from tokencache.cli import main

    def run(*args):
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out = capsys.readouterr()
        return _Result(rc, out.out, out.err)

    return run


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.slow` tests run only when selected, e.g. `pytest -m slow`."""
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow; run with `pytest -m slow`")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
