"""Loading the shipped zoo models as ready diffusers pipelines, and sampling digits (tier 1) or glyphs
(tier 2) from them."""

import re
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline, DiTPipeline, PixArtAlphaPipeline, StableDiffusionPipeline, WanPipeline

from . import models
from .data import to_digit_space
from .files import TOKENIZER_FILES, WEIGHTS_DIR, load_weights, split_state, verify_files
from .flux import load_flux, sample_flux
from .glyphs import NUM_CLASSES, to_glyph_space
from .tokenizer import MAX_LENGTH, digit_prompt, letter_prompt, load_tokenizer
from .wan import MIDDLE_FRAME, load_wan, sample_wan

FAMILIES = ("unet", "dit", "pixart", "flux", "wan")
"""The tier-1 (digits, 16x16) diffusion families `load` and `sample` accept (`wan`: 5-frame clips)."""

VIDEO_FAMILIES = ("wan",)
"""The tier-1 families that generate clips (`sample(..., output="clips" | "video")`)."""

TIER2_FAMILIES = ("dit2", "unet2", "pixart2", "flux2")
"""The tier-2 (glyphs A-Z, 32x32) diffusion families `load` and `sample` accept: `dit2` (256 tokens, 8 blocks, class
labels), `unet2` (SD-style, 1024-token top attention) and `pixart2` (256 tokens, 8 blocks), both prompted
`"the letter K"`, and `flux2` (FLUX-style flow matching, 256 image tokens, 2 double + 6 single blocks, learned
prompt embeddings per letter)."""

ALL_FAMILIES = FAMILIES + TIER2_FAMILIES


def _check_family(family: str) -> None:
    if family not in ALL_FAMILIES:
        raise ValueError(f"unknown zoo family {family!r}; expected one of {', '.join(ALL_FAMILIES)}")


def family_tier(family: str) -> int:
    """1 for the digit families (`FAMILIES`), 2 for the glyph families (`TIER2_FAMILIES`)."""
    _check_family(family)
    return 2 if family in TIER2_FAMILIES else 1


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
            `use_resolution_binning=False, max_sequence_length=16`), `"flux"` -> `FluxPipeline` (learned
            prompt embeddings, true CFG), `"wan"` -> `WanPipeline` (5-frame clips of a moving digit, learned
            prompt embeddings, `zoo.wan.ClipVAE`); tier 2: `"dit2"` -> `DiTPipeline` at
            32x32 (class labels 0-25 for the letters A-Z, see `glyphs.CLASSES`), `"unet2"` ->
            `StableDiffusionPipeline` at 32x32 (prompts `"the letter K"`, 1024-token top attention), `"pixart2"`
            -> `PixArtAlphaPipeline` at 32x32 (the same prompts, 256 tokens, 8 blocks), `"flux2"` -> `FluxPipeline`
            at 32x32 (learned prompt embeddings per letter, true CFG, 256 image tokens, 8 blocks).
        device (`str` or `torch.device`, defaults to `"cpu"`): where to put the pipeline.
        dtype (`torch.dtype`, defaults to `torch.float32`): parameter dtype.
        weights_dir (`str` or `Path`, *optional*): directory with the files and `checksums.json`; defaults to
            the weights shipped in the package.

    Returns:
        `DiffusionPipeline`: in eval mode, with a DDIM scheduler (flux, wan: `FlowMatchEulerDiscreteScheduler`),
        `safety_checker=None`, progress bar off.

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
    # flux and wan are flow matching: their files hold a FlowMatchEulerDiscreteScheduler config
    scheduler = models.build_scheduler(configs["scheduler"]) if family not in ("flux", "flux2", "wan") else None
    if family in ("flux", "flux2"):
        pipe = load_flux(tensors, meta, vae)
    elif family == "wan":
        pipe = load_wan(tensors, meta, vae)
    elif family in ("dit", "dit2"):
        transformer = models.build_dit(configs["dit"])
        transformer.load_state_dict(split_state(tensors, "dit"))
        pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler)
    else:
        verify_files(weights_dir, TOKENIZER_FILES)
        tokenizer = load_tokenizer(*(weights_dir / name for name in TOKENIZER_FILES), max_length=MAX_LENGTH)
        text_encoder = _load_text_encoder(tensors, configs["text_encoder"])
        if family in ("unet", "unet2"):
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
    device: str | torch.device = "cpu", weights_dir: str | Path | None = None, tier: int = 1
) -> models.DigitClassifier | models.GlyphClassifier:
    """Loads the trained digit (tier 1) or glyph (tier 2) classifier (checksum-verified), in eval mode.

    Args:
        device (`str` or `torch.device`, defaults to `"cpu"`): where to put it.
        weights_dir (`str` or `Path`, *optional*): defaults to the shipped weights.
        tier (`int`, defaults to 1): 1 -> `DigitClassifier` (`classifier.*`), 2 -> `GlyphClassifier`
            (`classifier2.*`, trained on the train fonts only).

    Returns:
        `DigitClassifier` or `GlyphClassifier`: `clf(images)` gives logits, `clf.features(images)` the 64-d
        penultimate features; images are in `[0, 1]`, `(N, C, 8|16, 8|16)` (tier 1) or `(N, C, 32, 32)`.

    Example:
        ```py
        >>> clf = load_classifier()
        >>> clf(zoo.sample("dit", zoo.load("dit"), [3], seed=0)).argmax(-1)
        tensor([3])
        ```
    """
    if tier not in (1, 2):
        raise ValueError(f"tier must be 1 or 2, got {tier!r}")
    weights_dir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    tensors, meta = load_weights(weights_dir, "classifier" if tier == 1 else "classifier2")
    clf = (models.DigitClassifier if tier == 1 else models.GlyphClassifier)(**meta["config"])
    clf.load_state_dict(tensors)
    return clf.eval().requires_grad_(False).to(device)


def sample(
    family: str,
    pipe: DiffusionPipeline,
    digits: list[int],
    seed: int,
    num_inference_steps: int = 50,
    guidance_scale: float = 3.0,
    output: str | None = None,
) -> torch.Tensor:
    """Samples one image per requested digit (or letter) with the family's pipeline, deterministically.

    Args:
        family (`str`): one of `ALL_FAMILIES`; must match `pipe`.
        pipe (`DiffusionPipeline`): from `load(family)` (possibly with caching applied to it).
        digits (`list[int]`): class labels, one image each: digits 0-9 (tier 1) or letters 0-25 (tier 2,
            `TIER2_FAMILIES`; 0 = A; the text-conditioned families get `"the letter A"`).
        seed (`int`): seeds the initial noise (a CPU `torch.Generator`).
        num_inference_steps (`int`, defaults to 50): DDIM steps.
        guidance_scale (`float`, defaults to 3.0): classifier-free guidance; `<= 1` disables it.
        output (`str`, *optional*): `"digits"` (the tier-1 default) -> `(N, 1, 8, 8)` in `[0, 1]` (grey,
            area-downsampled; what the classifier reads); `"glyphs"` (the tier-2 default) -> grey
            `(N, 1, 32, 32)` in `[0, 1]`; `"images"` -> the pipeline's `(N, 3, 16|32, 16|32)` in `[0, 1]`.
            `"wan"` generates 5-frame clips: `"digits"` / `"images"` are its middle frame (`wan.MIDDLE_FRAME`,
            the unshifted one), `"clips"` -> every frame in digits space `(N, 5, 1, 8, 8)`, `"video"` -> the
            pipeline's `(N, 5, 3, 16, 16)`.

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
    tier = family_tier(family)
    digits = [int(d) for d in digits]
    top = 9 if tier == 1 else NUM_CLASSES - 1
    if not digits or any(d < 0 or d > top for d in digits):
        raise ValueError(f"digits must be a non-empty list of integers 0-{top} for {family!r}, got {digits}")
    space = "digits" if tier == 1 else "glyphs"
    output = space if output is None else output
    allowed = (space, "images", "clips", "video") if family in VIDEO_FAMILIES else (space, "images")
    if output not in allowed:
        raise ValueError(f"output must be {' or '.join(map(repr, allowed))} for {family!r}, got {output!r}")
    prompt_of = digit_prompt if tier == 1 else letter_prompt
    generator = torch.Generator("cpu").manual_seed(seed)
    kwargs = {
        "num_inference_steps": num_inference_steps,
        "guidance_scale": guidance_scale,
        "generator": generator,
        "output_type": "pt",
    }
    if family == "wan":
        video = sample_wan(pipe, digits, kwargs).float().cpu()  # (N, F, 3, 16, 16)
        if output == "video":
            return video
        if output == "clips":
            return to_digit_space(video.flatten(0, 1)).unflatten(0, video.shape[:2])
        images = video[:, MIDDLE_FRAME]
    elif family in ("flux", "flux2"):
        images = sample_flux(pipe, digits, kwargs)
    elif family in ("dit", "dit2"):
        images = pipe(class_labels=digits, **kwargs).images
    elif family in ("unet", "unet2"):
        images = pipe(prompt=[prompt_of(d) for d in digits], **kwargs).images
    else:  # PixArt
        images = pipe(
            prompt=[prompt_of(d) for d in digits],
            use_resolution_binning=False,
            max_sequence_length=MAX_LENGTH,
            **kwargs,
        ).images
    images = images.float().cpu()
    if output == "images":
        return images
    return to_digit_space(images) if output == "digits" else to_glyph_space(images)


def prompt_digit(prompt: str | int) -> int:
    """The digit a prompt names, for the encoder-free zoo pipelines (``"a handwritten 7"``, ``"7"`` or ``7``).

    Raises:
        ValueError: the prompt names no digit 0-9, or more than one.
    """
    if isinstance(prompt, int) and not isinstance(prompt, bool):
        found = [str(prompt)] if 0 <= prompt <= 9 else []
    else:
        found = re.findall(r"(?<![0-9])[0-9](?![0-9])", str(prompt))
    if len(found) != 1 or len(str(prompt).strip()) == 0:
        raise ValueError(f"prompt {prompt!r} is invalid for the reference FLUX/Wan models (no text encoder); "
                         "allowed: a prompt naming exactly one digit 0-9, e.g. 'a handwritten 7' or 7")
    return int(found[0])


def prompt_letter(prompt: str | int) -> int:
    """The letter class (0 = A) a prompt names, for the encoder-free tier-2 FLUX model (``"the letter K"``, ``"K"``,
    or the class ``10``).

    Raises:
        ValueError: the prompt is not ``"the letter X"``, a single letter A-Z, or a class 0-25.
    """
    if isinstance(prompt, int) and not isinstance(prompt, bool):
        if 0 <= prompt < NUM_CLASSES:
            return int(prompt)
    else:
        text = str(prompt).strip()
        m = re.fullmatch(r"(?:the letter\s+)?([A-Za-z])", text, flags=re.IGNORECASE)
        if m:
            return ord(m.group(1).upper()) - ord("A")
        if text.isdigit() and 0 <= int(text) < NUM_CLASSES:
            return int(text)
    raise ValueError(f"prompt {prompt!r} is invalid for the reference FLUX tier-2 model (no text encoder); "
                     f"allowed: 'the letter K', a letter A-Z, or a class 0-{NUM_CLASSES - 1}")


def takes_letter_prompts(pipe: Any) -> bool:
    """Whether ``pipe`` is the zoo's encoder-free tier-2 FLUX (``zoo.load("flux2")``), whose prompt table knows the
    letters A-Z, not digits."""
    return hasattr(pipe, "prompt_table") and getattr(pipe, "image_size", 16) != 16


def call_encoder_free(pipe: DiffusionPipeline, prompts: list[str | int], **kwargs: Any) -> Any:
    """Run the zoo's ``FluxPipeline`` or ``WanPipeline`` (no text encoder) on digit (or letter) prompts.

    Their prompts come from the shipped embedding table (the pipeline's ``prompt_table``), so each prompt
    must name one digit (:func:`prompt_digit`), or one letter for ``zoo.load("flux2")`` (:func:`prompt_letter`);
    CFG is against the empty prompt (FLUX: ``true_cfg_scale`` from ``guidance_scale``, 1.0 when absent). Wan
    clips decoded to PIL come back as one image per clip, its frames side by side.

    Args:
        pipe: a pipeline from ``zoo.load("flux")``, ``zoo.load("flux2")`` or ``zoo.load("wan")``.
        prompts: prompts naming digits (letters), or the class labels themselves.
        **kwargs: further pipeline arguments (``num_inference_steps``, ``generator``, ``output_type``, ...).

    Returns:
        The pipeline's images (FLUX) or clips (Wan) in ``output_type``.
    """
    if not hasattr(pipe, "prompt_table"):
        raise ValueError(f"{type(pipe).__name__} is not an encoder-free zoo pipeline (it has no prompt_table)")
    if isinstance(pipe, WanPipeline):
        clips = sample_wan(pipe, [prompt_digit(p) for p in prompts], kwargs)
        if kwargs.get("output_type") == "pil":
            return [_strip(frames) for frames in clips]
        return clips
    parse = prompt_letter if takes_letter_prompts(pipe) else prompt_digit
    kwargs.setdefault("guidance_scale", 1.0)
    return sample_flux(pipe, [parse(p) for p in prompts], kwargs)


def _strip(frames: list[Any]) -> Any:
    """One PIL image holding a clip's frames left to right."""
    from PIL import Image

    w, h = frames[0].size
    out = Image.new(frames[0].mode, (w * len(frames), h))
    for i, f in enumerate(frames):
        out.paste(f, (i * w, 0))
    return out
