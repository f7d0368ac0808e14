"""What the benchmark times: a seeded generation on a bare denoiser loop, a zoo pipeline or a checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..pipeline_io import denoiser_of
from ..shapes import make_loop, model_family

#: default CFG scales: random-weight shapes and local checkpoints (the pipelines' own defaults) per model
#: family, and the zoo reference models (``zoo.sample``'s default).
GUIDANCE = {"unet": 7.5, "dit": 1.5, "pixart": 1.5, "latte": 7.5, "flux": 1.0, "sd3": 7.0, "wan": 5.0, "qwen": 4.0}
CHECKPOINT_GUIDANCE = {"unet": 7.5, "dit": 4.0, "pixart": 4.5, "latte": 7.5, "flux": 3.5, "sd3": 7.0, "wan": 5.0,
                       "qwen": 4.0}
REFERENCE_GUIDANCE = 3.0
CHECKPOINT_PROMPT = "a photo of a cat sitting on a wooden table"

@dataclass
class Workload:
    """One seeded generation to time, on a denoiser alone (bare loop) or inside its pipeline.

    Args:
        denoiser: the UNet or transformer (hooks for loop timing, MACs and peers go on it).
        generate: runs one generation and returns what PSNR compares (final latents, or images in [0, 1]).
        images: images per generation (for MACs per image).
        steps: denoising steps.
        cfg: whether each denoiser call carries the ``[uncond; cond]`` CFG batch.
        pipe: the pipeline, or ``None`` in bare-loop mode.
        scheduler: the scheduler stepping the loop.
        data_range: PSNR peak (1.0 for images in [0, 1]); ``None``: the baseline output's value range.
        score: class accuracy of an output, where defined (reference mode).
        apply_kwargs: extra arguments for ``tc.apply`` (a bare denoiser needs steps and CFG up front).
    """

    denoiser: torch.nn.Module
    generate: Callable[[], torch.Tensor]
    images: int
    steps: int
    cfg: bool
    pipe: Any = None
    scheduler: Any = None
    data_range: float | None = None
    score: Callable[[torch.Tensor], float] | None = None
    apply_kwargs: dict = field(default_factory=dict)

    @property
    def target(self) -> Any:
        """What ``tc.apply`` attaches to: the pipeline where there is one."""
        return self.pipe if self.pipe is not None else self.denoiser


def bare_workload(
    model: torch.nn.Module, *, resolution: int, steps: int, batch: int = 1, guidance: float = 7.5,
    vae: torch.nn.Module | None = None,
) -> Workload:
    """The bare loop on ``model``, then (if ``vae`` is given) decoding its final latents with ``vae``.

    Returns:
        A workload whose output is the final latents (PSNR on latents; the decoded images are discarded).
    """
    loop = make_loop(model, model_family(model), resolution, batch, steps, guidance)

    def generate() -> torch.Tensor:
        latents = loop()
        if vae is not None:
            frames = latents if latents.ndim == 4 else latents.transpose(1, 2).flatten(0, 1)  # video: per frame
            vae.decode(frames.to(vae.dtype) / vae.config.scaling_factor)
        return latents

    return Workload(model, generate, images=batch, steps=steps, cfg=guidance > 1.0, scheduler=loop.scheduler,
                    apply_kwargs={"num_inference_steps": steps, "cfg": guidance > 1.0})


def reference_workload(
    family: str, *, steps: int, batch: int = 10, guidance: float = REFERENCE_GUIDANCE,
    device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0, pipe: Any = None,
) -> Workload:
    """A trained zoo pipeline (``zoo.load(family)``) sampling digits ``0, 1, ..., 9, 0, ...`` with ``seed``.

    Tier-2 families (``zoo.TIER2_FAMILIES``) sample the letters ``A, B, ..., Z, A, ...`` (classes 0-25), scored by
    the held-out glyph classifier.

    Args:
        family: one of ``zoo.ALL_FAMILIES``.
        steps: sampling steps.
        batch: images per generation.
        guidance: CFG scale (``zoo.sample``'s default 3.0).
        device, dtype: where and in what precision the pipeline runs.
        seed: the noise seed (one workload per seed for multi-seed protocols).
        pipe: an already loaded ``zoo.load(family)`` pipeline to share between workloads (then ``device``
            and ``dtype`` are its own).

    Returns:
        A workload whose output is the pipeline's images in [0, 1], scored by the zoo digit classifier. Video
        families (``"wan"``): the whole clips ``(N, F, 3, 16, 16)`` (PSNR over every frame), the middle frame
        scored.
    """
    from ... import zoo
    from ...metrics import class_accuracy
    from ...zoo.wan import classified_frame

    pipe = zoo.load(family, device=device, dtype=dtype) if pipe is None else pipe
    tier = zoo.family_tier(family)
    digits = [i % (10 if tier == 1 else len(zoo.CLASSES)) for i in range(batch)]  # tier 2: letters A-Z
    classifier = zoo.load_classifier(tier=tier)
    video = family in zoo.VIDEO_FAMILIES

    def generate() -> torch.Tensor:
        return zoo.sample(family, pipe, digits, seed=seed, num_inference_steps=steps, guidance_scale=guidance,
                          output="video" if video else "images")

    def score(images: torch.Tensor) -> float:
        return class_accuracy(classified_frame(images), digits, classifier)

    return Workload(denoiser_of(pipe), generate, images=batch, steps=steps,
                    cfg=guidance > 1.0, pipe=pipe, scheduler=pipe.scheduler, data_range=1.0, score=score)


def checkpoint_workload(
    pipe: Any, *, steps: int, batch: int = 1, guidance: float | None = None, resolution: int | None = None,
) -> Workload:
    """A local diffusers pipeline called whole: class labels ``0..batch-1`` for DiT, else a fixed prompt.

    Args:
        pipe: the pipeline (``unet`` or ``transformer`` denoiser).
        steps: inference steps (with the pipeline's own scheduler).
        batch: images per generation.
        guidance: CFG scale; ``None``: the pipeline family's default (7.5 SD, 4.0 DiT, 4.5 PixArt).
        resolution: image side for prompt pipelines; ``None``: the pipeline's default.

    Returns:
        A workload whose output is the pipeline's images in [0, 1].
    """
    from diffusers import DiTPipeline

    denoiser = denoiser_of(pipe)
    guidance = CHECKPOINT_GUIDANCE[model_family(denoiser)] if guidance is None else guidance

    def generate() -> torch.Tensor:
        kw: dict[str, Any] = dict(num_inference_steps=steps, guidance_scale=guidance, output_type="pt",
                                  generator=torch.Generator("cpu").manual_seed(0))
        if isinstance(pipe, DiTPipeline):
            return pipe(class_labels=list(range(batch)), **kw).images.float().cpu()
        if resolution:
            kw.update(height=resolution, width=resolution)
        out = pipe(prompt=[CHECKPOINT_PROMPT] * batch, **kw)
        images = out.frames if hasattr(out, "frames") else out.images  # video pipelines (Latte) return frames
        return images.float().cpu()

    return Workload(denoiser, generate, images=batch, steps=steps, cfg=guidance > 1.0, pipe=pipe,
                    scheduler=pipe.scheduler, data_range=1.0)
