"""Frechet distance (FD/FID) between feature sets, with a pluggable, never-downloaded feature extractor.

* `frechet_distance(feats_a, feats_b)`: FD of two `(N, D)` feature sets (Gaussian fit, unbiased covariance).
* `feature_stats` / `save_stats` / `load_stats` / `frechet_distance_from_stats`: reuse reference statistics
  (`mu`, `sigma`) stored as `.npz`.
* `make_fid(feature=...)`: a torchmetrics `FrechetInceptionDistance` around any `nn.Module` extractor
  (e.g. `ClassifierFeatures`, the digit classifier's 64-d features), or around Inception loaded from a
  **local** weights file (`feature_extractor_weights_path`; needs the `torch-fidelity` package; nothing is
  downloaded).
"""

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance of `(N, D)` features, in float64.

    Returns:
        `tuple`: `(mu (D,), sigma (D, D))`.
    """
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"expected features of shape (N >= 2, D), got {tuple(features.shape)}")
    f = features.detach().double().cpu()
    mu = f.mean(dim=0)
    centred = f - mu
    sigma = centred.T @ centred / (f.shape[0] - 1)
    return mu, sigma


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((m + m.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance_from_stats(
    mu_a: torch.Tensor | np.ndarray,
    sigma_a: torch.Tensor | np.ndarray,
    mu_b: torch.Tensor | np.ndarray,
    sigma_b: torch.Tensor | np.ndarray,
) -> torch.Tensor:
    """Frechet distance `|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)` between two Gaussians.

    Args:
        mu_a, sigma_a: mean `(D,)` and covariance `(D, D)` of the first set.
        mu_b, sigma_b: the same for the second set.

    Returns:
        `torch.Tensor`: 0-d float64, >= 0 up to rounding.
    """
    mu_a, sigma_a, mu_b, sigma_b = (
        torch.as_tensor(x, dtype=torch.float64) for x in (mu_a, sigma_a, mu_b, sigma_b)
    )
    root_a = _sqrtm_psd(sigma_a)
    eig = torch.linalg.eigvalsh(root_a @ sigma_b @ root_a)
    trace_sqrt = eig.clamp(min=0).sqrt().sum()
    return (mu_a - mu_b).pow(2).sum() + sigma_a.trace() + sigma_b.trace() - 2.0 * trace_sqrt


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> torch.Tensor:
    """Frechet distance between two feature sets, each `(N, D)` with `N >= 2` (the sizes may differ).

    Args:
        feats_a (`torch.Tensor`): features of the first set (e.g. generated images).
        feats_b (`torch.Tensor`): features of the second set (e.g. real images).

    Returns:
        `torch.Tensor`: 0-d float64. Identical sets give 0; a set and the same set shifted by a constant
        vector `d` give `|d|^2`.

    Example:
        ```py
        >>> a = torch.randn(500, 8)
        >>> frechet_distance(a, a + 2.0)  # shift of 2 in each of 8 dimensions
        tensor(32.0000, dtype=torch.float64)
        ```
    """
    if feats_a.ndim != 2 or feats_b.ndim != 2 or feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(
            f"expected (N, D) features with equal D, got {tuple(feats_a.shape)}, {tuple(feats_b.shape)}"
        )
    return frechet_distance_from_stats(*feature_stats(feats_a), *feature_stats(feats_b))


def save_stats(path: str | Path, mu: torch.Tensor | np.ndarray, sigma: torch.Tensor | np.ndarray) -> None:
    """Saves feature statistics as an `.npz` with arrays `mu` and `sigma` (float64), like pytorch-fid."""
    np.savez(Path(path), mu=np.asarray(torch.as_tensor(mu, dtype=torch.float64)),
             sigma=np.asarray(torch.as_tensor(sigma, dtype=torch.float64)))  # fmt: skip


def load_stats(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Loads `(mu, sigma)` float64 tensors from an `.npz` written by `save_stats` (or pytorch-fid).

    Raises:
        `FileNotFoundError`: the file does not exist (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature statistics file not found: {path}")
    with np.load(path) as data:
        return torch.from_numpy(data["mu"]).double(), torch.from_numpy(data["sigma"]).double()


class ClassifierFeatures(nn.Module):
    """Adapts a classifier with a `features(images)` method (and `num_features`) to torchmetrics' FID.

    Args:
        classifier (`nn.Module`): e.g. `tokencache.zoo.load_classifier()`.

    Example:
        ```py
        >>> fid = make_fid(ClassifierFeatures(zoo.load_classifier()))
        >>> fid.update(real_images, real=True)  # (N, C, 8|16, 8|16) in [0, 1]
        >>> fid.update(fake_images, real=False)
        >>> fid.compute()
        ```
    """

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier
        self.num_features = int(classifier.num_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images)


def make_fid(
    feature: nn.Module | int = 2048,
    feature_extractor_weights_path: str | Path | None = None,
    reset_real_features: bool = True,
) -> FrechetInceptionDistance:
    """Builds a torchmetrics `FrechetInceptionDistance` that never downloads anything.

    Args:
        feature (`nn.Module` or `int`, defaults to 2048): a feature extractor module (its output `(N, D)` is
            used as is; give it a `num_features` attribute to skip a dummy forward), or the Inception feature
            layer (64, 192, 768 or 2048), which then needs `feature_extractor_weights_path`.
        feature_extractor_weights_path (`str` or `Path`, *optional*): local FID-Inception weights file
            (torch-fidelity's `weights-inception-2015-12-05-6726825d.pth`). Required for Inception.
        reset_real_features (`bool`, defaults to True): passed to torchmetrics; `False` keeps the real
            statistics across `reset()`.

    Returns:
        `FrechetInceptionDistance`: with a module extractor, `update(images, real=...)` feeds images unchanged
        to the module; with Inception, images are floats in `[0, 1]` (`normalize=True`).

    Raises:
        `FileNotFoundError`: the Inception weights file does not exist (the message names the path).
        `ValueError`: Inception requested without a weights path.

    Example:
        ```py
        >>> fid = make_fid(ClassifierFeatures(zoo.load_classifier()))
        >>> inception = make_fid(2048, feature_extractor_weights_path="/models/pt_inception-2015-12-05.pth")
        ```
    """
    if isinstance(feature, nn.Module):
        return FrechetInceptionDistance(feature=feature, reset_real_features=reset_real_features)
    if feature_extractor_weights_path is None:
        raise ValueError(
            "Inception FID needs a local weights file: pass feature_extractor_weights_path "
            "(weights are never downloaded), or pass a feature extractor module as `feature`"
        )
    path = Path(feature_extractor_weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"Inception weights file not found: {path}")
    return FrechetInceptionDistance(
        feature=feature,
        feature_extractor_weights_path=str(path),
        normalize=True,
        reset_real_features=reset_real_features,
    )
