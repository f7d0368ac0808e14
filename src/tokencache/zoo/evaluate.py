"""Measures a zoo model's sample quality: classifier accuracy and Frechet distance to the real test images.

Usage:
    python -m tokencache.zoo.evaluate FAMILY [--per-digit 10] [--steps 50] [--guidance 3.0] [--seed 0]
                                             [--weights-dir DIR]

FAMILY is `unet`, `dit`, `pixart`, `flux`, `wan`, `all` (the tier-1 families), or a tier-2 family (`TIER2_FAMILIES`:
letters, scored by the glyph classifier against glyphs of the held-out test fonts; `--per-digit` is then per
letter). Prints one JSON line per family. `wan` generates 5-frame clips: `accuracy` and `fd_test` score the middle
(unshifted) frame, the `*_frames` fields every frame of every clip, `clip_accuracy` the clips whose 5 frames are all
recognised.
"""

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from tokencache.metrics.fid import frechet_distance

from .data import load_digits_split
from .glyphs import NUM_CLASSES, glyph_split
from .pipelines import ALL_FAMILIES, FAMILIES, VIDEO_FAMILIES, family_tier, load, load_classifier, sample
from .wan import MIDDLE_FRAME, classified_frame

GLYPH_REFERENCE = {"seed": 0, "per_font": 8, "test_per_font": 8}
"""The real glyphs FD is measured against (`glyph_split(**GLYPH_REFERENCE)`: 3328 train, 1040 test)."""


@torch.no_grad()
def evaluate(
    family: str,
    per_digit: int = 10,
    num_inference_steps: int = 50,
    guidance_scale: float = 3.0,
    seed: int = 0,
    weights_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Samples `per_digit` images of each class and scores them with the tier's classifier.

    Args:
        family (`str`): one of `ALL_FAMILIES` (tier 1: `FAMILIES`; tier 2: `TIER2_FAMILIES`).
        per_digit (`int`, defaults to 10): samples per class (10 -> 100 digits, or 260 letters for tier 2).
        num_inference_steps (`int`, defaults to 50): sampling steps (DDIM; Euler for the flow-matching flux and wan).
        guidance_scale (`float`, defaults to 3.0): classifier-free guidance scale.
        seed (`int`, defaults to 0): noise seed.
        weights_dir (`str` or `Path`, *optional*): defaults to the shipped weights.

    Returns:
        `dict`: `accuracy`, `per_digit_accuracy` (per class), `fd_test` (Frechet distance to the real test
        split in the classifier's features; tier 2: the held-out fonts), `fd_train_test` (the real train/test
        floor) and `seconds` (sampling time). Video families (`"wan"`): those score the middle frame of each
        clip; `accuracy_frames`, `per_frame_accuracy`, `clip_accuracy` (all frames right) and `fd_test_frames`
        (every frame against the test split) are added.
    """
    tier = family_tier(family)
    clf = load_classifier(weights_dir=weights_dir, tier=tier)
    pipe = load(family, weights_dir=weights_dir)
    num_classes = 10 if tier == 1 else NUM_CLASSES
    digits = [d for d in range(num_classes) for _ in range(per_digit)]
    start = time.perf_counter()
    video = family in VIDEO_FAMILIES
    images = sample(family, pipe, digits, seed, num_inference_steps, guidance_scale,
                    output="clips" if video else None)
    seconds = time.perf_counter() - start
    clips, images = (images if video else None), classified_frame(images)
    labels = torch.tensor(digits)
    correct = clf(images).argmax(-1) == labels
    if tier == 1:
        x_train, _, x_test, _ = load_digits_split()
    else:
        x_train, _, x_test, _ = glyph_split(**GLYPH_REFERENCE)[:4]
    feats_test = clf.features(x_test)
    per_class = [round(correct[labels == d].float().mean().item(), 2) for d in range(num_classes)]
    extra: dict[str, Any] = {}
    if clips is not None:
        frames = clips.flatten(0, 1)
        right = (clf(frames).argmax(-1) == labels.repeat_interleave(clips.shape[1])).view(clips.shape[:2])
        extra = {
            "accuracy_frames": round(right.float().mean().item(), 4),
            "per_frame_accuracy": [round(v, 3) for v in right.float().mean(0).tolist()],
            "clip_accuracy": round(right.all(1).float().mean().item(), 4),
            "fd_test_frames": round(frechet_distance(clf.features(frames), feats_test).item(), 3),
            "classified_frame": MIDDLE_FRAME,
        }
    return {
        "family": family,
        "accuracy": round(correct.float().mean().item(), 4),
        "per_digit_accuracy": per_class,
        "fd_test": round(frechet_distance(clf.features(images), feats_test).item(), 3),
        "fd_train_test": round(frechet_distance(clf.features(x_train), feats_test).item(), 3),
        **extra,
        "num_images": len(digits),
        "num_inference_steps": num_inference_steps,
        "guidance_scale": guidance_scale,
        "seed": seed,
        "seconds": round(seconds, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tokencache.zoo.evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("family", choices=(*ALL_FAMILIES, "all"))
    parser.add_argument("--per-digit", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for family in FAMILIES if args.family == "all" else (args.family,):
        result = evaluate(family, args.per_digit, args.steps, args.guidance, args.seed, args.weights_dir)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
