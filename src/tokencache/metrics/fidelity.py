"""Weight-free fidelity of a cached run to the uncached run with the same seed: PSNR, SSIM, relative L1.

All functions take two batched tensors of the same shape, `a` (test, e.g. cached) and `b` (reference, e.g.
uncached), and return the mean over the batch as a 0-d float tensor. They work on decoded images (use
`data_range=1.0` for `[0, 1]` images, `2.0` for `[-1, 1]`) and on latents (pass the reference's value range,
e.g. `data_range=float(b.max() - b.min())`, or compare with `rel_l1`, which needs no range).
"""

import torch
from torchmetrics.functional.image import structural_similarity_index_measure


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim < 2:
        raise ValueError(f"expected batched tensors (N, ...), got shape {tuple(a.shape)}")


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, computed per sample and averaged over the batch.

    `10 * log10(data_range**2 / mse)`, MSE over all non-batch dimensions; identical samples give `inf`.

    Args:
        a (`torch.Tensor`): `(N, ...)` test samples.
        b (`torch.Tensor`): `(N, ...)` reference samples, same shape.
        data_range (`float`, defaults to 1.0): max minus min of the value range (1 for `[0, 1]`, 2 for
            `[-1, 1]`).

    Returns:
        `torch.Tensor`: 0-d float64, the batch-mean PSNR in dB.

    Example:
        ```py
        >>> b = torch.zeros(2, 3, 8, 8)
        >>> psnr(b + 0.1, b, data_range=1.0)  # MSE 0.01 -> 20 dB
        tensor(20., dtype=torch.float64)
        ```
    """
    _check(a, b)
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(dim=1)
    return (10.0 * torch.log10(data_range**2 / mse)).mean()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity (Gaussian window 11, sigma 1.5; torchmetrics), averaged over the batch.

    Args:
        a (`torch.Tensor`): `(N, C, H, W)` test images or latents.
        b (`torch.Tensor`): `(N, C, H, W)` reference, same shape.
        data_range (`float`, defaults to 1.0): max minus min of the value range.

    Returns:
        `torch.Tensor`: 0-d float, 1 for identical inputs. Images smaller than 11x11 use a window of their
        size (odd, at least 3).

    Example:
        ```py
        >>> x = torch.rand(4, 3, 16, 16)
        >>> ssim(x, x)
        tensor(1.)
        ```
    """
    _check(a, b)
    if a.ndim != 4:
        raise ValueError(f"ssim expects (N, C, H, W), got shape {tuple(a.shape)}")
    side = min(a.shape[-2:])
    kernel = min(11, side if side % 2 else side - 1)
    if kernel < 3:
        raise ValueError(f"ssim needs images of at least 3x3, got {tuple(a.shape[-2:])}")
    return structural_similarity_index_measure(
        a.float(), b.float(), data_range=data_range, kernel_size=kernel, sigma=1.5
    )


def rel_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Relative L1 error `mean|a - b| / mean|b|` over the whole batch (First-Block-Cache's measure).

    Args:
        a (`torch.Tensor`): test tensor (any shape).
        b (`torch.Tensor`): reference tensor, same shape; the denominator.

    Returns:
        `torch.Tensor`: 0-d float64; 0 for identical inputs.

    Example:
        ```py
        >>> rel_l1(torch.tensor([[1.0, 3.0]]), torch.tensor([[2.0, 2.0]]))
        tensor(0.5000, dtype=torch.float64)
        ```
    """
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    a, b = a.double(), b.double()
    return (a - b).abs().mean() / b.abs().mean()
