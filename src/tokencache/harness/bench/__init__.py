"""Benchmark harness: speed, MACs and memory of methods side by side with peers, measured in one process.

Three modes, each timing the baseline, every method config and every peer alternately after a warm-up,
on the same seeded inputs:

* **shapes** (``--model NAME``, one of :data:`MODELS`): denoisers of published shapes with random
  weights, run in a bare denoising loop (denoiser + scheduler), then the final latents are decoded by a
  random-weight SD-shaped VAE. End-to-end = loop + decode; there is no text encoder. Good for speed and
  MACs only, never for quality (random weights make caching look free).
* **reference** (``--reference unet|dit|pixart|flux|wan``): the trained zoo pipelines, called whole (text encoder,
  loop, VAE). PSNR of the output images vs the baseline's and class accuracy are meaningful there.
* **checkpoint** (``--model PATH``): a local diffusers pipeline, called whole.

Per config: loop time (from the start of the first denoiser call to the end of the last, recorded by
hooks on the denoiser), end-to-end time, both speedups, MACs per image counted with
``torch.utils.flop_counter`` (attention included), how much of the MAC reduction shows up as wall clock,
peak and cache memory, PSNR vs the baseline and, in reference mode, the peer with the nearest PSNR.

Modules: :mod:`.workloads` (what is timed), :mod:`.runner` (timing and measuring), :mod:`.report`
(table, markdown, plot), :mod:`.cli` (``tokencache bench``).
"""

from ..peers import PEERS
from ..shapes import (
    DIT_XL2,
    MODELS,
    PIXART_ALPHA,
    SD15_UNET,
    SD21_UNET,
    SD_VAE,
    SDXL_UNET,
    build_model,
    build_vae,
    make_loop,
    model_family,
)
from .cli import DEFAULT_PRESETS, _workload, add_arguments, default_methods, parse_method, run  # noqa: F401
from .report import plot, print_table, to_markdown
from .runner import Row, nearest_peers, run_bench, run_workload
from .workloads import (
    CHECKPOINT_GUIDANCE,
    CHECKPOINT_PROMPT,
    GUIDANCE,
    REFERENCE_GUIDANCE,
    Workload,
    bare_workload,
    checkpoint_workload,
    reference_workload,
)

__all__ = [
    "CHECKPOINT_GUIDANCE", "CHECKPOINT_PROMPT", "DEFAULT_PRESETS", "DIT_XL2", "GUIDANCE", "MODELS", "PEERS",
    "PIXART_ALPHA", "REFERENCE_GUIDANCE", "SD15_UNET", "SD21_UNET", "SDXL_UNET", "SD_VAE", "Row", "Workload",
    "add_arguments",
    "bare_workload", "build_model", "build_vae", "checkpoint_workload", "default_methods", "make_loop",
    "model_family", "nearest_peers", "parse_method", "plot", "print_table", "reference_workload", "run", "run_bench",
    "run_workload", "to_markdown",
]
