"""Class accuracy of generated digits under the zoo's digit classifier."""

import torch
from torch import nn


@torch.no_grad()
def class_accuracy(
    images: torch.Tensor, labels: torch.Tensor | list[int], classifier: nn.Module | None = None
) -> float:
    """Fraction of images the digit classifier assigns to the requested label.

    Args:
        images (`torch.Tensor`): `(N, C, H, W)` or `(N, H, W)` in `[0, 1]`, `H == W` in `{8, 16}` (e.g. the
            output of `tokencache.zoo.sample`, or a pipeline's `output_type="pt"` images).
        labels (`torch.Tensor` or `list[int]`): `N` requested digits.
        classifier (`nn.Module`, *optional*): defaults to `tokencache.zoo.load_classifier()`.

    Returns:
        `float`: accuracy in `[0, 1]`.

    Example:
        ```py
        >>> x = zoo.sample("dit", zoo.load("dit"), [0, 1, 2], seed=0, num_inference_steps=50)
        >>> class_accuracy(x, [0, 1, 2])
        1.0
        ```
    """
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    if classifier is None:
        from tokencache.zoo import load_classifier

        classifier = load_classifier()
    predictions = classifier(images.float()).argmax(dim=-1).cpu()
    return (predictions == labels).float().mean().item()


@torch.no_grad()
def classifier_features(images: torch.Tensor, classifier: nn.Module | None = None) -> torch.Tensor:
    """The digit classifier's penultimate features `(N, 64)` of images in `[0, 1]` (for FD)."""
    if classifier is None:
        from tokencache.zoo import load_classifier

        classifier = load_classifier()
    return classifier.features(images.float())
