"""The FLUX-family reference model: a tiny flow-matching ``FluxTransformer2DModel`` trained on the digits.

It runs through the real ``FluxPipeline``: the digit (model space, 16x16, one channel) is the latent,
packed 2x2 into 64 image tokens of 4 channels, decoded by the zoo's near-identity VAE. There is no
text encoder: each class (digits 0-9, and the empty prompt 10) has a learned 4-token "prompt
embedding" and a pooled embedding, trained with the model and shipped in its file, passed to the
pipeline as ``prompt_embeds`` / ``pooled_prompt_embeds``. The model is not guidance-distilled
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

FAMILY = "flux"
#: the empty prompt's class (classifier-free guidance's negative)
NULL_PROMPT = 10
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
    """``(N, 1, 16, 16)`` latents -> ``(N, 64, 4)`` tokens (FluxPipeline's 2x2 packing, row-major)."""
    n, c, h, w = x.shape
    x = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, (h // 2) * (w // 2), c * 4)


def image_ids(h: int = 8, w: int = 8) -> torch.Tensor:
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(h * w, 3)


def train_flux(cfg: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Trains the FLUX-family model and its prompt table (``cfg``: the zoo's ``TrainConfig``)."""
    from .train import EMA, _drop, _Loop

    x_train, y_train = load_digits_split()[:2]
    x_train = pack(to_model_space(x_train))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    model, prompts = build_transformer(), PromptTable()
    trainable = nn.ModuleDict({"model": model, "prompts": prompts})
    loop = _Loop(list(trainable.parameters()), cfg, FAMILY)
    ema = EMA(trainable, cfg.ema_decay)
    ids, txt_ids = image_ids(), torch.zeros(TEXT_TOKENS, 3)
    trainable.train()
    for _ in loop:
        idx = torch.randint(0, len(x_train), (cfg.batch_size,), generator=gen)
        x0, labels = x_train[idx], _drop(y_train[idx], NULL_PROMPT, cfg.cond_drop, gen)
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
    """A ready ``FluxPipeline`` from the (checksum-verified) ``flux`` file's tensors and metadata.

    No text encoders: prompts come from the shipped table, see :func:`sample_flux`.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    from .files import split_state

    transformer = build_transformer(meta["configs"][FAMILY])
    transformer.load_state_dict(split_state(tensors, FAMILY))
    vae.register_to_config(shift_factor=0.0)  # FluxPipeline shifts latents before decoding
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**meta["configs"]["scheduler"]), vae=vae,
                        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                        transformer=transformer)
    table = PromptTable()
    table.load_state_dict(split_state(tensors, "prompts"))
    pipe.prompt_table = table.eval().requires_grad_(False)  # read by sample_flux
    return pipe


def sample_flux(pipe: Any, digits: list[int], kwargs: dict[str, Any]) -> torch.Tensor:
    """Images ``(N, 3, 16, 16)`` of ``digits`` from ``FluxPipeline`` with true CFG against the empty prompt."""
    table = pipe.prompt_table
    device = pipe.transformer.device
    dtype = pipe.transformer.dtype
    labels = torch.tensor(digits)
    emb, pooled = (t.to(device, dtype) for t in table(labels))
    neg, neg_pooled = (t.to(device, dtype) for t in table(torch.full_like(labels, NULL_PROMPT)))
    guidance = kwargs.pop("guidance_scale")
    return pipe(prompt_embeds=emb, pooled_prompt_embeds=pooled, negative_prompt_embeds=neg,
                negative_pooled_prompt_embeds=neg_pooled, true_cfg_scale=guidance, height=16, width=16,
                **kwargs).images
