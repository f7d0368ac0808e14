"""Loading the shipped zoo models as ready diffusers pipelines, and sampling digits from them."""

from pathlib import Path

import torch
from diffusers import DiffusionPipeline, DiTPipeline, PixArtAlphaPipeline, StableDiffusionPipeline

from . import models
from .data import to_digit_space
from .files import TOKENIZER_FILES, WEIGHTS_DIR, load_weights, split_state, verify_files
from .tokenizer import MAX_LENGTH, digit_prompt, load_tokenizer

FAMILIES = ("unet", "dit", "pixart")
"""The diffusion families `load` and `sample` accept."""


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown zoo family {family!r}; expected one of {', '.join(FAMILIES)}")


def _load_vae(weights_dir: Path):
    tensors, meta = load_weights(weights_dir, "vae")
    vae = models.build_vae(meta["config"])
    vae.load_state_dict(tensors)
    return vae


def _load_text_encoder(tensors: dict[str, torch.Tensor], config: dict):
    text_encoder = models.build_text_encoder(config)
    text_encoder.load_state_dict(split_state(tensors, "text_encoder"))
    return text_encoder


def load(
    family: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    weights_dir: str | Path | None = None,
) -> DiffusionPipeline:
    """Loads a trained zoo model as a ready diffusers pipeline, verifying every file's sha256 first.

    Args:
        family (`str`): `"unet"` -> `StableDiffusionPipeline` (tiny CLIP text encoder and tokenizer, prompts
            like `"a handwritten 7"`), `"dit"` -> `DiTPipeline` (class labels 0-9; null class 1000),
            `"pixart"` -> `PixArtAlphaPipeline` (tiny CLIP text encoder in place of T5; call it with
            `use_resolution_binning=False, max_sequence_length=16`).
        device (`str` or `torch.device`, defaults to `"cpu"`): where to put the pipeline.
        dtype (`torch.dtype`, defaults to `torch.float32`): parameter dtype.
        weights_dir (`str` or `Path`, *optional*): directory with the files and `checksums.json`; defaults to
            the weights shipped in the package.

    Returns:
        `DiffusionPipeline`: in eval mode, with a DDIM scheduler, `safety_checker=None`, progress bar off.

    Raises:
        `ValueError`: unknown family (the message lists the allowed ones).
        `FileNotFoundError` / `ChecksumError`: a file is missing or does not match `checksums.json`.

    Example:
        ```py
        >>> from tokencache import zoo
        >>> pipe = zoo.load("unet")
        >>> images = pipe(["a handwritten 3"], guidance_scale=3.0, output_type="pt").images
        >>> images.shape
        torch.Size([1, 3, 16, 16])
        ```
    """
    _check_family(family)
    weights_dir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    tensors, meta = load_weights(weights_dir, family)
    configs = meta["configs"]
    vae = _load_vae(weights_dir)
    scheduler = models.build_scheduler(configs["scheduler"])
    if family == "dit":
        transformer = models.build_dit(configs["dit"])
        transformer.load_state_dict(split_state(tensors, "dit"))
        pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler)
    else:
        verify_files(weights_dir, TOKENIZER_FILES)
        tokenizer = load_tokenizer(*(weights_dir / name for name in TOKENIZER_FILES), max_length=MAX_LENGTH)
        text_encoder = _load_text_encoder(tensors, configs["text_encoder"])
        if family == "unet":
            unet = models.build_unet(configs["unet"])
            unet.load_state_dict(split_state(tensors, "unet"))
            pipe = StableDiffusionPipeline(
                vae=vae,
                text_encoder=text_encoder,
                tokenizer=tokenizer,
                unet=unet,
                scheduler=scheduler,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        else:
            transformer = models.build_pixart(configs["pixart"])
            transformer.load_state_dict(split_state(tensors, "pixart"))
            pipe = PixArtAlphaPipeline(
                tokenizer=tokenizer,
                text_encoder=text_encoder,
                vae=vae,
                transformer=transformer,
                scheduler=scheduler,
            )
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    # built in float32: only cast when asked (diffusers warns on a cast to the same dtype)
    return pipe.to(device) if dtype == torch.float32 else pipe.to(device=device, dtype=dtype)


def load_classifier(
    device: str | torch.device = "cpu", weights_dir: str | Path | None = None
) -> models.DigitClassifier:
    """Loads the trained digit classifier (checksum-verified), in eval mode.

    Args:
        device (`str` or `torch.device`, defaults to `"cpu"`): where to put it.
        weights_dir (`str` or `Path`, *optional*): defaults to the shipped weights.

    Returns:
        `DigitClassifier`: `clf(images)` gives logits, `clf.features(images)` the 64-d penultimate features;
        images are in `[0, 1]`, `(N, C, 8|16, 8|16)`.

    Example:
        ```py
        >>> clf = load_classifier()
        >>> clf(zoo.sample("dit", zoo.load("dit"), [3], seed=0)).argmax(-1)
        tensor([3])
        ```
    """
    weights_dir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    tensors, meta = load_weights(weights_dir, "classifier")
    clf = models.DigitClassifier(**meta["config"])
    clf.load_state_dict(tensors)
    return clf.eval().requires_grad_(False).to(device)


def sample(
    family: str,
    pipe: DiffusionPipeline,
    digits: list[int],
    seed: int,
    num_inference_steps: int = 50,
    guidance_scale: float = 3.0,
    output: str = "digits",
) -> torch.Tensor:
    """Samples one image per requested digit with the family's pipeline, deterministically from `seed`.

    Args:
        family (`str`): `"unet"`, `"dit"` or `"pixart"`; must match `pipe`.
        pipe (`DiffusionPipeline`): from `load(family)` (possibly with caching applied to it).
        digits (`list[int]`): digits 0-9, one image each.
        seed (`int`): seeds the initial noise (a CPU `torch.Generator`).
        num_inference_steps (`int`, defaults to 50): DDIM steps.
        guidance_scale (`float`, defaults to 3.0): classifier-free guidance; `<= 1` disables it.
        output (`str`, defaults to `"digits"`): `"digits"` -> `(N, 1, 8, 8)` in `[0, 1]` (grey,
            area-downsampled; what the classifier reads), `"images"` -> the pipeline's `(N, 3, 16, 16)` in
            `[0, 1]`.

    Returns:
        `torch.Tensor`: float32 on CPU.

    Example:
        ```py
        >>> pipe = zoo.load("dit")
        >>> x = zoo.sample("dit", pipe, [0, 1, 2], seed=0, num_inference_steps=50, guidance_scale=3.0)
        >>> x.shape
        torch.Size([3, 1, 8, 8])
        ```
    """
    _check_family(family)
    digits = [int(d) for d in digits]
    if not digits or any(d < 0 or d > 9 for d in digits):
        raise ValueError(f"digits must be a non-empty list of integers 0-9, got {digits}")
    if output not in ("digits", "images"):
        raise ValueError(f"output must be 'digits' or 'images', got {output!r}")
    generator = torch.Generator("cpu").manual_seed(seed)
    kwargs = {
        "num_inference_steps": num_inference_steps,
        "guidance_scale": guidance_scale,
        "generator": generator,
        "output_type": "pt",
    }
    if family == "dit":
        images = pipe(class_labels=digits, **kwargs).images
    elif family == "unet":
        images = pipe(prompt=[digit_prompt(d) for d in digits], **kwargs).images
    else:
        images = pipe(
            prompt=[digit_prompt(d) for d in digits],
            use_resolution_binning=False,
            max_sequence_length=MAX_LENGTH,
            **kwargs,
        ).images
    images = images.float().cpu()
    return to_digit_space(images) if output == "digits" else images
