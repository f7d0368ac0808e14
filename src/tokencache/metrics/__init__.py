"""Quality metrics for cached diffusion runs.

* fidelity to the uncached run (same seed): `psnr`, `ssim`, `rel_l1`;
* distribution quality: `frechet_distance` and `make_fid` (pluggable extractor, never downloads);
* prompt adherence: `clip_score` / `make_clip_score` with a CLIP model from a local directory;
* digit zoo: `class_accuracy`, `classifier_features`.
"""

from .accuracy import class_accuracy, classifier_features
from .clip import clip_score, load_local_clip, make_clip_score, to_uint8
from .fid import (
    ClassifierFeatures,
    feature_stats,
    frechet_distance,
    frechet_distance_from_stats,
    load_stats,
    make_fid,
    save_stats,
)
from .fidelity import psnr, rel_l1, ssim

__all__ = [
    "ClassifierFeatures",
    "class_accuracy",
    "clip_score",
    "classifier_features",
    "feature_stats",
    "frechet_distance",
    "frechet_distance_from_stats",
    "load_local_clip",
    "load_stats",
    "make_clip_score",
    "make_fid",
    "psnr",
    "rel_l1",
    "save_stats",
    "ssim",
    "to_uint8",
]
