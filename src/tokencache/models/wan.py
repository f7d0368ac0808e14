"""Wan 2.1 / 2.2 video DiTs: ``WanTransformer3DModel``.

Each ``WanTransformerBlock`` (``blocks``) has self-attention ``attn1`` (3-D rotary embeddings, so it
never runs on a subset of queries), cross-attention ``attn2`` to the text (added ungated), and the
feed-forward ``ffn``; the gates of ``attn1``/``ffn`` sit in the block. Blocks take ``(hidden_states,
encoder_hidden_states, temb, rotary_emb)`` positionally and return a tensor. Every token of the
sequence is a video token, ordered ``(frame, row, column)`` after the ``(1, 2, 2)`` patch embedding; the
grid stacks the frames along ``h``. Wan 2.2 TI2V's per-token modulation stays in the block.

The pipeline calls the model per branch in ``cache_context("cond")`` / ``("uncond")`` with the step
index; Wan 2.2 A14B switches from ``transformer`` to ``transformer_2`` at a boundary step (``tc.apply``
on the pipeline accelerates both, counting steps across them, each with its own caches).
"""

from __future__ import annotations

import torch

from . import BlockIO, ModelAdapter, register_adapter


def _grid(model: torch.nn.Module, x: torch.Tensor, kwargs: dict) -> tuple[int, int]:
    p_t, p_h, p_w = model.config.patch_size
    return (x.shape[2] // p_t) * (x.shape[3] // p_h), x.shape[4] // p_w


def _per_token_timesteps(args: tuple, kwargs: dict) -> bool:
    """Wan 2.2 TI2V passes one timestep per token (``(B, N)``): its blocks then modulate each token alone."""
    t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
    return isinstance(t, torch.Tensor) and t.ndim >= 2


WAN = register_adapter(
    ModelAdapter(
        name="wan",
        classes=("WanTransformer3DModel",),
        structure="transformer",
        cfg_layout="per_context",
        block_io=BlockIO(hidden_arg="hidden_states"),
        roles={"attn1": "attn1", "attn2": "attn2", "ff": "ffn"},
        partial_roles=("attn2", "ff"),
        block_classes=("WanTransformerBlock",),
        stacks=lambda model: [("blocks", model.blocks)],
        token_grid=_grid,
        # each norm feeds one module (norm2 may be an Identity: stubbing it is harmless)
        input_norms=lambda block: {"attn1": "norm1", "attn2": "norm2", "ff": "norm3"},
        per_token_modulation=_per_token_timesteps,
    )
)
