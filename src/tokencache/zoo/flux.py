"""The FLUX-family reference models: tiny flow-matching ``FluxTransformer2DModel``s trained on the digits (tier 1,
``flux``) and on the rendered glyphs A-Z (tier 2, ``flux2``).

They run through the real ``FluxPipeline``: the image (model space, one channel; 16x16 digits or 32x32 glyphs) is
the latent, packed 2x2 into 64 (tier 1) or 256 (tier 2) image tokens of 4 channels, decoded by the zoo's
near-identity VAE. Tier 1 has 2 double-stream and 4 single-stream blocks, tier 2 2 + 6 (8 blocks at 256 tokens,
the issue's scale). There is no text encoder: each class (digits 0-9 or letters 0-25, then the empty prompt)
has a learned 4-token "prompt embedding" and a pooled embedding, trained with the model and shipped in its file,
passed to the pipeline as ``prompt_embeds`` / ``pooled_prompt_embeds``. The model is not guidance-distilled
(``guidance_embeds=False``, like FLUX.1-schnell); guided sampling uses the pipeline's true CFG
(``true_cfg_scale`` with the empty prompt as negative), so the pipeline calls the model once per branch
inside ``cache_context("cond")`` / ``("uncond")``, the per-context path FLUX users take.

Training: rectified flow, ``x_t = (1 - s) x_0 + s e`` with ``s`` uniform, the model predicts
``e - x_0`` (what ``FlowMatchEulerDiscreteScheduler`` integrates), 10% label dropout, EMA.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .data import load_digits_split, to_model_space
from .glyphs import GLYPH_SIZE, NUM_CLASSES

FAMILY = "flux"
TEXT_TOKENS = 4
FLUX_CONFIG: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 4,
    "out_channels": 4,
    "num_layers": 2,
    "num_single_layers": 4,
    "attention_head_dim": 16,
    "num_attention_heads": 4,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 32,
    "guidance_embeds": False,
    "axes_dims_rope": [4, 6, 6],
}
#: tier 2 (``flux2``): 256 image tokens (32x32 glyphs packed 2x2), 2 double-stream + 6 single-stream blocks
FLUX2_CONFIG: dict[str, Any] = {**FLUX_CONFIG, "num_single_layers": 6}
SCHEDULER_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}
DEFAULTS: dict[str, Any] = {"steps": 3000, "batch_size": 64, "lr": 5e-4}


class PromptTable(nn.Module):
    """Learned per-class prompt embeddings ``(11, 4, 32)`` and pooled embeddings ``(11, 32)``."""

    def __init__(self, classes: int = 11, tokens: int = TEXT_TOKENS, dim: int = 32, pooled: int = 32) -> None:
        super().__init__()
        self.embeds = nn.Parameter(torch.randn(classes, tokens, dim) * 0.5)
        self.pooled = nn.Parameter(torch.randn(classes, pooled) * 0.5)

    def forward(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embeds[labels], self.pooled[labels]


def build_transformer(config: dict[str, Any] | None = None):
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel.from_config(config or FLUX_CONFIG)


def pack(x: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` latents -> ``(N, H/2 * W/2, 4)`` tokens (FluxPipeline's 2x2 packing, row-major)."""
    n, c, h, w = x.shape
    x = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, (h // 2) * (w // 2), c * 4)


def image_ids(h: int = 8, w: int = 8) -> torch.Tensor:
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(h * w, 3)


def _training_set(tier: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed training latents and labels: the digits' train split (tier 1) or the glyph train fonts (tier 2)."""
    if tier == 1:
        x_train, y_train = load_digits_split()[:2]
        return pack(to_model_space(x_train)), y_train
    from .glyphs import glyph_split
    from .train import GLYPH_TRAIN_COPIES

    split = glyph_split(seed=0, per_font=GLYPH_TRAIN_COPIES)  # the same set as the other tier-2 models
    return pack(split.x_train * 2.0 - 1.0), split.y_train


def train_flux(cfg: Any, tier: int = 1) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Trains the FLUX-family model and its prompt table (``cfg``: the zoo's ``TrainConfig``).

    Tier 1: digits, 64 tokens, :data:`FLUX_CONFIG`; tier 2: glyphs A-Z, 256 tokens, :data:`FLUX2_CONFIG`.
    """
    from .train import EMA, _drop, _Loop

    x_train, y_train = _training_set(tier)
    classes = 10 if tier == 1 else NUM_CLASSES
    side = 8 if tier == 1 else GLYPH_SIZE // 2
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    model = build_transformer(FLUX_CONFIG if tier == 1 else FLUX2_CONFIG)
    prompts = PromptTable(classes + 1)
    trainable = nn.ModuleDict({"model": model, "prompts": prompts})
    loop = _Loop(list(trainable.parameters()), cfg, FAMILY if tier == 1 else f"{FAMILY}2")
    ema = EMA(trainable, cfg.ema_decay)
    ids, txt_ids = image_ids(side, side), torch.zeros(TEXT_TOKENS, 3)
    trainable.train()
    for _ in loop:
        idx = torch.randint(0, len(x_train), (cfg.batch_size,), generator=gen)
        x0, labels = x_train[idx], _drop(y_train[idx], classes, cfg.cond_drop, gen)
        s = torch.rand(cfg.batch_size, generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        xt = (1 - s.view(-1, 1, 1)) * x0 + s.view(-1, 1, 1) * noise
        emb, pooled = prompts(labels)
        pred = model(xt, encoder_hidden_states=emb, pooled_projections=pooled, timestep=s, img_ids=ids,
                     txt_ids=txt_ids, return_dict=False)[0]
        loop.backward(((pred - (noise - x0)) ** 2).mean())
        ema.update(trainable)
    tensors = {f"{FAMILY}.{k}": v for k, v in ema.shadow["model"].state_dict().items()}
    tensors.update({f"prompts.{k}": v for k, v in ema.shadow["prompts"].state_dict().items()})
    configs = {FAMILY: dict(model.config), "scheduler": SCHEDULER_CONFIG}
    return tensors, {"configs": configs, "training": loop.info()}


def load_flux(tensors: dict[str, torch.Tensor], meta: dict[str, Any], vae: Any) -> Any:
    """A ready ``FluxPipeline`` from the (checksum-verified) ``flux`` / ``flux2`` file's tensors and metadata.

    No text encoders: prompts come from the shipped table, see :func:`sample_flux`. The pipeline carries
    ``prompt_table`` (classes then the empty prompt) and ``image_size`` (16 for tier 1, 32 for tier 2).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    from .files import split_state

    transformer = build_transformer(meta["configs"][FAMILY])
    transformer.load_state_dict(split_state(tensors, FAMILY))
    vae.register_to_config(shift_factor=0.0)  # FluxPipeline shifts latents before decoding
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**meta["configs"]["scheduler"]), vae=vae,
                        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                        transformer=transformer)
    prompts = split_state(tensors, "prompts")
    table = PromptTable(prompts["embeds"].shape[0])
    table.load_state_dict(prompts)
    pipe.prompt_table = table.eval().requires_grad_(False)  # read by sample_flux
    pipe.image_size = 16 if meta.get("tier", 1) == 1 else GLYPH_SIZE
    return pipe


def sample_flux(pipe: Any, digits: list[int], kwargs: dict[str, Any]) -> torch.Tensor:
    """Images ``(N, 3, S, S)`` of ``digits`` (or letters, tier 2) from ``FluxPipeline`` with true CFG against the
    empty prompt (the table's last row); ``S`` is the pipeline's ``image_size`` (16 or 32)."""
    table = pipe.prompt_table
    device = pipe.transformer.device
    dtype = pipe.transformer.dtype
    labels = torch.tensor(digits)
    null = table.embeds.shape[0] - 1
    emb, pooled = (t.to(device, dtype) for t in table(labels))
    neg, neg_pooled = (t.to(device, dtype) for t in table(torch.full_like(labels, null)))
    guidance = kwargs.pop("guidance_scale")
    size = getattr(pipe, "image_size", 16)
    return pipe(prompt_embeds=emb, pooled_prompt_embeds=pooled, negative_prompt_embeds=neg,
                negative_pooled_prompt_embeds=neg_pooled, true_cfg_scale=guidance, height=size, width=size,
                **kwargs).images
