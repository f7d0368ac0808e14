"""The Wan-family reference model: a tiny flow-matching ``WanTransformer3DModel`` trained on short clips of
moving digits.

A clip is :data:`NUM_FRAMES` = 5 frames (Wan's ``1 + 4k`` frame counts, ``k = 1``) of one 16x16 digit (model
space, grey, ``[-1, 1]``) translating by a random velocity ``v`` in ``{-1, 0, 1}^2`` pixels per frame, centred
on the middle frame: frame ``t`` is the digit shifted by ``v * (t - 2)`` (at most 2 pixels at 16x16, one pixel
at the classifier's 8x8), with background fill.

It runs through the real ``WanPipeline``. The latent follows Wan's causal temporal layout, compressing time
by 4 like ``AutoencoderKLWan``: latent frame 0 holds pixel frame 0 (in all :data:`Z_DIM` = 4 channels), latent
frame ``k >= 1`` holds pixel frames ``4k-3 .. 4k`` as its 4 channels; space is not compressed, so a 5-frame
clip is a ``(4, 2, 16, 16)`` latent, 2 x 8 x 8 = 128 video tokens after the ``(1, 2, 2)`` patch embedding.
:class:`ClipVAE` is that exact packing wrapped around the zoo's shared near-identity VAE, which decodes each
frame (the same decoder every other digit family uses); it has the config ``WanPipeline`` reads from its
VAE (``z_dim``, ``latents_mean`` / ``latents_std``, ``scale_factor_temporal`` / ``scale_factor_spatial``), so
the pipeline decodes and post-processes the clip itself (``output_type="pt"`` gives ``(N, 5, 3, 16, 16)``).

There is no text encoder: each class (digits 0-9, and the empty prompt 10) has a learned 4-token prompt
embedding (``text_dim`` 32), trained with the model and shipped in its file, passed to the pipeline as
``prompt_embeds`` / ``negative_prompt_embeds`` (the empty prompt's). Guided sampling is the pipeline's own
CFG: one call per branch in ``cache_context("cond")`` / ``("uncond")`` with the step index.

Training: rectified flow, ``x_t = (1 - s) x_0 + s e`` with ``s`` uniform, timestep ``1000 s`` (Wan's
``FlowMatchEulerDiscreteScheduler`` timesteps), the model predicts ``e - x_0``, 10% prompt dropout, EMA.
Sampling uses ``FlowMatchEulerDiscreteScheduler(shift=1.0)`` (the checkpoints' ``shift`` 3-5 suits large
latents; at 128 tokens the unshifted schedule the model was trained on is best).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

from .data import load_digits_split, to_model_space

FAMILY = "wan"
#: the empty prompt's class (classifier-free guidance's negative)
NULL_PROMPT = 10
TEXT_TOKENS = 4
TEXT_DIM = 32
NUM_FRAMES = 5
#: the frame the ``digits`` / ``images`` outputs of ``zoo.sample("wan", ...)`` return (the unshifted one)
MIDDLE_FRAME = NUM_FRAMES // 2
TEMPORAL_SCALE = 4
Z_DIM = TEMPORAL_SCALE
MAX_SHIFT = 1
WAN_CONFIG: dict[str, Any] = {
    "patch_size": [1, 2, 2],
    "num_attention_heads": 4,
    "attention_head_dim": 16,
    "in_channels": Z_DIM,
    "out_channels": Z_DIM,
    "text_dim": TEXT_DIM,
    "freq_dim": 64,
    "ffn_dim": 128,
    "num_layers": 4,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 32,
}
SCHEDULER_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}


def classified_frame(x: torch.Tensor) -> torch.Tensor:
    """What the glyph classifier scores: images ``(N, C, H, W)`` as they are, clips ``(N, F, C, H, W)`` at
    :data:`MIDDLE_FRAME` (the frame the clip's digit is unshifted in)."""
    return x[:, MIDDLE_FRAME] if x.ndim == 5 else x


def latent_frames(num_frames: int = NUM_FRAMES) -> int:
    """Latent frames of a ``1 + 4k``-frame clip (Wan's ``(F - 1) // 4 + 1``)."""
    return (num_frames - 1) // TEMPORAL_SCALE + 1


def pack_clip(frames: torch.Tensor) -> torch.Tensor:
    """``(N, F, H, W)`` frames (``F = 1 + 4k``) -> ``(N, 4, 1 + k, H, W)`` latents (Wan's causal layout)."""
    n, f, h, w = frames.shape
    if (f - 1) % TEMPORAL_SCALE:
        raise ValueError(f"a clip has 1 + 4k frames, got {f}")
    first = frames[:, :1].expand(n, Z_DIM, h, w).unsqueeze(2)
    rest = frames[:, 1:].reshape(n, (f - 1) // TEMPORAL_SCALE, Z_DIM, h, w).transpose(1, 2)
    return torch.cat([first, rest], dim=2)


def unpack_clip(latents: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_clip`: ``(N, 4, 1 + k, H, W)`` -> ``(N, 1 + 4k, H, W)`` (frame 0: channel mean)."""
    n, c, lf, h, w = latents.shape
    first = latents[:, :, :1].mean(dim=1)
    rest = latents[:, :, 1:].transpose(1, 2).reshape(n, (lf - 1) * c, h, w)
    return torch.cat([first, rest], dim=1)


class ClipVAE(ModelMixin, ConfigMixin):
    """What ``WanPipeline`` decodes with: :func:`unpack_clip`, then the zoo's near-identity ``AutoencoderKL``
    (``frame_vae``) on every frame. ``decode(latents)[0]`` is the video ``(N, 3, F, H, W)`` in ``[-1, 1]``.

    ``encode(video)`` is the exact inverse packing of the grey video (no encoder network: the zoo trains on
    model-space digits directly, as its VAE's encoder is the identity).
    """

    @register_to_config
    def __init__(self, z_dim: int = Z_DIM, scale_factor_temporal: int = TEMPORAL_SCALE,
                 scale_factor_spatial: int = 1, latents_mean: list[float] | None = None,
                 latents_std: list[float] | None = None) -> None:
        super().__init__()
        self.register_to_config(latents_mean=latents_mean or [0.0] * z_dim, latents_std=latents_std or [1.0] * z_dim)
        self.frame_vae: nn.Module | None = None

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``(N, C, F, H, W)`` video in ``[-1, 1]`` -> latents (grey: the channel mean)."""
        return pack_clip(video.mean(dim=1))

    def decode(self, latents: torch.Tensor, return_dict: bool = True) -> Any:
        frames = unpack_clip(latents)
        n, f, h, w = frames.shape
        flat = frames.reshape(n * f, 1, h, w)
        decoded = self.frame_vae.decode(flat).sample if self.frame_vae is not None else flat.expand(-1, 3, h, w)
        video = decoded.reshape(n, f, -1, h, w).transpose(1, 2)
        return (video,) if not return_dict else {"sample": video}


class PromptTable(nn.Module):
    """Learned per-class prompt embeddings ``(11, 4, 32)`` (Wan conditions on text by cross-attention only)."""

    def __init__(self, classes: int = 11, tokens: int = TEXT_TOKENS, dim: int = TEXT_DIM) -> None:
        super().__init__()
        self.embeds = nn.Parameter(torch.randn(classes, tokens, dim) * 0.5)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embeds[labels]


def build_transformer(config: dict[str, Any] | None = None):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel.from_config(config or WAN_CONFIG)


def shift_frames(x: torch.Tensor, velocity: torch.Tensor, num_frames: int = NUM_FRAMES) -> torch.Tensor:
    """``(N, 1, H, W)`` model-space digits and ``(N, 2)`` integer ``(dy, dx)`` velocities -> ``(N, F, H, W)``
    clips: frame ``t`` is the digit shifted by ``velocity * (t - F // 2)``, background (-1) filled."""
    n, _, h, w = x.shape
    pad = MAX_SHIFT * (num_frames // 2)
    padded = nn.functional.pad(x[:, 0], (pad, pad, pad, pad), value=-1.0)
    rows, cols = torch.arange(h), torch.arange(w)
    frames = []
    for t in range(num_frames):
        off = velocity * (t - num_frames // 2)  # (N, 2)
        r = (pad - off[:, 0, None] + rows[None]).clamp(0, h + 2 * pad - 1)  # (N, H)
        c = (pad - off[:, 1, None] + cols[None]).clamp(0, w + 2 * pad - 1)
        frames.append(padded[torch.arange(n)[:, None, None], r[:, :, None], c[:, None, :]])
    return torch.stack(frames, dim=1)


def random_clips(x: torch.Tensor, gen: torch.Generator, num_frames: int = NUM_FRAMES) -> torch.Tensor:
    """Clips of the model-space digits ``x`` moving by seeded random velocities in ``{-1, 0, 1}^2``."""
    velocity = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (x.shape[0], 2), generator=gen)
    return shift_frames(x, velocity, num_frames)


def train_wan(cfg: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Trains the Wan-family model and its prompt table (``cfg``: the zoo's ``TrainConfig``)."""
    from .train import EMA, _drop, _Loop

    x_train, y_train = load_digits_split()[:2]
    x_train = to_model_space(x_train)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    model, prompts = build_transformer(), PromptTable()
    trainable = nn.ModuleDict({"model": model, "prompts": prompts})
    loop = _Loop(list(trainable.parameters()), cfg, FAMILY)
    ema = EMA(trainable, cfg.ema_decay)
    trainable.train()
    for _ in loop:
        idx = torch.randint(0, len(x_train), (cfg.batch_size,), generator=gen)
        x0 = pack_clip(random_clips(x_train[idx], gen))
        labels = _drop(y_train[idx], NULL_PROMPT, cfg.cond_drop, gen)
        s = torch.rand(cfg.batch_size, generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        sv = s.view(-1, 1, 1, 1, 1)
        xt = (1 - sv) * x0 + sv * noise
        pred = model(xt, timestep=s * 1000, encoder_hidden_states=prompts(labels), return_dict=False)[0]
        loop.backward(((pred - (noise - x0)) ** 2).mean())
        ema.update(trainable)
    tensors = {f"{FAMILY}.{k}": v for k, v in ema.shadow["model"].state_dict().items()}
    tensors.update({f"prompts.{k}": v for k, v in ema.shadow["prompts"].state_dict().items()})
    configs = {FAMILY: dict(model.config), "scheduler": SCHEDULER_CONFIG, "vae": dict(ClipVAE().config),
               "num_frames": NUM_FRAMES}
    return tensors, {"configs": configs, "training": loop.info()}


def load_wan(tensors: dict[str, torch.Tensor], meta: dict[str, Any], frame_vae: Any) -> Any:
    """A ready ``WanPipeline`` from the (checksum-verified) ``wan`` file's tensors and metadata.

    ``frame_vae`` is the zoo's shared near-identity VAE (decodes each frame). No text encoder or tokenizer:
    prompts come from the shipped table, see :func:`sample_wan`.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    from .files import split_state

    configs = meta["configs"]
    transformer = build_transformer(configs[FAMILY])
    transformer.load_state_dict(split_state(tensors, FAMILY))
    vae = ClipVAE(**{k: v for k, v in configs["vae"].items() if not k.startswith("_")})
    vae.frame_vae = frame_vae
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                       scheduler=FlowMatchEulerDiscreteScheduler(**configs["scheduler"]))
    table = PromptTable()
    table.load_state_dict(split_state(tensors, "prompts"))
    pipe.prompt_table = table.eval().requires_grad_(False)  # read by sample_wan
    return pipe


def sample_wan(pipe: Any, digits: list[int], kwargs: dict[str, Any], num_frames: int = NUM_FRAMES) -> torch.Tensor:
    """Clips ``(N, F, 3, 16, 16)`` in ``[0, 1]`` of ``digits`` from ``WanPipeline`` (CFG against the empty
    prompt when ``guidance_scale > 1``)."""
    table = pipe.prompt_table
    device, dtype = pipe.transformer.device, pipe.transformer.dtype
    labels = torch.tensor(digits)
    emb = table(labels).to(device, dtype)
    neg = table(torch.full_like(labels, NULL_PROMPT)).to(device, dtype)
    return pipe(prompt_embeds=emb, negative_prompt_embeds=neg, height=16, width=16, num_frames=num_frames,
                **kwargs).frames
