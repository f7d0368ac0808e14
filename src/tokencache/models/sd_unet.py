"""Stable Diffusion UNets (``UNet2DConditionModel``: SD 1.x, SD 2.x, SDXL).

The UNet is cut into *units* in execution order, as the DaTo/DeepCache authors index the ldm UNet:
input unit 0 is ``conv_in``, then every (resnet, attention) layer and every downsampler of the down
path; output unit ``j`` counts the (resnet, attention) layers of the up path from the *end* (``j = 0``
is the last layer). Resolution level ``l`` is ``down_blocks[l]`` and its mirror ``up_blocks[L-1-l]``
(and the mid block at the lowest level); its token grid is the input's ``h x w`` halved ``l`` times.
Self-attention is ``attn1`` of the ``BasicTransformerBlock``s inside the attention layers. The
pipelines batch classifier-free guidance as ``[uncond; cond]``.
"""

from __future__ import annotations

import torch

from . import ModelAdapter, register_adapter

Units = tuple[list[tuple[int, list[str]]], list[tuple[int, list[str]]], int]


def unet_units(unet: torch.nn.Module) -> Units:
    """Units of the down and up paths.

    Returns:
        ``(down, up, n_in)``: ``down`` is a list of ``(index, module_names)`` with index 1.. (0 is
        conv_in); ``up`` a list of ``(j, module_names)`` with ``j`` counted from the last layer;
        ``n_in`` the number of input units including conv_in.
    """
    down: list[tuple[int, list[str]]] = []
    i = 1
    for b, block in enumerate(unet.down_blocks):
        atts = getattr(block, "attentions", None)
        for li in range(len(block.resnets)):
            names = [f"down_blocks.{b}.resnets.{li}"]
            if atts is not None and li < len(atts):
                names.append(f"down_blocks.{b}.attentions.{li}")
            down.append((i, names))
            i += 1
        if getattr(block, "downsamplers", None) is not None:
            down.append((i, [f"down_blocks.{b}.downsamplers.{k}" for k in range(len(block.downsamplers))]))
            i += 1
    layers: list[list[str]] = []
    for b, block in enumerate(unet.up_blocks):
        atts = getattr(block, "attentions", None)
        for li in range(len(block.resnets)):
            names = [f"up_blocks.{b}.resnets.{li}"]
            if atts is not None and li < len(atts):
                names.append(f"up_blocks.{b}.attentions.{li}")
            layers.append(names)
    up = [(len(layers) - 1 - k, names) for k, names in enumerate(layers)]
    return down, up, i


def auto_prune_levels(unet: torch.nn.Module) -> tuple[int, ...]:
    """The highest-resolution level with attention (SD 1.x/2.x: 0; SDXL: 1)."""
    for b, block in enumerate(unet.down_blocks):
        if getattr(block, "attentions", None):
            return (b,)
    return ()


def self_attention_modules(unet: torch.nn.Module, levels: tuple[int, ...]) -> list[tuple[str, int]]:
    """``(name, level)`` of every ``attn1`` in the transformer blocks of the given levels."""
    n = len(unet.down_blocks)
    prefixes: list[tuple[str, int]] = []
    for lvl in levels:
        if lvl >= n:
            raise ValueError(f"prune_levels value {lvl} is invalid for this UNet; allowed: 0..{n - 1}")
        prefixes += [(f"down_blocks.{lvl}.", lvl), (f"up_blocks.{n - 1 - lvl}.", lvl)]
        if lvl == n - 1:
            prefixes.append(("mid_block.", lvl))
    out = []
    for name, _ in unet.named_modules():
        if name.endswith(".attn1") and ".transformer_blocks." in name:
            for pre, lvl in prefixes:
                if name.startswith(pre):
                    out.append((name, lvl))
    return out


def level_grid(shape: tuple[int, ...], level: int) -> tuple[int, int]:
    """Token grid of resolution level ``level`` for a UNet input of shape ``(B, C, H, W)``."""
    h, w = shape[-2:]
    for _ in range(level):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w


SD_UNET = register_adapter(
    ModelAdapter(
        name="sd-unet",
        classes=("UNet2DConditionModel",),
        structure="unet",
        cfg_layout="batched",
        token_grid=lambda model, x, kwargs=None: tuple(x.shape[-2:]),
        facts={
            "units": unet_units,
            "auto_prune_levels": auto_prune_levels,
            "self_attention_modules": self_attention_modules,
            "level_grid": level_grid,
        },
    )
)
