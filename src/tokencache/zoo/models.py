"""Architectures of the zoo models: the configs that training writes and loading rebuilds from.

All diffusion models work at 16x16 with **one latent channel, and the latent is the image itself** (the
digit in `[-1, 1]`, see `data.py`). The shipped `AutoencoderKL` is trained to be a near-identity map between
that 1-channel latent and a grey 3-channel image, so that the real diffusers pipelines (which always decode
through a VAE) can be used unchanged, and fidelity measured on latents and on images agrees.
"""

from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DiTTransformer2DModel,
    PixArtTransformer2DModel,
    UNet2DConditionModel,
)
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from .data import to_digit_space
from .glyphs import NUM_CLASSES, to_glyph_space
from .tokenizer import BOS_TOKEN, EOS_TOKEN, MAX_LENGTH, build_vocab_and_merges

NULL_CLASS = 1000
"""Class id of the unconditional (dropped) label for the DiT; `DiTPipeline` hard-codes 1000."""

SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
}

VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D"],
    "block_out_channels": [32],
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": 1,
    "norm_num_groups": 8,
    "sample_size": 16,
    "scaling_factor": 1.0,
    "mid_block_add_attention": False,
}

UNET_CONFIG: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 1,
    "out_channels": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
}

DIT_CONFIG: dict[str, Any] = {
    "num_attention_heads": 4,
    "attention_head_dim": 16,
    "in_channels": 1,
    "out_channels": 1,
    "num_layers": 4,
    "sample_size": 16,
    "patch_size": 2,
    "num_embeds_ada_norm": NULL_CLASS,
}

PIXART_CONFIG: dict[str, Any] = {
    "num_attention_heads": 4,
    "attention_head_dim": 16,
    "in_channels": 1,
    "out_channels": 1,
    "num_layers": 4,
    "cross_attention_dim": 64,
    "sample_size": 16,
    "patch_size": 2,
    "caption_channels": 32,
    "use_additional_conditions": False,
}


DIT2_CONFIG: dict[str, Any] = {
    "num_attention_heads": 4,
    "attention_head_dim": 16,
    "in_channels": 1,
    "out_channels": 1,
    "num_layers": 8,
    "sample_size": 32,
    "patch_size": 2,
    "num_embeds_ada_norm": NULL_CLASS,
}
"""Tier 2: 32x32 glyphs at patch 2 -> 256 tokens per self-attention, 8 blocks, width 64."""

UNET2_CONFIG: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 1,
    "out_channels": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 64, 96],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "cross_attention_dim": 32,
    "attention_head_dim": 1,
}
"""Tier 2: an SD-style UNet on 32x32 glyphs whose top level attends over 1024 tokens (one head of width 32,
which trains 2x faster on CPU than four of width 8), three levels (32x32, 16x16, 8x8), mid attention at 8x8."""


PIXART2_CONFIG: dict[str, Any] = {**PIXART_CONFIG, "num_layers": 8, "sample_size": 32}
"""Tier 2: a PixArt-alpha-style transformer on 32x32 glyphs: 256 tokens at patch 2, 8 blocks, width 64, cross-attention
to the letter prompts (`"the letter K"`)."""


def text_encoder_config() -> dict[str, Any]:
    """Config of the tiny `CLIPTextModel` (2 layers, width 32, 16 positions) used by the UNet and PixArt."""
    vocab, _ = build_vocab_and_merges()
    return {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "intermediate_size": 64,
        "projection_dim": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": MAX_LENGTH,
        "bos_token_id": vocab[BOS_TOKEN],
        "eos_token_id": vocab[EOS_TOKEN],
        "pad_token_id": vocab[EOS_TOKEN],
    }


def build_vae(config: dict[str, Any] | None = None) -> AutoencoderKL:
    """A tiny `AutoencoderKL` (16x16x3 image <-> 16x16x1 latent, no downsampling, ~90k parameters)."""
    return AutoencoderKL.from_config(config or VAE_CONFIG)


def build_text_encoder(config: dict[str, Any] | None = None) -> CLIPTextModel:
    """A tiny `CLIPTextModel` built from `text_encoder_config()` (or the given config dict)."""
    return CLIPTextModel(CLIPTextConfig(**(config or text_encoder_config())))


def build_unet(config: dict[str, Any] | None = None) -> UNet2DConditionModel:
    """A tiny SD-style `UNet2DConditionModel`: 16x16, widths (32, 64), self- and cross-attention at 16x16."""
    return UNet2DConditionModel.from_config(config or UNET_CONFIG)


def build_unet2(config: dict[str, Any] | None = None) -> UNet2DConditionModel:
    """The tier-2 SD-style `UNet2DConditionModel`: 32x32, widths (32, 64, 96), 1024-token top attention."""
    return UNet2DConditionModel.from_config(config or UNET2_CONFIG)


def build_dit(config: dict[str, Any] | None = None) -> DiTTransformer2DModel:
    """A tiny adaLN-Zero `DiTTransformer2DModel`: width 64, 4 layers, 64 tokens (16x16 at patch 2)."""
    return DiTTransformer2DModel.from_config(config or DIT_CONFIG)


def build_dit2(config: dict[str, Any] | None = None) -> DiTTransformer2DModel:
    """The tier-2 adaLN-Zero `DiTTransformer2DModel`: width 64, 8 layers, 256 tokens (32x32 at patch 2)."""
    return DiTTransformer2DModel.from_config(config or DIT2_CONFIG)


def build_pixart(config: dict[str, Any] | None = None) -> PixArtTransformer2DModel:
    """A tiny adaLN-single `PixArtTransformer2DModel`: width 64, 4 layers, 64 tokens, cross-attention."""
    return PixArtTransformer2DModel.from_config(config or PIXART_CONFIG)


def build_pixart2(config: dict[str, Any] | None = None) -> PixArtTransformer2DModel:
    """The tier-2 adaLN-single `PixArtTransformer2DModel`: width 64, 8 layers, 256 tokens, cross-attention."""
    return PixArtTransformer2DModel.from_config(config or PIXART2_CONFIG)


def build_scheduler(config: dict[str, Any] | None = None) -> DDIMScheduler:
    """The DDIM scheduler shipped with every pipeline (linear betas 1e-4..0.02, epsilon, no clipping)."""
    return DDIMScheduler.from_config(config or SCHEDULER_CONFIG)


class DigitClassifier(nn.Module):
    """A small CNN digit classifier on 8x8 images, the zoo's offline stand-in for Inception.

    Args:
        width (`int`, defaults to 32): channels of the second convolution.
        num_features (`int`, defaults to 64): size of the penultimate feature layer used for Frechet distance.

    Example:
        ```py
        >>> clf = load_classifier()
        >>> clf(images).argmax(-1)  # images: (N, C, 8 or 16, 8 or 16) in [0, 1]
        >>> clf.features(images).shape
        torch.Size([N, 64])
        ```
    """

    def __init__(self, width: int = 32, num_features: int = 64):
        super().__init__()
        self.num_features = num_features
        self.conv = nn.Sequential(
            nn.Conv2d(1, width // 2, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.fc = nn.Linear(width * 16, num_features)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(num_features, 10)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations `(N, num_features)` of images in `[0, 1]` (see `to_digit_space`)."""
        x = to_digit_space(images) * 2.0 - 1.0
        return torch.relu(self.fc(self.conv(x)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits `(N, 10)` of images in `[0, 1]`, shaped `(N, C, 8|16, 8|16)` or `(N, 8|16, 8|16)`."""
        return self.head(self.dropout(self.features(images)))


class GlyphClassifier(nn.Module):
    """A small CNN letter classifier on 32x32 glyphs (tier 2), trained on the train fonts only.

    Args:
        width (`int`, defaults to 32): channels of the second convolution (the third and fourth have twice it).
        num_features (`int`, defaults to 64): size of the penultimate feature layer used for Frechet distance.
        num_classes (`int`, defaults to 26): output classes (the capitals A-Z).

    Example:
        ```py
        >>> clf = load_classifier(tier=2)
        >>> clf(images).argmax(-1)  # images: (N, C, 32, 32) in [0, 1]
        >>> clf.features(images).shape
        torch.Size([N, 64])
        ```
    """

    def __init__(self, width: int = 32, num_features: int = 64, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.num_features = num_features
        self.conv = nn.Sequential(
            nn.Conv2d(1, width // 2, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 16x16
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4
            nn.Flatten(),
        )
        self.fc = nn.Linear(2 * width * 16, num_features)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(num_features, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations `(N, num_features)` of images in `[0, 1]`, `(N, C, 32, 32)`."""
        x = to_glyph_space(images) * 2.0 - 1.0
        return torch.relu(self.fc(self.conv(x)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits `(N, num_classes)` of images in `[0, 1]`, shaped `(N, C, 32, 32)` or `(N, 32, 32)`."""
        return self.head(self.dropout(self.features(images)))
