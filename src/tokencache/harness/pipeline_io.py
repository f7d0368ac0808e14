"""Pipeline I/O shared by generate, search and bench: prompt files, loading, running, the denoiser.

Nothing here imports torch or diffusers at module level.
"""

from __future__ import annotations

import csv
import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .args import REFERENCE_FAMILIES


def read_prompts(path: str | Path) -> list[str | int]:
    """Read prompts or class labels from a ``.txt``, ``.csv`` or ``.json`` file.

    Args:
        path: ``.txt`` (one prompt per line, blank lines skipped), ``.csv`` (column ``prompt`` or
            ``class_label``) or ``.json`` (a list of strings or integers).

    Returns:
        The prompts (``str``) or class labels (``int``), in file order.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: wrong suffix, missing column, empty file or a malformed entry (named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    items: list[str | int]
    if suffix == ".txt":
        items = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            if "prompt" in cols:
                items = [row["prompt"] for row in reader]
            elif "class_label" in cols:
                items = []
                for n, row in enumerate(reader, start=2):
                    items.append(_label(row["class_label"], f"{path}:{n} column 'class_label'"))
            else:
                raise ValueError(f"prompts file {str(path)!r} has columns {cols}; it needs 'prompt' or 'class_label'")
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"prompts file {str(path)!r} is not valid JSON: {e}") from None
        if not isinstance(data, list):
            raise ValueError(f"prompts file {str(path)!r} must hold a JSON list, got {type(data).__name__}")
        items = []
        for i, v in enumerate(data):
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise ValueError(f"prompts file {str(path)!r} entry [{i}]={v!r} is invalid; allowed: a string or int")
            items.append(v)
    else:
        raise ValueError(f"prompts file {str(path)!r} suffix {suffix!r} is unsupported; allowed: .txt, .csv, .json")
    if not items:
        raise ValueError(f"prompts file {str(path)!r} holds no prompts")
    return items


def _label(text: str, where: str) -> int:
    try:
        v = int(str(text).strip())
    except ValueError:
        raise ValueError(f"{where} value {text!r} is not an integer class label") from None
    if v < 0:
        raise ValueError(f"{where} value {v} is invalid; allowed: an integer >= 0")
    return v


def load_pipeline(model: str | None = None, reference: str | None = None, device: str = "cpu", dtype: str = "float32"):
    """Load a pipeline from a local checkpoint folder or the reference zoo.

    Args:
        model: a local folder saved with ``save_pretrained`` (loaded with ``local_files_only=True``).
        reference: a zoo family (``REFERENCE_FAMILIES``, equal to ``zoo.ALL_FAMILIES``: the tier-1 digit families,
            then the tier-2 glyph families ``zoo.TIER2_FAMILIES``).
        device: torch device.
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``.

    Returns:
        The pipeline, on ``device``, progress bar disabled.
    """
    if (model is None) == (reference is None):
        raise ValueError("give exactly one of --model PATH or --reference FAMILY")
    import torch

    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in dtypes:
        raise ValueError(f"dtype={dtype!r} is invalid; allowed: {sorted(dtypes)}")
    if model is not None:
        path = Path(model)
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(f"--model {str(path)!r} is not a diffusers checkpoint folder: "
                                    f"{str(path / 'model_index.json')!r} does not exist")
        from diffusers import DiffusionPipeline

        kw = {} if dtype == "float32" else {"torch_dtype": dtypes[dtype]}
        pipe = DiffusionPipeline.from_pretrained(str(path), local_files_only=True, **kw)
    else:
        if reference not in REFERENCE_FAMILIES:
            raise ValueError(f"--reference {reference!r} is invalid; allowed: {list(REFERENCE_FAMILIES)}")
        from .. import zoo

        pipe = zoo.load(reference)
        if dtype != "float32":
            pipe = pipe.to(dtype=dtypes[dtype])
    pipe = pipe.to(device)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe


def takes_class_labels(pipe: Any) -> bool:
    """Whether the pipeline is conditioned on class labels (DiT) rather than prompts."""
    params = inspect.signature(pipe.__call__).parameters
    return "class_labels" in params and "prompt" not in params


def run_pipeline(
    pipe: Any,
    prompts: Sequence[str | int],
    seeds: Sequence[int],
    steps: int,
    guidance_scale: float | None = None,
    output_type: str = "pil",
    extra: dict[str, Any] | None = None,
) -> Any:
    """Run one batch with one seeded generator per image (an image does not depend on its batch's noise).

    Args:
        pipe: a diffusers pipeline.
        prompts: prompts, or class labels for class-conditional pipelines.
        seeds: one seed per prompt.
        steps: ``num_inference_steps``.
        guidance_scale: CFG scale; ``None`` keeps the pipeline's default.
        output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"`` (class-label pipelines such as
            ``DiTPipeline`` always decode; for them ``"latent"`` gives the ``"pt"`` images).
        extra: further keyword arguments for the pipeline call.

    Returns:
        The pipeline output's ``images``.
    """
    import torch

    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds; give one seed per prompt")
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    kw: dict[str, Any] = dict(num_inference_steps=steps, generator=gens, output_type=output_type, **(extra or {}))
    if guidance_scale is not None:
        kw["guidance_scale"] = guidance_scale
    if "PixArt" in type(pipe).__name__:  # the zoo's PixArt has a short CLIP text encoder and no binning sizes
        kw.setdefault("use_resolution_binning", False)
        kw.setdefault("max_sequence_length", getattr(getattr(pipe, "tokenizer", None), "model_max_length", 120))
    if hasattr(pipe, "prompt_table"):  # the zoo's FLUX / Wan: no text encoder, prompts name digits
        from ..zoo import call_encoder_free

        return call_encoder_free(pipe, list(prompts), **kw)
    if takes_class_labels(pipe):
        if output_type == "latent":  # DiTPipeline always decodes: return its images as a tensor in [0, 1]
            kw["output_type"] = "pt"
        labels = []
        for p in prompts:
            if isinstance(p, str):
                if not p.strip().isdigit():
                    raise ValueError(f"{type(pipe).__name__} needs integer class labels, got prompt {p!r}")
                p = int(p)
            labels.append(int(p))
        return pipe(class_labels=labels, **kw).images
    return pipe(prompt=[str(p) for p in prompts], **kw).images


def denoiser_of(pipe: Any) -> Any:
    """The denoiser of a pipeline: its ``unet``, else its ``transformer``."""
    den = getattr(pipe, "unet", None)
    if den is None:
        den = getattr(pipe, "transformer", None)
    if den is None:
        raise TypeError(f"pipeline {type(pipe).__name__} has neither a unet nor a transformer; allowed: "
                        "diffusers pipelines with one of them")
    return den
