"""Stable Diffusion 3 / 3.5 (medium, large): ``SD3Transformer2DModel``, joint (MMDiT) blocks.

Each ``JointTransformerBlock`` (``transformer_blocks``) has joint attention ``attn`` returning ``(image,
text)`` outputs after their projections, the image feed-forward ``ff`` and the text feed-forward
``ff_context``; SD3.5's dual-attention layers add ``attn2``, a second *image* self-attention (role
``attn_dual``, cached like ``attn1``). The last block is ``context_pre_only``: no text feed-forward, and it
returns ``(None, hidden_states)``. Blocks return ``(encoder_hidden_states, hidden_states)``; gates sit in
the block (the cached outputs are pre-gate). The model patchifies ``(B, C, H, W)`` latents with
``patch_size``; the text tokens sit after the image tokens in the joint sequence.

The pipeline batches CFG as ``[uncond; cond]`` and sets no cache context. Skip-layer guidance adds a
cond-only call with ``skip_layers`` on some steps; those calls run uncached and are not counted as steps.
"""

from __future__ import annotations

import torch

from . import JOINT_BLOCK_IO, ModelAdapter, register_adapter


def _input_norms(block: torch.nn.Module) -> dict[str, str | tuple[str, ...]]:
    """``JointTransformerBlock.forward``: ``norm1``'s inner norm feeds the joint attention and, in SD3.5's
    dual-attention blocks, ``attn2`` too (through its own shift and scale); ``norm1_context``'s feeds the joint
    attention's text input; ``norm2`` / ``norm2_context`` feed only their stream's feed-forward. Feed-forward
    chunking splits the feed-forward's input by length, so those norms are left out then."""
    norms: dict[str, str | tuple[str, ...]] = {"attn1": ("norm1.norm", "norm1_context.norm")}
    if getattr(block, "use_dual_attention", False):
        norms["attn_dual"] = "norm1.norm"
    if getattr(block, "_chunk_size", None) is None:
        norms.update(ff="norm2", ff_context="norm2_context")
    return norms


def _grid(model: torch.nn.Module, x: torch.Tensor, kwargs: dict) -> tuple[int, int]:
    patch = int(model.config.patch_size)
    return x.shape[-2] // patch, x.shape[-1] // patch


SD3 = register_adapter(
    ModelAdapter(
        name="sd3",
        classes=("SD3Transformer2DModel",),
        structure="transformer",
        cfg_layout="batched",
        block_io=JOINT_BLOCK_IO,
        roles={"attn1": "attn", "attn_dual": "attn2", "ff": "ff", "ff_context": "ff_context"},
        partial_roles=("ff", "ff_context"),
        block_classes=("JointTransformerBlock",),
        stacks=lambda model: [("transformer_blocks", model.transformer_blocks)],
        token_grid=_grid,
        image_tokens="streams",
        uncached_call=lambda kwargs: kwargs.get("skip_layers") is not None,
        input_norms=_input_norms,
    )
)
