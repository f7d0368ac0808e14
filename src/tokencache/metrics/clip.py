"""CLIP score (torchmetrics `CLIPScore`) with a CLIP model read from a local directory, never from the Hub."""

import functools
from pathlib import Path

import torch
from torch import nn
from torchmetrics.multimodal.clip_score import CLIPScore
from transformers import CLIPModel, CLIPProcessor


def load_local_clip(model_dir: str | Path) -> tuple[CLIPModel, CLIPProcessor]:
    """Loads `transformers.CLIPModel` and `CLIPProcessor` from a local `save_pretrained` directory.

    Args:
        model_dir (`str` or `Path`): directory holding the model config/weights and the processor files.

    Returns:
        `tuple`: `(model, processor)`, the model in eval mode.

    Raises:
        `FileNotFoundError`: `model_dir` is not an existing directory (the message names it). Loading uses
        `local_files_only=True`, so a path is never resolved against the Hub.

    Example:
        ```py
        >>> model, processor = load_local_clip("/models/clip-vit-large-patch14")
        ```
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(
            f"CLIP model directory not found: {model_dir} (CLIP weights are never downloaded)"
        )
    model = CLIPModel.from_pretrained(model_dir, local_files_only=True).eval()
    processor = CLIPProcessor.from_pretrained(model_dir, local_files_only=True)
    return model, processor


class _FeatureTensors(nn.Module):
    """Makes `get_image_features`/`get_text_features` return tensors.

    transformers 5 returns a model output whose `pooler_output` holds the projected features, while
    torchmetrics expects a tensor.
    """

    def __init__(self, model: CLIPModel):
        super().__init__()
        self.model = model
        self.config = model.config

    @staticmethod
    def _tensor(out) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return self._tensor(self.model.get_text_features(*args, **kwargs))


def _torchmetrics_clip(model_dir: Path) -> tuple[nn.Module, CLIPProcessor]:
    model, processor = load_local_clip(model_dir)
    return _FeatureTensors(model), processor


def make_clip_score(model_dir: str | Path) -> CLIPScore:
    """A torchmetrics `CLIPScore` whose model and processor come from `load_local_clip(model_dir)`.

    Args:
        model_dir (`str` or `Path`): local CLIP directory.

    Returns:
        `CLIPScore`: call `update(images, prompts)` with uint8 `(N, 3, H, W)` images in `[0, 255]` (see
        `to_uint8`) and `compute()` for `max(100 * cos(image, text), 0)` averaged over samples.

    Raises:
        `FileNotFoundError`: `model_dir` does not exist.

    Example:
        ```py
        >>> metric = make_clip_score("/models/clip-vit-large-patch14")
        >>> metric.update(to_uint8(images), ["a handwritten 3"] * len(images))
        >>> metric.compute()
        ```
    """
    if not Path(model_dir).is_dir():
        raise FileNotFoundError(
            f"CLIP model directory not found: {model_dir} (CLIP weights are never downloaded)"
        )
    return CLIPScore(model_name_or_path=functools.partial(_torchmetrics_clip, Path(model_dir)))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in `[0, 1]` -> uint8 in `[0, 255]` (rounded), the input CLIP's image processor expects."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def clip_score(images: torch.Tensor, prompts: list[str], model_dir: str | Path) -> torch.Tensor:
    """CLIP score of images against their prompts, with a local CLIP model.

    Args:
        images (`torch.Tensor`): `(N, 3, H, W)`, float in `[0, 1]` or uint8 in `[0, 255]`.
        prompts (`list[str]`): `N` captions.
        model_dir (`str` or `Path`): local CLIP directory.

    Returns:
        `torch.Tensor`: 0-d, in `[0, 100]`.
    """
    if images.dtype != torch.uint8:
        images = to_uint8(images)
    metric = make_clip_score(model_dir)
    metric.update(images, list(prompts))
    return metric.compute()
