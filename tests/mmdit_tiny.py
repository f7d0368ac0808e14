"""Tiny random-weight FLUX, SD3.5, Wan and Qwen-Image transformers and their seeded inputs (tests only).

Configs follow ``shared/research/mmdit.md`` section 6; every one builds and runs in well under a second.
Token grids are non-square (4 x 6 image tokens) so a row/column mix-up shows.
"""

from __future__ import annotations

import torch


def tiny_flux(double: int = 2, single: int = 2):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=double, num_single_layers=single, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
        axes_dims_rope=(4, 4, 8),
    ).eval()


def flux_ids(h: int = 4, w: int = 6) -> torch.Tensor:
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(h * w, 3)


def flux_inputs(b, g, h=4, w=6):
    kw = {
        "encoder_hidden_states": torch.randn(b, 7, 32, generator=g),
        "pooled_projections": torch.randn(b, 32, generator=g),
        "img_ids": flux_ids(h, w),
        "txt_ids": torch.zeros(7, 3),
        "guidance": torch.full((b,), 3.5),
    }
    return (torch.randn(b, h * w, 4, generator=g),), kw


def tiny_sd3(layers: int = 3):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    return SD3Transformer2DModel(  # SD3.5-style: dual attention in block 0, RMS q/k norm
        sample_size=32, patch_size=1, in_channels=4, num_layers=layers, attention_head_dim=8, num_attention_heads=4,
        caption_projection_dim=32, joint_attention_dim=64, pooled_projection_dim=64, out_channels=4,
        pos_embed_max_size=32, dual_attention_layers=(0,), qk_norm="rms_norm",
    ).eval()


def sd3_inputs(b, g, h=4, w=6):
    kw = {
        "encoder_hidden_states": torch.randn(b, 7, 64, generator=g),
        "pooled_projections": torch.randn(b, 64, generator=g),
    }
    return (torch.randn(b, 4, h, w, generator=g),), kw


def tiny_wan(layers: int = 2):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    ).eval()


def wan_inputs(b, g, frames=2, h=8, w=12):
    text = torch.randn(b, 7, 32, generator=g)
    return (torch.randn(b, 16, frames, h, w, generator=g),), {"encoder_hidden_states": text}


def tiny_qwen(layers: int = 2):
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    return QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=layers, attention_head_dim=16, num_attention_heads=3,
        joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4),
    ).eval()


def qwen_inputs(b, g, h=4, w=6):
    kw = {
        "encoder_hidden_states": torch.randn(b, 7, 16, generator=g),
        "encoder_hidden_states_mask": torch.ones(b, 7, dtype=torch.long),
        "img_shapes": [[(1, h, w)]] * b,
    }
    return (torch.randn(b, h * w, 16, generator=g),), kw
