"""Tiny random-weight FLUX, SD3, Wan (2.1 and 2.2) and Qwen-Image pipelines of the real diffusers classes.

Tokenizers are word-level vocabularies built in memory, text encoders tiny CLIP / T5 / UMT5 / Qwen2.5-VL
configs; nothing is downloaded. Used by the family tests and the demo's MMDiT rows.
"""

from __future__ import annotations

import torch

from mmdit_tiny import tiny_flux, tiny_qwen, tiny_wan

WORDS = ["a", "photo", "of", "cat", "dog", "the", "letter", "digit", "in", "serif", "font", "moving"]


def tokenizer(max_length: int = 16):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "<s>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", bos_token="<s>",
        model_max_length=max_length,
    )


def _clip(projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(1)
    cfg = CLIPTextConfig(vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, projection_dim=32, bos_token_id=3,
                         eos_token_id=1, pad_token_id=0)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def _t5(umt5: bool = False):
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    torch.manual_seed(2)
    kw = dict(vocab_size=1000, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
              relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return UMT5EncoderModel(UMT5Config(**kw)).eval() if umt5 else T5EncoderModel(T5Config(**kw)).eval()


def _vae(latent_channels: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(3)
    return AutoencoderKL(sample_size=32, block_out_channels=(4,), layers_per_block=1, latent_channels=latent_channels,
                         norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
                         scaling_factor=1.5035).eval()


def flux_pipe(img2img: bool = False):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxImg2ImgPipeline, FluxPipeline

    sched = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                            base_image_seq_len=256, max_image_seq_len=4096)
    cls = FluxImg2ImgPipeline if img2img else FluxPipeline
    return cls(scheduler=sched, vae=_vae(1), text_encoder=_clip(), tokenizer=tokenizer(), text_encoder_2=_t5(),
               tokenizer_2=tokenizer(), transformer=tiny_flux()).to("cpu")


def sd3_pipe():
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=1, in_channels=4, num_layers=3, attention_head_dim=8, num_attention_heads=4,
        caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64, out_channels=4,
        pos_embed_max_size=32, dual_attention_layers=(0,), qk_norm="rms_norm",
    ).eval()
    return StableDiffusion3Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=_vae(4), text_encoder=_clip(True),
        tokenizer=tokenizer(), text_encoder_2=_clip(True), tokenizer_2=tokenizer(), text_encoder_3=_t5(),
        tokenizer_3=tokenizer(), transformer=transformer,
    )


def wan_pipe(two_experts: bool = False, expand_timesteps: bool = False):
    """Wan 2.1; ``two_experts``: Wan 2.2 A14B's expert switch; ``expand_timesteps``: Wan 2.2 TI2V-5B's per-token
    timesteps (so per-token modulation inside each block)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline

    torch.manual_seed(3)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    second = None
    if two_experts:
        second = tiny_wan()
        with torch.no_grad():
            for p in second.parameters():
                p.mul_(0.9)  # a different expert, same config
    return WanPipeline(tokenizer=tokenizer(), text_encoder=_t5(umt5=True), vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), transformer=tiny_wan(),
                       transformer_2=second, boundary_ratio=0.875 if two_experts else None,
                       expand_timesteps=expand_timesteps)


def qwen_pipe():
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImagePipeline
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(4)
    cfg = Qwen2_5_VLConfig(
        text_config=dict(hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, vocab_size=1000, rope_theta=1e6,
                         rope_scaling={"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}),
        vision_config=dict(depth=2, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=16),
        vision_start_token_id=999, image_token_id=998, video_token_id=997,
    )
    encoder = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    vae = AutoencoderKLQwenImage(base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1,
                                 temperal_downsample=[False, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                                            base_image_seq_len=256, max_image_seq_len=8192)
    return QwenImagePipeline(scheduler=sched, vae=vae.eval(), text_encoder=encoder, tokenizer=tokenizer(1024),
                             transformer=tiny_qwen())
