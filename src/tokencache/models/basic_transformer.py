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


def _input_norms(block: torch.nn.Module) -> dict[str, str]:
    """The norms whose output only one module reads, per ``norm_type`` (``BasicTransformerBlock.forward``).

    Feed-forward chunking (``set_chunk_feed_forward``) splits ``ff``'s input by length, so ``ff``'s norm is
    left out then.
    """
    kind = getattr(block, "norm_type", None)
    if kind == "ada_norm_zero":  # AdaLayerNormZero: its inner LayerNorm; the gates come from its own Linear
        norms = {"attn1": "norm1.norm", "attn2": "norm2", "ff": "norm3"}
    elif kind == "ada_norm_single":  # PixArt: attn2 reads the hidden states themselves, norm2 feeds ff
        norms = {"attn1": "norm1", "ff": "norm2"}
    elif kind == "layer_norm":
        norms = {"attn1": "norm1", "attn2": "norm2", "ff": "norm3"}
    else:  # ada_norm / ada_norm_continuous take the timestep or pooled text: not declared
        return {}
    if getattr(block, "pos_embed", None) is not None:  # a positional embedding of the normed tokens
        return {}
    if getattr(block, "attn2", None) is None:
        norms.pop("attn2", None)
    if getattr(block, "_chunk_size", None) is not None:
        norms.pop("ff", None)
    return norms


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
        input_norms=_input_norms,
    )
)
