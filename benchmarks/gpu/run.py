#!/usr/bin/env python
"""The whole GPU check in one command: speed, MACs and CUDA memory of every method and peer, eager and compiled.

    python benchmarks/gpu/run.py --out DIR                       # the H200 run (bf16, published shapes)
    python benchmarks/gpu/run.py --out DIR --device cpu --tiny   # the same code path on tiny shapes (CI)

Random-weight denoisers of published shapes (SD 1.5 512², SDXL 1024², DiT-XL/2 256², PixArt-alpha 1024², FLUX.1-dev
1024²), seeded inputs, prompt embeddings instead of text encoders, a bare sampling loop (DDIM; flow-matching Euler
for FLUX) and a random VAE decode (SD's; FLUX's 16-channel one).
For each shape and compile mode (eager, ``torch.compile`` of the whole denoiser, regional compile of its
repeated blocks) it times the baseline, the presets of every method that applies and the peers, after a
warm-up, median of ``--repeats``; it records the MACs ratio (``tc.summary``), speedup x MACs ratio, peak
CUDA memory (reset per row), cache bytes, and the memory still held after each call and after
``tc.remove()``. One row per method also runs under ``torch.cuda.set_sync_debug_mode`` and reports the
host syncs by source file. A global time guard turns rows that would overrun ``--budget-s`` into
"skipped: time budget" rows. Output: ``results.json``, ``results.md`` and ``speed.png`` under ``--out``.

Random weights: good for speed, MACs and memory only, never for quality.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "src"))  # benchmark this checkout's tokencache, not an installed one
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import tokencache as tc  # noqa: E402
from tokencache.config import CONFIG_CLASSES  # noqa: E402

# ---- shapes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """One denoiser shape to benchmark.

    Attributes:
        name: row label.
        kind: the loop's denoiser kind (``"unet"``, ``"dit"``, ``"pixart"``, ``"flux"``; see :data:`LOOP_BUILDERS`).
        config: the denoiser class's constructor arguments (a published config, or a tiny one).
        vae: ``AutoencoderKL`` arguments of the decoder timed end to end.
        resolution: image side in pixels (latents are ``resolution // 8``).
        steps: denoising steps; guidance > 1 runs the ``[uncond; cond]`` CFG batch (not FLUX: see ``cfg_batch``).
        guidance: CFG scale (the pipeline's default; irrelevant for speed beyond > 1); FLUX.1-dev embeds it.
        prior_s: a guess of one generation's seconds, used by the time guard before the baseline ran.
    """

    name: str
    kind: str
    config: dict
    vae: dict
    resolution: int
    steps: int
    guidance: float
    prior_s: float = 1.0

    @property
    def family(self) -> str:
        """The config family that runs on it (``CONFIG_CLASSES[...].structures``)."""
        return "unet" if self.kind == "unet" else "transformer"

    @property
    def cfg_batch(self) -> bool:
        """Whether each denoiser call carries the ``[uncond; cond]`` batch (FLUX.1-dev is guidance-distilled:
        one call per step, the scale goes in as an embedding)."""
        return self.guidance > 1.0 and self.kind != "flux"

    @property
    def sampler(self) -> str:
        return "flow-matching Euler steps, guidance embedded" if self.kind == "flux" else "DDIM steps, CFG"


def _published() -> dict[str, Shape]:
    from sources import FLUX_VAE, MODELS, SD_VAE

    return {
        "sd15": Shape("sd15", "unet", MODELS["sd15"][1], SD_VAE, 512, 50, 7.5, prior_s=2.0),
        "sdxl": Shape("sdxl", "unet", MODELS["sdxl"][1], SD_VAE, 1024, 30, 5.0, prior_s=4.0),
        "dit-xl-2": Shape("dit-xl-2", "dit", MODELS["dit-xl-2"][1], SD_VAE, 256, 50, 4.0, prior_s=0.8),
        "pixart-alpha-1024": Shape("pixart-alpha-1024", "pixart", MODELS["pixart-alpha-1024"][1], SD_VAE, 1024, 20,
                                   4.5, prior_s=3.5),
        # 11.9B parameters: built in fp32 on the GPU (48 GiB) and cast; 4096 image + 512 text tokens
        "flux-dev": Shape("flux-dev", "flux", MODELS["flux-dev"][1], FLUX_VAE, 1024, 28, 3.5, prior_s=12.0),
    }


TINY_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, norm_num_groups=8,
    block_out_channels=(16, 32), cross_attention_dim=32, attention_head_dim=4,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
)
TINY_SDXL_UNET = {**TINY_UNET, "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
                  "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "addition_embed_type": "text_time",
                  "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 80,
                  "cross_attention_dim": 64, "transformer_layers_per_block": (1, 2)}
TINY_DIT = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=3,
                sample_size=8, patch_size=2, num_embeds_ada_norm=1000, norm_num_groups=8)
TINY_PIXART = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
                   sample_size=8, patch_size=2, cross_attention_dim=16, caption_channels=24, norm_num_groups=8,
                   use_additional_conditions=False)
TINY_VAE = dict(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
#: FLUX-style: 4 latent channels packed 2x2 into 16, 1 double- and 2 single-stream blocks, rope axes summing to
#: the head width
TINY_FLUX = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=8,
                 num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16, guidance_embeds=True,
                 axes_dims_rope=(2, 2, 4))
TINY_FLUX_VAE = {**TINY_VAE, "shift_factor": 0.1, "use_quant_conv": False, "use_post_quant_conv": False}


def _tiny() -> dict[str, Shape]:
    return {
        "sd15": Shape("sd15-tiny", "unet", TINY_UNET, TINY_VAE, 64, 8, 7.5, prior_s=0.2),
        "sdxl": Shape("sdxl-tiny", "unet", TINY_SDXL_UNET, TINY_VAE, 64, 5, 5.0, prior_s=0.2),
        "dit-xl-2": Shape("dit-xl-2-tiny", "dit", TINY_DIT, TINY_VAE, 64, 8, 4.0, prior_s=0.2),
        "pixart-alpha-1024": Shape("pixart-alpha-1024-tiny", "pixart", TINY_PIXART, TINY_VAE, 64, 5, 4.5, prior_s=0.2),
        "flux-dev": Shape("flux-dev-tiny", "flux", TINY_FLUX, TINY_FLUX_VAE, 64, 5, 3.5, prior_s=0.2),
    }


def shapes_for(tiny: bool) -> dict[str, Shape]:
    """``--shapes`` key -> shape (tiny stand-ins keep the published shapes' keys)."""
    return _tiny() if tiny else _published()


def _model_class(kind: str) -> type:
    from diffusers import DiTTransformer2DModel, FluxTransformer2DModel, PixArtTransformer2DModel, UNet2DConditionModel

    return {"unet": UNet2DConditionModel, "dit": DiTTransformer2DModel, "pixart": PixArtTransformer2DModel,
            "flux": FluxTransformer2DModel}[kind]


def build(shape: Shape, device: torch.device, dtype: torch.dtype) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The seeded random-weight denoiser and VAE, initialised on ``device`` (fast on a GPU), in ``dtype``."""
    from diffusers import AutoencoderKL
    from diffusers.utils import logging as dlogging

    dlogging.set_verbosity_error()  # "modules that should be kept in float32: []" on every cast
    torch.manual_seed(0)
    with torch.device(device):
        model = _model_class(shape.kind)(**shape.config)
        vae = AutoencoderKL(**shape.vae)
    if dtype != torch.float32:
        model, vae = model.to(dtype), vae.to(dtype)
    return model.eval().requires_grad_(False), vae.eval().requires_grad_(False)


def _make_loop(model: torch.nn.Module, shape: Shape) -> Callable[[], torch.Tensor]:
    from sources import make_loop

    return make_loop(model, shape.kind, shape.resolution, 1, shape.steps, shape.guidance)


#: denoiser kind -> ``(model, shape) -> loop()`` returning the final latents (FLUX: packed, ``(B, h*w, 4C)``).
LOOP_BUILDERS: dict[str, Callable[[torch.nn.Module, Shape], Callable[[], torch.Tensor]]] = {
    "unet": _make_loop, "dit": _make_loop, "pixart": _make_loop, "flux": _make_loop,
}


def unpack_latents(latents: torch.Tensor, channels: int) -> torch.Tensor:
    """FLUX's packed ``(B, h*w, 4C)`` latents -> ``(B, C, 2h, 2w)`` (square images), as its pipeline unpacks."""
    b, n, _ = latents.shape
    h = math.isqrt(n)
    x = latents.view(b, h, h, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, channels, 2 * h, 2 * h)


def vae_input(latents: torch.Tensor, vae: torch.nn.Module) -> torch.Tensor:
    """What the pipeline hands ``vae.decode``: unpacked (FLUX), divided by the scaling factor, shifted back."""
    cfg = vae.config
    if latents.dim() == 3:
        latents = unpack_latents(latents, cfg.latent_channels)
    latents = latents.to(vae.dtype) / cfg.scaling_factor
    shift = getattr(cfg, "shift_factor", None)
    return latents + shift if shift else latents


# ---- rows --------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One measured (or skipped, or failed) configuration."""

    shape: str
    compile: str
    name: str
    kind: str  # "baseline", "method" or "peer"
    loop_s: float | None = None
    loop_s_min: float | None = None
    loop_s_max: float | None = None
    e2e_s: float | None = None
    e2e_s_min: float | None = None
    e2e_s_max: float | None = None
    speedup: float | None = None
    e2e_speedup: float | None = None
    speedup_vs_eager_baseline: float | None = None
    macs_ratio: float | None = None
    macs_per_image: float | None = None
    speedup_per_mac_reduction: float | None = None
    peak_mem_bytes: int | None = None
    cache_bytes: int | None = None
    retained_after_call_bytes: int | None = None
    retained_after_remove_bytes: int | None = None
    warmup_s: float | None = None
    host_syncs: dict | None = None
    #: the kernel-launch census's bounds for this shape and config (eager rows; ``benchmarks/launches.py``)
    census_launch_bound: float | None = None
    census_compute_bound: float | None = None
    error: str = ""
    skipped: str = ""
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and not self.skipped


def method_specs(family: str, methods: list[str] | None, presets: list[str] | None = None) -> list[str]:
    """``method:preset`` for every preset of every method of ``family``, filtered by ``--methods``.

    ``methods`` entries are method names (all presets) or ``method:preset``; ``None``: all of them.
    ``presets``: only these preset names (``None``: all), except where ``methods`` names the spec.
    """
    out = []
    for name, cls in CONFIG_CLASSES.items():
        if family not in cls.structures:
            continue
        for preset in cls.PRESETS:
            spec = f"{name}:{preset}"
            named = methods is not None and spec in methods
            if named or ((methods is None or name in methods) and (presets is None or preset in presets)):
                out.append(spec)
    return out


def make_config(spec: str) -> Any:
    method, _, preset = spec.partition(":")
    return CONFIG_CLASSES[method].preset(preset)


DEFAULT_PEERS = {
    "unet": ["peer:deepcache", "peer:tomesd", "peer:pab"],
    "transformer": ["peer:first-block-cache", "peer:pab", "peer:taylorseer", "peer:magcache", "peer:faster-cache",
                    "peer:cache-dit"],
    # guidance-distilled FLUX.1-dev runs no CFG batch: FasterCache skips attention only there
    "flux": ["peer:first-block-cache", "peer:pab", "peer:taylorseer", "peer:magcache", "peer:faster-cache",
             "peer:cache-dit"],
}
#: peers that ask for the current timestep (read from the denoiser input by a pre-hook)
TIMESTEP_PEERS = ("peer:pab", "peer:faster-cache")


# ---- measuring ---------------------------------------------------------------------------------------


class Budget:
    """The global time guard: a row that would end after the deadline is skipped instead."""

    def __init__(self, seconds: float) -> None:
        self.t0 = time.monotonic()
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def allows(self, estimate_s: float) -> bool:
        return self.elapsed() + estimate_s <= self.seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _allocated(device: torch.device, full_collect: bool = False) -> int:
    """Bytes of live tensors: the CUDA allocator's count, or (CPU) the plain tensors the garbage collector sees.

    A young-generation collection only (a full one costs ~0.4 s with diffusers imported); callers redo it
    with ``full_collect`` when they see retained bytes.
    """
    if full_collect:
        gc.collect()
    else:
        gc.collect(0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return int(torch.cuda.memory_allocated(device))
    seen, total = set(), 0
    for obj in gc.get_objects():
        if type(obj) is not torch.Tensor or obj.device.type == "meta":  # parameters are nn.Parameter
            continue
        try:
            storage = obj.untyped_storage()
        except Exception:  # tensors without storage
            continue
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def _retained(device: torch.device, before: int | None) -> int | None:
    """Bytes held now beyond ``before``; confirmed by a full collection when positive."""
    if before is None:
        return None
    now = _allocated(device) - before
    return _allocated(device, full_collect=True) - before if now > 0 else now


class Generation:
    """One seeded generation (loop + VAE decode) of a shape, timed: loop with CUDA events, e2e with a host clock."""

    def __init__(self, model: torch.nn.Module, vae: torch.nn.Module, shape: Shape, device: torch.device) -> None:
        self.model, self.vae, self.shape, self.device = model, vae, shape, device
        self.loop = LOOP_BUILDERS[shape.kind](model, shape)
        self.scheduler = getattr(self.loop, "scheduler", None)

    def __call__(self) -> tuple[float, float]:
        """Run once; returns ``(loop_s, e2e_s)``."""
        cuda = self.device.type == "cuda"
        _sync(self.device)
        t0 = time.perf_counter()
        if cuda:
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
        with torch.no_grad():
            latents = self.loop()
            if cuda:
                e1.record()
            t1 = time.perf_counter()
            self.vae.decode(vae_input(latents, self.vae))
        _sync(self.device)
        t2 = time.perf_counter()
        loop_s = e0.elapsed_time(e1) / 1000.0 if cuda else t1 - t0
        return loop_s, t2 - t0


def _source(filename: str) -> str:
    """``tokencache`` (the library), ``harness`` (bench / shapes / peers / this script) or ``other``."""
    path = filename.replace(os.sep, "/")
    if "/tokencache/" in path and "/site-packages/" not in path:
        name = path.rsplit("/tokencache/", 1)[1]
        harness = name.startswith("harness/") or name in ("shapes.py", "peers.py", "bench.py")
        return "harness" if harness else "tokencache"
    if "/benchmarks/" in path:
        return "harness"
    return "other"


def count_syncs(generation: Generation, mode: str) -> dict:
    """One untimed generation under ``torch.cuda.set_sync_debug_mode``: host syncs by source.

    ``mode="warn"`` records every synchronising CUDA call with the Python frame that made it (so the
    model's own and the loop's syncs are told apart from tokencache's); ``"error"`` stops at the first one
    and records it. The run is never aborted by this check.
    """
    locations: Counter[str] = Counter()
    by_source: Counter[str] = Counter()
    first_error = ""
    torch.cuda.set_sync_debug_mode(mode)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                generation()
            except RuntimeError as e:
                if "synchroniz" not in str(e):
                    raise
                import traceback

                frames = traceback.extract_tb(e.__traceback__)
                frame = frames[-1] if frames else None
                first_error = f"{e} at {frame.filename}:{frame.lineno}" if frame else str(e)
                if frame:
                    locations[f"{frame.filename}:{frame.lineno}"] += 1
                    by_source[_source(frame.filename)] += 1
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for w in caught:
        if "synchroniz" in str(w.message):
            locations[f"{w.filename}:{w.lineno}"] += 1
            by_source[_source(w.filename)] += 1
    out = {"mode": mode, "total": sum(by_source.values()), **{k: by_source.get(k, 0) for k in
                                                               ("tokencache", "harness", "other")},
           "top": dict(locations.most_common(8))}
    if first_error:
        out["first_error"] = first_error[:300]
    return out


def _uncompile(model: torch.nn.Module) -> None:
    """Undo ``Module.compile()`` on the model and every submodule (regional and whole)."""
    for m in model.modules():
        if getattr(m, "_compiled_call_impl", None) is not None:
            m._compiled_call_impl = None


def compile_model(model: torch.nn.Module, mode: str, backend: str) -> str:
    """Compile in place for ``mode`` (``eager``: nothing); returns a note on what was compiled."""
    if mode == "eager":
        return ""
    if mode == "whole":
        model.compile(backend=backend)
        return f"torch.compile(denoiser, backend={backend})"
    blocks = getattr(model, "_repeated_blocks", None)
    if blocks:
        model.compile_repeated_blocks(backend=backend)
        return f"compile_repeated_blocks() on {list(blocks)}, backend={backend}"
    # DiT / PixArt declare no _repeated_blocks in diffusers: compile their transformer blocks by class name
    n = 0
    for m in model.modules():
        if type(m).__name__ == "BasicTransformerBlock":
            m.compile(backend=backend)
            n += 1
    if not n:
        raise ValueError(f"{type(model).__name__} has no _repeated_blocks and no BasicTransformerBlock")
    return f"{n} BasicTransformerBlock compiled by class name (no _repeated_blocks), backend={backend}"


class Runner:
    """Runs rows for one shape's model in one compile mode; knows the shape's baselines for speedups."""

    def __init__(self, args: argparse.Namespace, budget: Budget, device: torch.device) -> None:
        self.args, self.budget, self.device = args, budget, device
        self.rows: list[Row] = []
        self.base_e2e: dict[tuple[str, str], float] = {}  # (shape, compile) -> baseline e2e median
        self.base_loop: dict[tuple[str, str], float] = {}
        self.compile_cost: dict[tuple[str, str], float] = {}
        self.macs_full_step: dict[str, float] = {}
        self.memo: dict = {}

    # ---- estimates for the time guard ----
    def estimate(self, shape: Shape, mode: str, kind: str) -> float:
        per = self.base_e2e.get((shape.name, "eager"), shape.prior_s)
        calls = self.args.warmup + self.args.repeats + (1 if kind == "peer" else 0)
        est = calls * per + (2.0 if kind == "method" else 0.0)  # + the MAC count of tc.summary (meta twin, ~1-3 s)
        if mode != "eager":
            prior = 60.0 if self.device.type == "cuda" else 5.0
            # a method row recompiles for each step kind its hooks trace (bounded by --recompile-limit)
            est += self.compile_cost.get((shape.name, mode), prior) * (1 if kind == "baseline" else 3)
        return est

    def skip(self, shape: Shape, mode: str, name: str, kind: str, est: float) -> Row:
        row = Row(shape.name, mode, name, kind,
                  skipped=f"skipped: time budget ({self.budget.elapsed():.0f} s used of {self.budget.seconds:.0f} s; "
                          f"this row needs about {est:.0f} s)")
        self.rows.append(row)
        return row

    def run_row(self, shape: Shape, gen: Generation, mode: str, name: str, kind: str, probe: bool) -> Row:
        """Apply, warm up, time ``--repeats`` generations, remove; ``probe``: also count host syncs (CUDA)
        and, on CPU, walk the live tensors for the memory checks (CUDA counts memory on every row)."""
        est = self.estimate(shape, mode, kind)
        if not self.budget.allows(est):
            return self.skip(shape, mode, name, kind, est)
        row = Row(shape.name, mode, name, kind)
        self.rows.append(row)
        model, device = gen.model, self.device
        undo: Callable[[], None] | None = None
        restore: Callable[[], list[str]] | None = None
        handle = None
        applied = False
        measure = device.type == "cuda" or probe
        before = _allocated(device) if measure else None
        try:
            if kind == "peer":
                from sources import PEERS, PeerTarget, snapshot

                if name not in PEERS:
                    raise ValueError(f"peer {name!r} is unknown; allowed: {sorted(PEERS)}")
                current = {"t": 0.0}
                if name in TIMESTEP_PEERS:  # reads the timestep input: one device->host copy per step
                    handle = model.register_forward_pre_hook(_timestep_reader(current, model), with_kwargs=True)
                restore = snapshot(model)
                target = PeerTarget(model, None, gen.scheduler, shape.steps, shape.cfg_batch,
                                    timestep=lambda: current["t"], generate=gen.loop, memo=self.memo)
                undo = PEERS[name](target)
            elif kind == "method":
                tc.apply(model, make_config(name), num_inference_steps=shape.steps, cfg=shape.cfg_batch)
                applied = True
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            w0 = time.perf_counter()
            for _ in range(self.args.warmup):
                gen()
            row.warmup_s = time.perf_counter() - w0
            if applied:  # MACs are counted lazily on a meta twin: outside the timed runs
                s = tc.summary(model)
                row.macs_ratio = float(s.macs_ratio)
                if s.macs_full_step:
                    self.macs_full_step[shape.name] = float(s.macs_full_step)
            loops, e2es = [], []
            for _ in range(self.args.repeats):
                loop_s, e2e_s = gen()
                loops.append(loop_s)
                e2es.append(e2e_s)
            if device.type == "cuda":
                row.peak_mem_bytes = int(torch.cuda.max_memory_allocated(device))
            if applied:
                row.cache_bytes = int(tc.summary(model).cache_bytes)
            if measure:
                row.retained_after_call_bytes = _retained(device, before)
            row.loop_s, row.loop_s_min, row.loop_s_max = statistics.median(loops), min(loops), max(loops)
            row.e2e_s, row.e2e_s_min, row.e2e_s_max = statistics.median(e2es), min(e2es), max(e2es)
            if probe and device.type == "cuda" and self.args.sync_debug != "off":
                row.host_syncs = count_syncs(gen, self.args.sync_debug)
        except Exception as e:  # an error row, never a silent skip
            row.error = f"{type(e).__name__}: {str(e)[:500]}"
        finally:
            if handle is not None:
                handle.remove()
            if applied:
                tc.remove(model)
            if undo is not None:
                try:
                    undo()
                except Exception as e:
                    row.error = row.error or f"disable failed: {type(e).__name__}: {e}"
            if restore is not None:
                repaired = restore()
                if repaired:
                    row.note = f"harness repaired {len(repaired)} modules after the peer"
        if kind in ("method", "peer") and measure:
            row.retained_after_remove_bytes = _retained(device, before)
        if kind == "baseline" and row.ok:
            self.base_e2e[(shape.name, mode)] = row.e2e_s
            self.base_loop[(shape.name, mode)] = row.loop_s
            if mode != "eager" and row.warmup_s is not None:
                eager = self.base_e2e.get((shape.name, "eager"), 0.0)
                self.compile_cost[(shape.name, mode)] = max(0.0, row.warmup_s - self.args.warmup * eager)
        return row

    def finish(self) -> None:
        """Speedups and MACs per image once every row of a shape has run."""
        for r in self.rows:
            if not r.ok:
                continue
            base_loop = self.base_loop.get((r.shape, r.compile))
            base_e2e = self.base_e2e.get((r.shape, r.compile))
            if base_loop:
                r.speedup = base_loop / r.loop_s
                r.e2e_speedup = base_e2e / r.e2e_s
            eager = self.base_loop.get((r.shape, "eager"))
            if eager:
                r.speedup_vs_eager_baseline = eager / r.loop_s
            if r.kind == "baseline":
                r.macs_ratio = 1.0
            if r.macs_ratio is not None and r.speedup is not None:
                r.speedup_per_mac_reduction = r.speedup * r.macs_ratio
            full = self.macs_full_step.get(r.shape)
            steps = next((s.steps for s in self.args.shape_objs if s.name == r.shape), 0)
            if full and r.macs_ratio is not None:
                r.macs_per_image = full * steps * r.macs_ratio


def _timestep_reader(current: dict, model: torch.nn.Module) -> Callable:
    """The timestep in the scheduler's units (FLUX and Qwen-Image take it divided by 1000), which PAB's and
    FasterCache's ranges are in."""
    from tokencache.models import find_adapter

    scale = find_adapter(model).timestep_scale

    def pre(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        if t is not None:
            current["t"] = scale * (float(t.flatten()[0]) if isinstance(t, torch.Tensor) else float(t))

    return pre


# ---- output ------------------------------------------------------------------------------------------


def _f(v: Any, fmt: str) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _mib(v: int | None) -> str:
    return "" if v is None else f"{v / 2**20:.1f}"


def to_markdown(rows: list[Row], env: dict) -> str:
    lines = ["# GPU benchmark", "",
             f"{env['device_name']}, torch {env['torch']}, diffusers {env['diffusers']}, {env['dtype']}, "
             f"warm-up {env['warmup']}, median of {env['repeats']}, batch 1, random weights (speed, MACs and memory "
             f"only). Run {env['date']}, {env['elapsed_s']:.0f} s of a {env['budget_s']:.0f} s budget. "
             "Loop = the denoising loop (CUDA events); e2e = loop + VAE decode (no text encoder).", ""]
    cols = ["config", "loop s", "e2e s", "loop speedup", "e2e speedup", "vs eager baseline", "MACs ratio",
            "speedup x MACs ratio", "census bounds: launch / compute", "peak MiB", "cache MiB",
            "held after call MiB", "held after remove MiB", "host syncs (tokencache / all)", "note"]
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.shape, r.compile), []).append(r)
    for (shape, mode), group in groups.items():
        steps = next((s for s in env["shapes"] if s["name"] == shape), {})
        lines += [f"## {shape}, {mode}", "",
                  f"{steps.get('resolution', '')}², {steps.get('steps', '')} {steps.get('sampler', 'DDIM steps, CFG')} "
                  f"{steps.get('guidance', '')}",
                  "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in group:
            if not r.ok:
                what = r.skipped or "error: " + r.error.replace("|", "/")
                lines.append(f"| {r.name} | {what} |" + " |" * (len(cols) - 2))
                continue
            syncs = "" if r.host_syncs is None else f"{r.host_syncs['tokencache']} / {r.host_syncs['total']}"
            bounds = "" if r.census_launch_bound is None else (
                f"{r.census_launch_bound:.2f}x / {r.census_compute_bound:.2f}x")
            cells = [r.name, _f(r.loop_s, ".3f"), _f(r.e2e_s, ".3f"), _f(r.speedup, ".2f") + "x",
                     _f(r.e2e_speedup, ".2f") + "x", _f(r.speedup_vs_eager_baseline, ".2f") + "x",
                     _f(r.macs_ratio, ".3f"), _f(r.speedup_per_mac_reduction, ".2f"), bounds, _mib(r.peak_mem_bytes),
                     _mib(r.cache_bytes), _mib(r.retained_after_call_bytes), _mib(r.retained_after_remove_bytes),
                     syncs, r.note.replace("|", "/")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    syncs = [r for r in rows if r.host_syncs]
    if syncs:
        lines += ["## Host syncs (one generation under torch.cuda.set_sync_debug_mode)", ""]
        for r in syncs:
            lines.append(f"- {r.shape} {r.name}: {r.host_syncs}")
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[Row], path: Path, title: str) -> None:
    """Loop speedup against MACs ratio per shape; the dashed curve is speedup = 1 / MACs ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys(r.shape for r in rows))
    fig, axes = plt.subplots(1, max(1, len(shapes)), figsize=(4.2 * max(1, len(shapes)), 4), squeeze=False)
    markers = {"eager": "o", "whole": "s", "regional": "^"}
    for ax, shape in zip(axes[0], shapes):
        xs = [0.08, 1.0]
        ax.plot([x for x in [i / 100 for i in range(8, 101)]], [1 / (i / 100) for i in range(8, 101)], "--",
                color="grey", lw=0.8, label="1 / MACs ratio")
        for r in rows:
            if r.shape != shape or not r.ok or r.speedup is None:
                continue
            if r.kind == "peer":  # MACs not counted for peers: drawn at ratio 1 as crosses
                ax.scatter(1.0, r.speedup, marker="x", color="black")
                ax.annotate(r.name.replace("peer:", ""), (1.0, r.speedup), fontsize=6)
                continue
            x = r.macs_ratio if r.macs_ratio is not None else 1.0
            xs.append(x)
            ax.scatter(x, r.speedup, marker=markers.get(r.compile, "o"), label=None)
            ax.annotate(f"{r.name} ({r.compile})" if r.compile != "eager" else r.name, (x, r.speedup), fontsize=6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(min(xs) * 0.8, 1.3)
        ax.set_xlabel("MACs ratio (log)")
        ax.set_ylabel("loop speedup vs same-mode baseline (log)")
        ax.set_title(shape, fontsize=9)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def environment(args: argparse.Namespace, device: torch.device) -> dict:
    try:
        import diffusers

        dver = diffusers.__version__
    except Exception:
        dver = "missing"
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip()
    except Exception:
        commit = ""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": str(device), "device_name": name, "torch": torch.__version__, "cuda": torch.version.cuda,
            "diffusers": dver, "python": platform.python_version(), "dtype": args.dtype, "tiny": args.tiny,
            "repeats": args.repeats, "warmup": args.warmup, "budget_s": args.budget_s, "commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "threads": torch.get_num_threads(),
            "compile_backend": args.compile_backend, "recompile_limit": args.recompile_limit,
            "census": args.census if args.census_bounds else None}


# ---- main --------------------------------------------------------------------------------------------


def _csv(value: str | None) -> list[str] | None:
    if value is None or value == "all":
        return None
    return [v for v in value.split(",") if v and v != "none"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (results.json, results.md, speed.png)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny stand-ins of every shape (CI, CPU)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--shapes", default="sd15,dit-xl-2,pixart-alpha-1024,flux-dev,sdxl",
                   help="comma-separated, run in this order: sd15, sdxl, dit-xl-2, pixart-alpha-1024, flux-dev")
    p.add_argument("--methods", default="all", help="'all', or method names / method:preset specs")
    p.add_argument("--presets", default=None,
                   help="preset names to run per method, or 'all' (default all; 'balanced' with --tiny)")
    p.add_argument("--peers", default="default",
                   help="'default' (per family), 'none', or comma-separated peer:NAME (wrong family: error row)")
    p.add_argument("--compile", default="eager,regional,whole",
                   help="comma-separated, run in this order: eager, regional, whole")
    p.add_argument("--compile-shapes", default=None,
                   help="shapes that get the compiled modes, or 'all' (default sd15,dit-xl-2; dit-xl-2 with --tiny)")
    p.add_argument("--compile-methods", default=None,
                   help="compiled rows besides the baseline: a preset name (one row per method), 'all', 'none' or "
                        "method:preset specs (default balanced; none with --tiny: dynamo retraces the hooks per step "
                        "kind, 5-50 s per row on a CPU)")
    p.add_argument("--compile-backend", default=None,
                   help="torch.compile backend (default inductor on CUDA, 'eager' (dynamo only) on CPU)")
    p.add_argument("--recompile-limit", type=int, default=8,
                   help="torch._dynamo.config.recompile_limit (torch's default 8): past it a frame runs eager, which "
                        "bounds the warm-up of a method row whose hooks retrace per step kind")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per row, median reported (default 3; 1 with --tiny)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per row first (compiles in compiled modes)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="global time guard in seconds (default 450; 300 with --tiny)")
    p.add_argument("--sync-debug", default="warn", choices=["warn", "error", "off"],
                   help="CUDA only: torch.cuda.set_sync_debug_mode for one row per method and shape")
    p.add_argument("--census", default=str(ROOT / "benchmarks" / "results" / "launches" / "launches.json"),
                   help="benchmarks/launches.py JSON whose launch- and compute-bound speed-ups go beside the eager "
                        "rows ('none': leave them out)")
    args = p.parse_args(argv)
    args.census_bounds = load_census(args.census)
    if args.repeats is None:
        args.repeats = 1 if args.tiny else 3
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    if args.presets is None:
        args.presets = "balanced" if args.tiny else "all"
    if args.compile_shapes is None:
        args.compile_shapes = "dit-xl-2" if args.tiny else "sd15,dit-xl-2"
    if args.compile_methods is None:
        args.compile_methods = "none" if args.tiny else "balanced"
    if args.budget_s is None:
        args.budget_s = 300.0 if args.tiny else 450.0
    if args.compile_backend is None:
        args.compile_backend = "inductor" if args.device.startswith("cuda") else "eager"
    return args


def _compiled_specs(specs: list[str], choice: str) -> list[str]:
    if choice == "all":
        return specs
    if choice == "none":
        return []
    wanted = choice.split(",")
    out, methods = [], set()
    for s in specs:
        method, _, preset = s.partition(":")
        if s in wanted or (preset in wanted and method not in methods):
            out.append(s)
            methods.add(method)
    return out


def load_census(path: str) -> dict[tuple[str, str], tuple[float, float]]:
    """``(shape, config) -> (launch-bound, compute-bound)`` speed-ups from a ``benchmarks/launches.py`` JSON.

    The census counts the same shapes, steps and presets on the ``meta`` device; ``"none"`` (or a missing
    file) gives nothing. Its uncached row is the ``baseline``.
    """
    file = Path(path)
    if path == "none" or not file.is_file():
        return {}
    rows = json.loads(file.read_text())["rows"]
    return {(r["shape"], "baseline" if r["method"] == "none" else r["method"]): (r["launch_bound"], r["compute_bound"])
            for r in rows}


def attach_census(rows: list[Row], bounds: dict[tuple[str, str], tuple[float, float]]) -> None:
    """Put the census's bounds on the eager rows it counted (same shape name and config)."""
    for r in rows:
        hit = bounds.get((r.shape, r.name)) if r.compile == "eager" else None
        if hit is not None:
            r.census_launch_bound, r.census_compute_bound = hit


def write_outputs(runner: Runner, env: dict, args: argparse.Namespace, out: Path, plot_too: bool) -> None:
    """results.json and results.md (after every shape and mode, so a killed run leaves what it measured),
    and speed.png."""
    runner.finish()
    attach_census(runner.rows, args.census_bounds)
    env["elapsed_s"] = runner.budget.elapsed()
    env["shapes"] = [asdict(s) | {"family": s.family, "sampler": s.sampler} for s in args.shape_objs]
    data = {"env": env, "rows": [asdict(r) for r in runner.rows]}
    (out / "results.json").write_text(json.dumps(data, indent=1, default=str))
    (out / "results.md").write_text(to_markdown(runner.rows, env) + "\n")
    if plot_too:
        title = f"{env['device_name']}, torch {env['torch']}, {args.dtype}" + (", tiny shapes" if args.tiny else "")
        plot(runner.rows, out / "speed.png", title)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = True
    import torch._dynamo as dynamo

    for key in ("recompile_limit", "cache_size_limit"):  # the name changed across torch versions
        if hasattr(dynamo.config, key):
            setattr(dynamo.config, key, args.recompile_limit)
    catalogue = shapes_for(args.tiny)
    keys = _csv(args.shapes) or list(catalogue)
    methods = _csv(args.methods)
    modes = _csv(args.compile) or ["eager"]
    for m in modes:
        if m not in ("eager", "whole", "regional"):
            raise SystemExit(f"--compile {m!r} is unknown; allowed: eager, whole, regional")
    compile_keys = keys if args.compile_shapes == "all" else (_csv(args.compile_shapes) or [])
    runner = Runner(args, budget, device)
    args.shape_objs = [catalogue[k] for k in keys if k in catalogue]
    env = environment(args, device)
    print(f"[gpu-bench] {env['device_name']} torch {env['torch']} diffusers {env['diffusers']} {args.dtype}; "
          f"budget {args.budget_s:.0f} s", flush=True)

    built: dict[str, tuple[torch.nn.Module, torch.nn.Module, Generation]] = {}
    phases = [("eager", keys)] + [(m, [k for k in keys if k in compile_keys]) for m in modes if m != "eager"]
    if "eager" not in modes:
        phases = phases[1:]
    for mode, phase_keys in phases:
        for key in phase_keys:
            if key not in catalogue:
                runner.rows.append(Row(key, mode, "baseline", "baseline",
                                       error=f"ValueError: shape {key!r} is unknown; allowed: {sorted(catalogue)}"))
                continue
            shape = catalogue[key]
            if key not in built:
                t0 = time.perf_counter()
                try:
                    model, vae = build(shape, device, dtype)
                    built[key] = (model, vae, Generation(model, vae, shape, device))
                except Exception as e:
                    runner.rows.append(Row(shape.name, mode, "baseline", "baseline",
                                           error=f"build failed: {type(e).__name__}: {e}"))
                    continue
                print(f"[gpu-bench] built {shape.name} in {time.perf_counter() - t0:.1f} s", flush=True)
            model, _, gen = built[key]
            specs = method_specs(shape.family, methods, _csv(args.presets))
            if mode == "eager":
                default = DEFAULT_PEERS.get(shape.kind, DEFAULT_PEERS[shape.family])
                peers = default if args.peers == "default" else (_csv(args.peers) or [])
                todo = [("baseline", "baseline")] + [(s, "method") for s in specs] + [(p, "peer") for p in peers]
            else:
                compiled = _compiled_specs(specs, args.compile_methods)
                todo = [("baseline", "baseline")] + [(s, "method") for s in compiled]
            try:
                note = compile_model(model, mode, args.compile_backend)
            except Exception as e:
                runner.rows.append(Row(shape.name, mode, "baseline", "baseline",
                                       error=f"compile failed: {type(e).__name__}: {e}"))
                continue
            checked: set[str] = set()
            try:
                for name, kind in todo:
                    method = name.partition(":")[0]
                    check = mode == "eager" and kind != "peer" and method not in checked
                    row = runner.run_row(shape, gen, mode, name, kind, probe=check)
                    if check and row.ok:
                        checked.add(method)
                    if note and not row.note:
                        row.note = note
                    status = row.skipped or row.error or (
                        f"loop {row.loop_s:.3f} s e2e {row.e2e_s:.3f} s"
                        + (f" macs {row.macs_ratio:.3f}" if row.macs_ratio is not None else ""))
                    print(f"[gpu-bench] {budget.elapsed():6.1f} s  {shape.name:>22} {mode:>8} {name:<24} {status}",
                          flush=True)
            finally:
                _uncompile(model)
                if mode != "eager":
                    torch._dynamo.reset()
                write_outputs(runner, env, args, out, plot_too=False)
    write_outputs(runner, env, args, out, plot_too=True)
    built.clear()
    gc.collect()
    rows = runner.rows
    n_err = sum(1 for r in rows if r.error)
    n_skip = sum(1 for r in rows if r.skipped)
    print(f"[gpu-bench] {len(rows)} rows ({n_err} errors, {n_skip} skipped) in {env['elapsed_s']:.0f} s -> {out}",
          flush=True)
    print((out / "results.md").read_text(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
