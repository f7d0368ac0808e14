"""FLUX.1 (dev, schnell): ``FluxTransformer2DModel``, double-stream then single-stream blocks.

* **Double-stream blocks** (``transformer_blocks``, ``FluxTransformerBlock``): ``attn`` is joint
  image-text attention returning ``(image, text)`` outputs after their projections; ``ff`` is the image
  stream's feed-forward and ``ff_context`` the text stream's. The gates sit in the block, outside these
  modules, so their outputs are pre-gate.
* **Single-stream blocks** (``single_transformer_blocks``, ``FluxSingleTransformerBlock``): the block
  joins ``[text; image]`` tokens; ``proj_mlp`` and ``attn`` (no output projection) both read the joined
  tokens, and ``proj_out`` maps their concatenation back (pre-gate). ``proj_out`` follows ``proj_mlp``'s
  token choice, as in the authors' FLUX ToCa: fresh rows are ``proj_mlp`` -> activation -> concatenated
  with the *cached* attention rows -> ``proj_out``. Nothing but ``proj_out`` reads the attention and
  ``proj_mlp`` outputs, so on a partial step both produce only ``proj_out``'s rows (one row on a skipped
  step): the MLP activation and the concatenation then run on those rows only.
* Blocks take ``hidden_states`` / ``encoder_hidden_states`` and return ``(encoder_hidden_states,
  hidden_states)``. Joint attention takes per-token rotary embeddings, so it never runs on a subset.
* Tokens: the pipeline packs 2x2 latent patches; ``img_ids`` (row, column) gives the grid.
* Guidance-distilled: one call per step; with ``true_cfg_scale > 1`` and a negative prompt the pipeline
  calls the model per branch in ``cache_context("cond")`` / ``("uncond")``.
"""

from __future__ import annotations

import math

import torch

from . import JOINT_BLOCK_IO, ModelAdapter, register_adapter


def _stacks(model: torch.nn.Module) -> list[tuple[str, torch.nn.ModuleList]]:
    stacks = [(a, getattr(model, a)) for a in ("transformer_blocks", "single_transformer_blocks")]
    return [(a, blocks) for a, blocks in stacks if len(blocks)]


def packed_grid(x: torch.Tensor, ids: torch.Tensor | None) -> tuple[int, int]:
    """``(h, w)`` of packed image tokens: from their ``(frame, row, column)`` ids, else a square guess."""
    n = x.shape[1]
    if isinstance(ids, torch.Tensor) and ids.ndim in (2, 3) and ids.shape[-1] == 3 and ids.device.type != "meta":
        ids = ids.reshape(-1, 3)[-n:]
        h, w = (int(v) + 1 for v in (ids[:, 1].max() - ids[:, 1].min(), ids[:, 2].max() - ids[:, 2].min()))
        if h * w == n:
            return h, w
    side = math.isqrt(n)
    return (side, n // side) if side * side == n else (1, n)


def _grid(model: torch.nn.Module, x: torch.Tensor, kwargs: dict) -> tuple[int, int]:
    return packed_grid(x, kwargs.get("img_ids"))


def _input_norms(block: torch.nn.Module) -> dict[str, str | tuple[str, ...]]:
    """Double-stream blocks: both streams' first norms feed only the joint attention, the second ones only
    their stream's feed-forward. Single-stream blocks share one norm between attention and ``proj_mlp``:
    listed under both, it returns one token only when both skip (FORA-like; ToCa computes ``proj_mlp`` on
    partial steps)."""
    if type(block).__name__ == "FluxSingleTransformerBlock":
        return {"attn1": "norm.norm", "ff": "norm.norm"}
    return {"attn1": ("norm1.norm", "norm1_context.norm"), "ff": "norm2", "ff_context": "norm2_context"}


FLUX = register_adapter(
    ModelAdapter(
        name="flux",
        classes=("FluxTransformer2DModel",),
        structure="transformer",
        cfg_layout="per_context",
        block_io=JOINT_BLOCK_IO,
        roles={"attn1": "attn", "ff": "ff", "ff_context": "ff_context"},
        block_roles={
            "FluxTransformerBlock": {"attn1": "attn", "ff": "ff", "ff_context": "ff_context"},
            "FluxSingleTransformerBlock": {"attn1": "attn", "ff": "proj_mlp", "ff_out": "proj_out"},
        },
        partial_roles=("ff", "ff_context", "ff_out"),
        linked_roles={"ff_out": "ff"},
        sole_readers={"FluxSingleTransformerBlock": {"attn1": "ff_out", "ff": "ff_out"}},
        block_classes=("FluxTransformerBlock", "FluxSingleTransformerBlock"),
        stacks=_stacks,
        token_grid=_grid,
        image_tokens="streams",
        input_norms=_input_norms,
        timestep_scale=1000.0,
    )
)
