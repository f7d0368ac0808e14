"""``BasicTransformerBlock`` transformers: DiT, PixArt-alpha/Sigma and Latte.

Blocks sit in ``transformer_blocks`` (and, for Latte, ``temporal_transformer_blocks``, which run
after each spatial block; the temporal stack's last block ends the backbone unless the call passes
``enable_temporal_attentions=False``). Each block has ``attn1`` (self-attention), ``attn2``
(cross-attention, PixArt/Latte) and ``ff``; every token of a block's sequence is an image token. The
token grid is the latent's ``h x w`` divided by the patch size. The pipelines batch classifier-free
guidance as ``[uncond; cond]``.
"""

from __future__ import annotations

import torch

from . import BlockIO, ModelAdapter, register_adapter


def _stacks(model: torch.nn.Module) -> list[tuple[str, torch.nn.ModuleList]]:
    stacks = [("transformer_blocks", model.transformer_blocks)]
    temporal = getattr(model, "temporal_transformer_blocks", None)
    if temporal is not None and len(temporal):
        stacks.append(("temporal_transformer_blocks", temporal))
    return stacks


def _active(stacks: tuple[str, ...], kwargs: dict) -> tuple[str, ...]:
    if kwargs.get("enable_temporal_attentions", True):
        return stacks
    return tuple(s for s in stacks if s != "temporal_transformer_blocks")


def _grid(model: torch.nn.Module, x: torch.Tensor, kwargs: dict | None = None) -> tuple[int, int]:
    patch = int(getattr(model.config, "patch_size", None) or 1)
    return x.shape[-2] // patch, x.shape[-1] // patch


BASIC_TRANSFORMER = register_adapter(
    ModelAdapter(
        name="basic-transformer",
        classes=("DiTTransformer2DModel", "PixArtTransformer2DModel", "LatteTransformer3DModel"),
        structure="transformer",
        cfg_layout="batched",
        block_io=BlockIO(hidden_arg="hidden_states"),
        roles={"attn1": "attn1", "attn2": "attn2", "ff": "ff"},
        block_classes=("BasicTransformerBlock",),
        stacks=_stacks,
        active_stacks=_active,
        token_grid=_grid,
    )
)
