"""``tokencache eval``: FID/FD, CLIP score and fidelity of generated image folders.

* fidelity: PSNR / SSIM / rel-L1 of each image against the same-named image in a baseline folder;
* FD: Fréchet distance between feature statistics of two folders (or ``.npz`` statistics with ``mu`` and
  ``sigma``), in the features of the zoo's digit classifier (``--features digits``), of its tier-2 glyph
  classifier (``--features glyphs``, for the 32x32 letters of the tier-2 families), of raw pixels
  (``--features pixels``) or of Inception (``--features inception --inception-weights FILE``; nothing is
  downloaded);
* CLIP score: images against their prompts from ``manifest.jsonl``, with a local CLIP folder.

Example:
    >>> tokencache eval out/dato --baseline out/plain --fd-ref out/plain --features digits --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .args import FEATURES, add_eval_arguments

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def list_images(folder: str | Path) -> list[Path]:
    """Image files of ``folder`` sorted by name; raises naming the folder if it is missing or holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise ValueError(f"image folder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def load_image(path: str | Path) -> torch.Tensor:
    """An image file as a float ``(3, H, W)`` tensor in [0, 1]; raises naming an unreadable file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"image file {str(path)!r} cannot be read: {e}") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def load_images(files: list[Path]) -> torch.Tensor:
    """Stack image files into ``(N, 3, H, W)``; all must have the same size (the odd one is named)."""
    imgs = [load_image(f) for f in files]
    for f, im in zip(files, imgs):
        if im.shape != imgs[0].shape:
            raise ValueError(f"image {str(f)!r} is {tuple(im.shape[1:])}, but {str(files[0])!r} is "
                             f"{tuple(imgs[0].shape[1:])}; all images must have the same size")
    return torch.stack(imgs)


def fidelity(folder: str | Path, baseline: str | Path) -> dict[str, Any]:
    """PSNR (dB, images in [0, 1]), SSIM and rel-L1 of ``folder`` against same-named images in ``baseline``.

    Args:
        folder: generated images.
        baseline: reference images with the same file names (e.g. the uncached run).

    Returns:
        ``{"psnr", "ssim", "rel_l1", "n"}`` averaged over the matched images (PSNR/SSIM per image then mean;
        rel-L1 over all pixels).

    Raises:
        FileNotFoundError: a folder is missing, or an image of ``folder`` has no twin in ``baseline`` (named).
    """
    from ..metrics import psnr, rel_l1, ssim

    files = list_images(folder)
    base_dir = Path(baseline)
    if not base_dir.is_dir():
        raise FileNotFoundError(f"baseline folder {str(base_dir)!r} does not exist")
    missing = [f.name for f in files if not (base_dir / f.name).is_file()]
    if missing:
        raise FileNotFoundError(f"baseline folder {str(base_dir)!r} lacks {len(missing)} image(s) of "
                                f"{str(folder)!r}, e.g. {missing[0]!r}")
    a = load_images(files)
    b = load_images([base_dir / f.name for f in files])
    if a.shape != b.shape:
        raise ValueError(f"images of {str(folder)!r} are {tuple(a.shape[1:])}, baseline {tuple(b.shape[1:])}")
    p = float(psnr(a, b, data_range=1.0))
    try:
        s = float(ssim(a, b, data_range=1.0))
    except ValueError:
        s = float("nan")
    return {"psnr": p, "ssim": s, "rel_l1": float(rel_l1(a, b)), "n": len(files)}


class FeatureExtractor:
    """Images in [0, 1] ``(N, 3, H, W)`` -> features ``(N, D)``.

    Args:
        kind: ``"digits"`` (zoo digit classifier, penultimate layer), ``"glyphs"`` (the tier-2 glyph classifier,
            trained on the train fonts only; images are area-resized to 32x32), ``"pixels"`` (images resized to
            ``pixel_size`` squared, flattened grey values; a cheap proxy) or ``"inception"``.
        inception_weights: for ``"inception"``: a TorchScript Inception file (e.g. ``inception-2015-12-05.pt``)
            or torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` (needs ``torch-fidelity``).
        pixel_size: side of the resized image for ``"pixels"``.
    """

    def __init__(self, kind: str = "digits", inception_weights: str | Path | None = None, pixel_size: int = 8) -> None:
        if kind not in FEATURES:
            raise ValueError(f"--features {kind!r} is invalid; allowed: {list(FEATURES)}")
        self.kind, self.pixel_size = kind, pixel_size
        self._model: Any = None
        if kind == "digits":
            from ..zoo import load_classifier

            self._model = load_classifier()
        elif kind == "glyphs":
            from ..zoo import load_classifier

            self._model = load_classifier(tier=2)
        elif kind == "inception":
            if inception_weights is None:
                raise ValueError("--features inception needs --inception-weights FILE (weights are never downloaded)")
            path = Path(inception_weights)
            if not path.is_file():
                raise FileNotFoundError(f"Inception weights file {str(path)!r} does not exist")
            try:
                self._model = torch.jit.load(str(path), map_location="cpu").eval()
                self._jit = True
            except RuntimeError:
                from ..metrics import make_fid

                self._model = make_fid(2048, path).inception
                self._jit = False

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.kind == "pixels":
            x = torch.nn.functional.interpolate(images.mean(1, keepdim=True), size=(self.pixel_size,) * 2,
                                                mode="area")
            return x.flatten(1).double()
        if self.kind == "digits":
            return self._model.features(images.float()).double()
        if self.kind == "glyphs":
            if images.shape[-1] != 32 or images.shape[-2] != 32:
                images = torch.nn.functional.interpolate(images.float(), size=(32, 32), mode="area")
            return self._model.features(images.float()).double()
        u8 = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        if self._jit:
            try:
                return self._model(u8, return_features=True).double()
            except (RuntimeError, TypeError):
                return self._model(u8).double()
        return self._model(u8).reshape(len(u8), -1).double()


def folder_stats(source: str | Path, extractor: FeatureExtractor, batch: int = 64) -> tuple[torch.Tensor, ...]:
    """``(mu, sigma)`` of a folder's features, or read from an ``.npz`` with ``mu`` and ``sigma``."""
    from ..metrics import feature_stats, load_stats

    source = Path(source)
    if source.suffix == ".npz":
        if not source.is_file():
            raise FileNotFoundError(f"statistics file {str(source)!r} does not exist")
        with np.load(source) as data:
            missing = [k for k in ("mu", "sigma") if k not in data.files]
        if missing:
            raise ValueError(f"statistics file {str(source)!r} lacks array(s) {missing}; it needs 'mu' and 'sigma'")
        return load_stats(source)
    files = list_images(source)
    if len(files) < 2:
        raise ValueError(f"image folder {str(source)!r} holds {len(files)} image; FD needs at least 2")
    feats = torch.cat([extractor(load_images(files[i: i + batch])) for i in range(0, len(files), batch)])
    return feature_stats(feats)


def frechet(a: str | Path, b: str | Path, extractor: FeatureExtractor) -> float:
    """Fréchet distance between two folders / ``.npz`` statistics in ``extractor``'s features."""
    from ..metrics import frechet_distance_from_stats

    mu_a, s_a = folder_stats(a, extractor)
    mu_b, s_b = folder_stats(b, extractor)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature sizes differ: {str(a)!r} has {mu_a.shape[0]}, {str(b)!r} has {mu_b.shape[0]}")
    return float(frechet_distance_from_stats(mu_a, s_a, mu_b, s_b))


def prompts_of(folder: str | Path) -> dict[str, str]:
    """``file -> prompt`` from the folder's ``manifest.jsonl`` (written by ``tokencache generate``)."""
    from .generate import MANIFEST, read_manifest

    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise FileNotFoundError(f"CLIP score needs prompts: {str(folder / MANIFEST)!r} does not exist")
    return {f: str(r["prompt"]) for f, r in read_manifest(folder).items()}


def clip(folder: str | Path, model_dir: str | Path) -> float:
    """CLIP score of a generated folder against the prompts in its manifest, with a local CLIP model."""
    from ..metrics import clip_score

    files = list_images(folder)
    prompts = prompts_of(folder)
    missing = [f.name for f in files if f.name not in prompts]
    if missing:
        raise ValueError(f"manifest of {str(folder)!r} has no prompt for {len(missing)} image(s), e.g. {missing[0]!r}")
    return float(clip_score(load_images(files), [prompts[f.name] for f in files], model_dir))


def evaluate(
    folder: str | Path,
    baseline: str | Path | None = None,
    fd_ref: str | Path | None = None,
    features: str = "digits",
    inception_weights: str | Path | None = None,
    clip_model: str | Path | None = None,
    save_stats: str | Path | None = None,
) -> dict[str, Any]:
    """All requested metrics of one generated folder.

    Args:
        folder: generated images (a folder) or, for FD only, an ``.npz`` of statistics.
        baseline: folder of same-named reference images for PSNR/SSIM/rel-L1.
        fd_ref: folder or ``.npz`` statistics to compute the FD against.
        features: ``"digits"``, ``"glyphs"`` (tier 2), ``"pixels"`` or ``"inception"``.
        inception_weights: local Inception file for ``features="inception"``.
        clip_model: local CLIP folder for the CLIP score.
        save_stats: write this folder's feature statistics to this ``.npz``.

    Returns:
        A dict with the computed metrics (keys ``psnr``, ``ssim``, ``rel_l1``, ``n``, ``fd``, ``clip``).

    Example:
        >>> evaluate("out/dato", baseline="out/plain", fd_ref="digits_stats.npz", features="digits")
    """
    res: dict[str, Any] = {"folder": str(folder)}
    if baseline is not None:
        res.update(fidelity(folder, baseline))
    if fd_ref is not None or save_stats is not None:
        ext = FeatureExtractor(features, inception_weights)
        if save_stats is not None:
            from ..metrics import save_stats as _save

            _save(save_stats, *folder_stats(folder, ext))
            res["stats"] = str(save_stats)
        if fd_ref is not None:
            res["fd"] = frechet(folder, fd_ref, ext)
            res["features"] = features
    if clip_model is not None:
        res["clip"] = clip(folder, clip_model)
    return res


add_arguments = add_eval_arguments


def run(args: argparse.Namespace) -> int:
    """Entry point of ``tokencache eval``."""
    if args.save_stats and len(args.folders) != 1:
        raise ValueError(f"--save-stats needs exactly one folder, got {len(args.folders)}")
    if not (args.baseline or args.fd_ref or args.clip_model or args.save_stats):
        raise ValueError("nothing to compute; give --baseline, --fd-ref, --clip-model or --save-stats")
    rows = [evaluate(f, args.baseline, args.fd_ref, args.features, args.inception_weights, args.clip_model,
                     args.save_stats) for f in args.folders]  # user errors become one line in tokencache.cli
    if args.json:
        print(json.dumps(rows if len(rows) > 1 else rows[0], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    keys = [k for k in ("psnr", "ssim", "rel_l1", "fd", "clip", "n") if any(k in r for r in rows)]
    tab = Table(title="tokencache eval")
    for k in ["folder", *keys]:
        tab.add_column(k)
    for r in rows:
        tab.add_row(r["folder"], *(f"{r[k]:.4g}" if k in r else "-" for k in keys))
    Console().print(tab)
    return 0
