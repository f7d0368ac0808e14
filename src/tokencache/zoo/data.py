"""The scikit-learn 8x8 digits, split and scaled the way every zoo model sees them.

Images live in three spaces:

* *digits space*: `(N, 1, 8, 8)` floats in `[0, 1]` (raw value / 16). The classifier reads this.
* *model space*: `(N, 1, 16, 16)` floats in `[-1, 1]`, bilinearly upsampled. The diffusion models are trained
  on this; it is also their latent space (the shipped VAE is a near-identity map, see `models.py`).
* *pipeline images*: whatever a diffusers pipeline returns with `output_type="pt"`: `(N, 3, 16, 16)` in
  `[0, 1]`. `to_digit_space` maps them back to digits space.
"""

import torch
import torch.nn.functional as F

DIGITS_SIZE = 8
MODEL_SIZE = 16
SPLIT_SEED = 0
TEST_FRACTION = 0.2


def load_digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loads the bundled digits and splits them with a fixed, stratified seed.

    Returns:
        `tuple`: `(x_train, y_train, x_test, y_test)`; images are `(N, 1, 8, 8)` float32 in `[0, 1]`, labels
        int64. 1437 train and 360 test images.

    Example:
        ```py
        >>> x_train, y_train, x_test, y_test = load_digits_split()
        >>> x_train.shape
        torch.Size([1437, 1, 8, 8])
        ```
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    idx_train, idx_test = train_test_split(
        torch.arange(len(y)).numpy(), test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y.numpy()
    )
    idx_train, idx_test = torch.from_numpy(idx_train), torch.from_numpy(idx_test)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def to_model_space(images: torch.Tensor) -> torch.Tensor:
    """Maps digits-space images `(N, 1, 8, 8)` in `[0, 1]` to model space `(N, 1, 16, 16)` in `[-1, 1]`."""
    up = F.interpolate(images, size=(MODEL_SIZE, MODEL_SIZE), mode="bilinear", align_corners=False)
    return up * 2.0 - 1.0


def to_digit_space(images: torch.Tensor) -> torch.Tensor:
    """Maps images in `[0, 1]` of any channel count and size 8 or 16 to digits space `(N, 1, 8, 8)`.

    Channels are averaged (the pipelines decode to grey RGB) and 16x16 images are area-downsampled.

    Args:
        images (`torch.Tensor`): `(N, C, H, W)` or `(N, H, W)` with `H == W` in `{8, 16}`, values in `[0, 1]`.

    Returns:
        `torch.Tensor`: `(N, 1, 8, 8)` float32, clamped to `[0, 1]`.
    """
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W) or (N, H, W), got {tuple(images.shape)}")
    images = images.float().mean(dim=1, keepdim=True)
    size = images.shape[-1]
    if images.shape[-2] != size or size % DIGITS_SIZE != 0:
        raise ValueError(
            f"expected square images with a side that is a multiple of 8, got {tuple(images.shape)}"
        )
    if size != DIGITS_SIZE:
        images = F.avg_pool2d(images, kernel_size=size // DIGITS_SIZE)
    return images.clamp(0.0, 1.0)
