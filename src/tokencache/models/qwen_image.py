"""Qwen-Image: ``QwenImageTransformer2DModel``, dual-stream (MMDiT) blocks.

Each ``QwenImageTransformerBlock`` (``transformer_blocks``) has joint attention ``attn`` returning
``(image, text)`` outputs after their projections (rotary embeddings per token, so it never runs on a
subset), the image MLP ``img_mlp`` and the text MLP ``txt_mlp``; modulation and gates sit in the block.
Blocks return ``(encoder_hidden_states, hidden_states)``. Tokens are 2x2-packed latents; ``img_shapes``
gives ``(frames, h, w)``. The pipeline calls the model per branch in ``cache_context("cond")`` /
``("uncond")`` (true CFG needs a negative prompt).
"""

from __future__ import annotations

import torch

from . import JOINT_BLOCK_IO, ModelAdapter, register_adapter
from .flux import packed_grid


def _grid(model: torch.nn.Module, x: torch.Tensor, kwargs: dict) -> tuple[int, int]:
    shapes = kwargs.get("img_shapes")
    try:
        f, h, w = shapes[0][0]
        if f * h * w == x.shape[1]:
            return int(f) * int(h), int(w)
    except (TypeError, IndexError, ValueError):
        pass
    return packed_grid(x, None)


def _input_norms(block: torch.nn.Module) -> dict[str, str | tuple[str, ...]]:
    """Each stream's first norm feeds only the joint attention, its second only that stream's MLP; left out
    with ``zero_cond_t`` (Qwen-Image-Edit-2511), whose per-token modulation index has the sequence's length."""
    if getattr(block, "zero_cond_t", False):
        return {}
    return {"attn1": ("img_norm1", "txt_norm1"), "ff": "img_norm2", "ff_context": "txt_norm2"}


QWEN_IMAGE = register_adapter(
    ModelAdapter(
        name="qwen-image",
        classes=("QwenImageTransformer2DModel",),
        structure="transformer",
        cfg_layout="per_context",
        block_io=JOINT_BLOCK_IO,
        roles={"attn1": "attn", "ff": "img_mlp", "ff_context": "txt_mlp"},
        partial_roles=("ff", "ff_context"),
        block_classes=("QwenImageTransformerBlock",),
        stacks=lambda model: [("transformer_blocks", model.transformer_blocks)],
        token_grid=_grid,
        image_tokens="streams",
        input_norms=_input_norms,
        timestep_scale=1000.0,
    )
)
