"""Benchmark harness: speed, MACs and memory of methods side by side with peers, measured in one process.

Three modes, each timing the baseline, every method config and every peer alternately after a warm-up,
on the same seeded inputs:

* **shapes** (``--model NAME``, one of :data:`MODELS`): denoisers of published shapes with random
  weights, run in a bare denoising loop (denoiser + scheduler), then the final latents are decoded by a
  random-weight SD-shaped VAE. End-to-end = loop + decode; there is no text encoder. Good for speed and
  MACs only, never for quality (random weights make caching look free).
* **reference** (``--reference unet|dit|pixart``): the trained zoo pipelines, called whole (text encoder,
  loop, VAE). PSNR of the output images vs the baseline's and class accuracy are meaningful there.
* **checkpoint** (``--model PATH``): a local diffusers pipeline, called whole.

Per config: loop time (from the start of the first denoiser call to the end of the last, recorded by
hooks on the denoiser), end-to-end time, both speedups, MACs per image counted with
``torch.utils.flop_counter`` (attention included), how much of the MAC reduction shows up as wall clock,
peak and cache memory, PSNR vs the baseline and, in reference mode, the peer with the nearest PSNR.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import api
from .config import CONFIG_CLASSES, BaseConfig
from .peers import PEERS, PeerTarget, snapshot
from .shapes import (  # noqa: F401  (re-exported: bench.MODELS, bench.build_model, ...)
    DIT_XL2,
    MODELS,
    PIXART_ALPHA,
    SD15_UNET,
    SD21_UNET,
    SD_VAE,
    SDXL_UNET,
    build_model,
    build_vae,
    denoiser_kind,
    make_loop,
)

#: default CFG scales: random-weight shapes and local checkpoints (the pipelines' own defaults) per denoiser
#: kind, and the zoo reference models (``zoo.sample``'s default).
GUIDANCE = {"unet": 7.5, "dit": 1.5, "pixart": 1.5, "latte": 7.5}
CHECKPOINT_GUIDANCE = {"unet": 7.5, "dit": 4.0, "pixart": 4.5, "latte": 7.5}
REFERENCE_GUIDANCE = 3.0
CHECKPOINT_PROMPT = "a photo of a cat sitting on a wooden table"


@dataclass
class Row:
    """One benchmark row (the baseline's is named ``baseline``, peers' start with ``peer:``)."""

    name: str
    loop_s: float = 0.0
    loop_s_min: float = 0.0
    loop_s_max: float = 0.0
    speedup: float = 1.0
    macs_per_image: float = 0.0
    macs_ratio: float = 1.0
    speedup_per_mac_reduction: float = 1.0
    peak_mem_bytes: int = 0
    cache_bytes: int = 0
    psnr_vs_baseline: float = float("inf")
    error: str = ""
    e2e_s: float = 0.0
    e2e_s_min: float = 0.0
    e2e_s_max: float = 0.0
    e2e_speedup: float = 1.0
    accuracy: float = float("nan")
    nearest_peer: str = ""
    nearest_peer_psnr: float = float("nan")
    nearest_peer_e2e_s: float = float("nan")
    faster_than_nearest_peer: bool | None = None


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


# ---- workloads -------------------------------------------------------------------------------------


def bare_workload(
    model: torch.nn.Module, *, resolution: int, steps: int, batch: int = 1, guidance: float = 7.5,
    vae: torch.nn.Module | None = None,
) -> Workload:
    """The bare loop on ``model``, then (if ``vae`` is given) decoding its final latents with ``vae``.

    Returns:
        A workload whose output is the final latents (PSNR on latents; the decoded images are discarded).
    """
    loop = make_loop(model, denoiser_kind(model), resolution, batch, steps, guidance)

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
    device: str = "cpu", dtype: torch.dtype = torch.float32,
) -> Workload:
    """A trained zoo pipeline (``zoo.load(family)``) sampling digits ``0, 1, ..., 9, 0, ...`` with seed 0.

    Args:
        family: ``"unet"``, ``"dit"`` or ``"pixart"``.
        steps: DDIM steps.
        batch: images per generation.
        guidance: CFG scale (``zoo.sample``'s default 3.0).
        device, dtype: where and in what precision the pipeline runs.

    Returns:
        A workload whose output is the pipeline's images in [0, 1], scored by the zoo digit classifier.
    """
    from . import zoo
    from .metrics import class_accuracy

    pipe = zoo.load(family, device=device, dtype=dtype)
    digits = [i % 10 for i in range(batch)]
    classifier = zoo.load_classifier()

    def generate() -> torch.Tensor:
        return zoo.sample(family, pipe, digits, seed=0, num_inference_steps=steps, guidance_scale=guidance,
                          output="images")

    return Workload(getattr(pipe, "unet", None) or pipe.transformer, generate, images=batch, steps=steps,
                    cfg=guidance > 1.0, pipe=pipe, scheduler=pipe.scheduler, data_range=1.0,
                    score=lambda images: class_accuracy(images, digits, classifier))


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

    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    guidance = CHECKPOINT_GUIDANCE[denoiser_kind(denoiser)] if guidance is None else guidance

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


# ---- running ---------------------------------------------------------------------------------------


class _Watch:
    """Forward hooks on the denoiser: the current timestep, the call count and the loop's time window.

    The window runs from the start of the first denoiser call to the end of the last one; on CUDA it is
    measured with events, so the hooks add no synchronisation inside the loop.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.timestep = 0.0
        self.reset()
        # outermost: the pre-hook first, the post-hook last, around whatever peers install
        self._handles = [model.register_forward_pre_hook(self._pre, with_kwargs=True, prepend=True),
                         model.register_forward_hook(self._post)]

    def reset(self) -> None:
        self.calls = 0
        self.start: Any = None
        self.end: Any = None

    def _now(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _pre(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        if t is not None:
            self.timestep = float(t.flatten()[0]) if isinstance(t, torch.Tensor) else float(t)
        if self.calls == 0:
            self.start = self._now()
        self.calls += 1

    def _post(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        self.end = self._now()

    def loop_seconds(self) -> float:
        if self.start is None or self.end is None:
            return 0.0
        if self.cuda:
            self.end.synchronize()
            return self.start.elapsed_time(self.end) / 1000.0
        return self.end - self.start

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mem(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _psnr(out: torch.Tensor, ref: torch.Tensor, data_range: float | None) -> float:
    from .metrics import psnr

    peak = data_range if data_range is not None else float(ref.float().max() - ref.float().min())
    return float(psnr(out.float(), ref.float(), data_range=peak))


def run_bench(
    model: torch.nn.Module,
    configs: dict[str, BaseConfig],
    *,
    peers: list[str] | tuple[str, ...] = (),
    resolution: int,
    steps: int = 50,
    batch: int = 1,
    guidance: float = 7.5,
    repeats: int = 3,
    warmup: int = 1,
    compile: bool = False,
    vae: torch.nn.Module | None = None,
    progress: bool = True,
) -> list[Row]:
    """Time the baseline, every config and every peer on ``model`` in a bare loop, in one process.

    Args:
        model: the denoiser (random weights are fine for speed and MACs).
        configs: display name -> method config.
        peers: names from :data:`tokencache.peers.PEERS`; one that fails gets a row with its error.
        resolution: image side in pixels (latents are ``resolution // 8``).
        steps: denoising steps; guidance > 1 runs the CFG batch ``[uncond; cond]``.
        repeats: timed runs per config (median reported); ``warmup`` untimed runs first.
        compile: wrap the denoiser's blocks with ``torch.compile`` (regional compile).
        vae: decodes the final latents inside the timed run (end-to-end = loop + decode); ``None``: no decode.

    Returns:
        Rows, the baseline first; a config that fails gets a row with ``error`` set.
    """
    work = bare_workload(model, resolution=resolution, steps=steps, batch=batch, guidance=guidance, vae=vae)
    return run_workload(work, configs, peers=peers, repeats=repeats, warmup=warmup, compile=compile,
                        progress=progress)


def run_workload(
    work: Workload,
    configs: dict[str, BaseConfig],
    *,
    peers: list[str] | tuple[str, ...] = (),
    repeats: int = 3,
    warmup: int = 1,
    compile: bool = False,
    progress: bool = True,
) -> list[Row]:
    """Time the baseline, every config and every peer on ``work``, alternating runs after a warm-up.

    Each run applies its method or peer, times one generation (end-to-end) and the denoising loop inside
    it, and removes the method or peer again; after a peer, anything it left on the modules is put back.

    Args:
        work: the generation to time (see :func:`bare_workload`, :func:`reference_workload`).
        configs: display name -> method config.
        peers: names from :data:`tokencache.peers.PEERS`; one that fails gets a row with its error (its MACs
            are not counted: NaN).
        repeats: timed runs per config (median reported); ``warmup`` untimed runs first.
        compile: wrap the denoiser's blocks with ``torch.compile`` (regional compile).

    Returns:
        Rows, the baseline first; a config that fails gets a row with ``error`` set.
    """
    model = work.denoiser
    device = next(model.parameters()).device
    if compile and hasattr(model, "compile_repeated_blocks"):
        model.compile_repeated_blocks()
    names = ["baseline", *configs, *peers]
    loop_t: dict[str, list[float]] = {n: [] for n in names}
    e2e_t: dict[str, list[float]] = {n: [] for n in names}
    outs: dict[str, torch.Tensor] = {}
    rows = {n: Row(n) for n in names}
    macs_call = _baseline_macs(model, work.generate)
    watch = _Watch(model, device)
    calls: dict[str, int] = {}
    memo: dict = {}

    def one(name: str, timed: bool) -> None:
        cfg = configs.get(name)
        undo: Callable[[], None] | None = None
        restore: Callable[[], list[str]] | None = None
        try:
            if name in PEERS:
                rows[name].macs_ratio = float("nan")
                restore = snapshot(model, work.pipe)
                target = PeerTarget(model, work.pipe, work.scheduler, calls.get("baseline", work.steps), work.cfg,
                                    timestep=lambda: watch.timestep, generate=work.generate, memo=memo)
                undo = PEERS[name](target)
            elif name != "baseline" and cfg is None:
                raise ValueError(f"peer {name!r} is unknown; allowed: {sorted(PEERS)}")
            if cfg is not None:
                api.apply(work.target, cfg, **work.apply_kwargs)
            watch.reset()
            _sync(device)
            t0 = time.perf_counter()
            with torch.no_grad():
                out = work.generate()
            _sync(device)
            e2e = time.perf_counter() - t0
            calls.setdefault(name, watch.calls)
            if timed:
                loop_t[name].append(watch.loop_seconds())
                e2e_t[name].append(e2e)
                outs[name] = out
                if cfg is not None:
                    s = api.summary(work.target)
                    rows[name].macs_ratio = s.macs_ratio
                    rows[name].cache_bytes = s.cache_bytes
        except Exception as e:  # a failing config gets an error row, never a silent skip
            rows[name].error = f"{type(e).__name__}: {e}"
        finally:
            if cfg is not None:
                api.remove(work.target)
            if undo is not None:
                try:
                    undo()
                except Exception as e:
                    rows[name].error = rows[name].error or f"disable failed: {type(e).__name__}: {e}"
            if restore is not None:
                restore()

    total = (warmup + repeats) * len(names)
    bar = _progress(total) if progress else None
    try:
        for r in range(warmup + repeats):
            for name in names:
                if rows[name].error:
                    continue
                one(name, timed=r >= warmup)
                if bar:
                    bar.advance(bar.task_ids[0])
                gc.collect()
    finally:
        watch.remove()
        if bar:
            bar.stop()
    _fill_rows(rows, loop_t, e2e_t, outs, work, macs_call * calls.get("baseline", work.steps), device)
    return [rows[n] for n in names]


def _fill_rows(
    rows: dict[str, Row], loop_t: dict[str, list[float]], e2e_t: dict[str, list[float]],
    outs: dict[str, torch.Tensor], work: Workload, macs_full: float, device: torch.device,
) -> None:
    """Medians, speedups, MACs, PSNR and accuracy from the measured runs."""
    base_loop = statistics.median(loop_t["baseline"]) if loop_t["baseline"] else float("nan")
    base_e2e = statistics.median(e2e_t["baseline"]) if e2e_t["baseline"] else float("nan")
    for name, row in rows.items():
        if row.error or not loop_t[name]:
            continue
        row.loop_s = statistics.median(loop_t[name])
        row.loop_s_min, row.loop_s_max = min(loop_t[name]), max(loop_t[name])
        row.e2e_s = statistics.median(e2e_t[name])
        row.e2e_s_min, row.e2e_s_max = min(e2e_t[name]), max(e2e_t[name])
        row.speedup = base_loop / row.loop_s if row.loop_s > 0 else float("nan")
        row.e2e_speedup = base_e2e / row.e2e_s
        row.macs_per_image = macs_full * row.macs_ratio / work.images  # NaN for peers (not counted)
        row.speedup_per_mac_reduction = row.speedup * row.macs_ratio
        if name != "baseline" and "baseline" in outs:
            row.psnr_vs_baseline = _psnr(outs[name], outs["baseline"], work.data_range)
        if work.score is not None:
            row.accuracy = float(work.score(outs[name]))
        row.peak_mem_bytes = _peak_mem(device)


def _baseline_macs(model: torch.nn.Module, generate: Callable[[], Any]) -> float:
    """MACs of one baseline denoiser call (all CFG rows), counted on a meta twin with its first call's inputs."""
    from .core.accounting import count_macs

    with torch.device("meta"):
        twin = type(model).from_config(model.config)
    dtype = next(model.parameters()).dtype
    twin = twin.to(dtype) if dtype != torch.float32 else twin
    captured: dict[str, Any] = {}

    def grab(m: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        captured["a"], captured["k"] = args, kwargs
        raise _Stop

    h = model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            generate()
    except _Stop:
        pass
    finally:
        h.remove()
    from torch.utils._pytree import tree_map

    def meta(x: Any) -> Any:
        return torch.empty_like(x, device="meta") if isinstance(x, torch.Tensor) else x

    args, kwargs = tree_map(meta, (captured["a"], captured["k"]))
    return count_macs(twin, args, kwargs)


class _Stop(Exception):
    pass


def _progress(total: int):
    from rich.progress import Progress

    bar = Progress(transient=True)
    bar.add_task("bench", total=total)
    bar.start()
    return bar


# ---- nearest-PSNR peer -----------------------------------------------------------------------------


def _psnr_gap(a: float, b: float) -> float:
    """|a - b| in dB, with two lossless (inf) results 0 apart and a lossless vs a lossy one inf apart."""
    return 0.0 if a == b else abs(a - b)


def nearest_peers(rows: list[Row]) -> list[Row]:
    """For each method row, the successful peer row with the nearest PSNR vs the baseline; in place.

    Sets ``nearest_peer``, ``nearest_peer_psnr``, ``nearest_peer_e2e_s`` and ``faster_than_nearest_peer``
    (the method's median end-to-end time is at most the peer's: at least as fast). Of peers equally near,
    the faster one is taken. Left unset (``None``) when no peer ran or every peer is infinitely far
    (e.g. only lossless peers next to a lossy method). Meaningful only where PSNR is (trained models).

    Args:
        rows: rows from :func:`run_workload`.

    Returns:
        ``rows``.
    """
    peers = [r for r in rows if r.name.startswith("peer:") and not r.error]
    for row in rows:
        if row.name == "baseline" or row.name.startswith("peer:") or row.error:
            continue
        gap = {p.name: _psnr_gap(row.psnr_vs_baseline, p.psnr_vs_baseline) for p in peers}
        best = min(peers, key=lambda p: (gap[p.name], p.e2e_s), default=None)
        if best is None or math.isinf(gap[best.name]):
            continue
        row.nearest_peer, row.nearest_peer_psnr, row.nearest_peer_e2e_s = best.name, best.psnr_vs_baseline, best.e2e_s
        row.faster_than_nearest_peer = row.e2e_s <= best.e2e_s
    return rows


# ---- output ------------------------------------------------------------------------------------


def _has_accuracy(rows: list[Row]) -> bool:
    return any(not math.isnan(r.accuracy) for r in rows if not r.error)


def _has_nearest(rows: list[Row]) -> bool:
    return any(r.faster_than_nearest_peer is not None for r in rows)


def _cells(r: Row, accuracy: bool, nearest: bool) -> list[str]:
    cells = [r.name, f"{r.loop_s:.2f}", f"{r.e2e_s:.2f}", f"{r.speedup:.2f}x", f"{r.e2e_speedup:.2f}x",
             f"{r.macs_per_image / 1e12:.3g}", f"{r.macs_ratio:.3f}", f"{r.speedup_per_mac_reduction:.2f}",
             f"{r.psnr_vs_baseline:.1f}"]
    if accuracy:
        cells.append(f"{r.accuracy:.0%}")
    cells.append(f"{r.cache_bytes / 2**20:.0f}")
    if nearest:
        near = "" if r.faster_than_nearest_peer is None else f"{r.nearest_peer} ({r.nearest_peer_psnr:.1f} dB)"
        faster = {None: "", True: "yes", False: "no"}[r.faster_than_nearest_peer]
        if r.faster_than_nearest_peer is not None:  # the margin: a "no" by 1% is within timing noise
            faster += f" ({r.nearest_peer_e2e_s / r.e2e_s:.2f}x)"
        cells += [near, faster]
    return cells


def _header(accuracy: bool, nearest: bool) -> list[str]:
    cols = ["config", "loop s (median)", "e2e s (median)", "loop speedup", "e2e speedup", "MACs/image (T)",
            "MACs ratio", "speedup / MAC reduction", "PSNR vs baseline (dB)"]
    if accuracy:
        cols.append("accuracy")
    cols.append("cache MiB")
    if nearest:
        cols += ["nearest-PSNR peer", "e2e at least as fast (peer time / ours)"]
    return cols


def to_markdown(rows: list[Row], header: str = "") -> str:
    """A markdown table of ``rows`` (accuracy and nearest-peer columns only where they were computed)."""
    accuracy, nearest = _has_accuracy(rows), _has_nearest(rows)
    cols = _header(accuracy, nearest)
    lines = [header] if header else []
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if r.error:
            lines.append(f"| {r.name} | error: {r.error} |" + " |" * (len(cols) - 2))
        else:
            lines.append("| " + " | ".join(_cells(r, accuracy, nearest)) + " |")
    return "\n".join(lines)


def print_table(rows: list[Row], title: str) -> None:
    """The rows as a rich table on the terminal, errors listed under it."""
    from rich.console import Console
    from rich.table import Table

    accuracy, nearest = _has_accuracy(rows), _has_nearest(rows)
    cols = _header(accuracy, nearest)
    t = Table(title=title)
    for col in cols:
        t.add_column(col)
    for r in rows:
        t.add_row(*(_cells(r, accuracy, nearest) if not r.error else [r.name, "error (below)"]))
    console = Console()
    if not console.is_terminal:  # piped or captured: don't squeeze the columns into 80 characters
        console = Console(width=200)
    console.print(t)
    for r in rows:
        if r.error:
            console.print(f"{r.name}: {r.error}", markup=False, highlight=False)


def plot(rows: list[Row], path: str | Path, title: str = "") -> Path:
    """End-to-end speedup vs PSNR, one point per config (peers as crosses), to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if r.error or r.name == "baseline":
            continue
        y = min(r.psnr_vs_baseline, 99.0)
        ax.scatter(r.e2e_speedup, y, marker="x" if r.name.startswith("peer:") else "o")
        ax.annotate(r.name, (r.e2e_speedup, y), fontsize=7)
    ax.set_xlabel("measured end-to-end speedup vs baseline (x)")
    ax.set_ylabel("PSNR vs baseline (dB, capped at 99)")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


#: methods benchmarked when ``--methods`` is not given, by denoiser family
DEFAULT_METHODS = {
    "unet": "dato:fast,dato:balanced,deepcache:balanced,tome:balanced",
    "dit": "toca:balanced,duca:fast,fora:balanced",
    "pixart": "toca:balanced,duca:fast,fora:balanced",
    "latte": "toca:balanced,duca:fast,fora:balanced",
}


def parse_method(spec: str) -> BaseConfig:
    """``method:preset`` (e.g. ``dato:fast``) or a config file path -> config."""
    if Path(spec).suffix in (".yaml", ".yml", ".json"):
        from .config import load_config

        return load_config(spec)
    method, _, preset = spec.partition(":")
    if method not in CONFIG_CLASSES:
        raise ValueError(f"bench method={method!r} is unknown; allowed: {sorted(CONFIG_CLASSES)}")
    return CONFIG_CLASSES[method].preset(preset or "balanced")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .zoo import FAMILIES

    where = p.add_mutually_exclusive_group()
    where.add_argument("--model", default="sd15",
                       help=f"one of {sorted(MODELS)} (random weights) or a local diffusers checkpoint path")
    where.add_argument("--reference", default=None, choices=FAMILIES,
                       help="time a trained zoo pipeline end to end (PSNR and accuracy are meaningful)")
    p.add_argument("--methods", default=None,
                   help="comma-separated method:preset specs or config files (default: the presets of the model's "
                        f"family: UNets {DEFAULT_METHODS['unet']}; transformers {DEFAULT_METHODS['dit']})")
    p.add_argument("--peers", default="", help=f"comma-separated peers to run alongside: {sorted(PEERS)}")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--resolution", type=int, default=None, help="image side (not for --reference: 16 px)")
    p.add_argument("--batch", type=int, default=None, help="images per generation (default 1; 10 for --reference)")
    p.add_argument("--guidance", type=float, default=None,
                   help="CFG scale (default: 7.5 UNets, 1.5 DiT/PixArt shapes, the pipeline's for checkpoints, "
                        "3.0 for --reference)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", dest="json_out", default=None, help="write rows as JSON to this path ('-' = stdout)")
    p.add_argument("--markdown", default=None, help="write a markdown table to this path")
    p.add_argument("--plot", default=None, help="write a speedup-vs-PSNR PNG to this path")


def _check_args(args: argparse.Namespace) -> None:
    for name, low in (("steps", 1), ("repeats", 1), ("warmup", 0), ("batch", 1), ("resolution", 8)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise ValueError(f"bench --{name}={value} is invalid; allowed: an integer >= {low}")
    if args.reference and args.resolution is not None:
        raise ValueError(f"bench --resolution={args.resolution} is not allowed with --reference (the zoo models "
                         "are 16x16)")


def _workload(args: argparse.Namespace, dtype: torch.dtype) -> tuple[Workload, str, str]:
    """The workload the arguments ask for, its mode and a title prefix."""
    _check_args(args)
    if args.reference:
        batch = args.batch or 10
        guidance = REFERENCE_GUIDANCE if args.guidance is None else args.guidance
        work = reference_workload(args.reference, steps=args.steps, batch=batch, guidance=guidance,
                                  device=args.device, dtype=dtype)
        what = f"reference {args.reference} (trained zoo pipeline) 16x16, batch {batch}, CFG {guidance}"
        return work, "reference", what
    batch = args.batch or 1
    if args.model in MODELS:
        model, kind = build_model(args.model, dtype, args.device)
        res = args.resolution or MODELS[args.model][2]
        guidance = args.guidance if args.guidance is not None else GUIDANCE[kind]
        work = bare_workload(model, resolution=res, steps=args.steps, batch=batch, guidance=guidance,
                             vae=build_vae(dtype, args.device))
        what = f"{args.model} {res}x{res} (random weights; e2e = loop + SD-VAE decode), batch {batch}, CFG {guidance}"
        return work, "shapes", what
    from diffusers import DiffusionPipeline

    path = Path(args.model)
    if not path.exists():
        raise FileNotFoundError(f"--model {args.model!r}: no such checkpoint directory; allowed: {sorted(MODELS)} "
                                "or an existing diffusers checkpoint directory")
    pipe = DiffusionPipeline.from_pretrained(path, torch_dtype=dtype, local_files_only=True).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    work = checkpoint_workload(pipe, steps=args.steps, batch=batch, guidance=args.guidance,
                               resolution=args.resolution)
    return work, "checkpoint", f"{args.model} (whole pipeline), batch {batch}, CFG {work.cfg and 'on' or 'off'}"


def run(args: argparse.Namespace) -> int:
    dtype = getattr(torch, args.dtype)
    work, mode, what = _workload(args, dtype)
    methods = args.methods if args.methods is not None else DEFAULT_METHODS[denoiser_kind(work.denoiser)]
    specs = [s for s in methods.split(",") if s]
    names = [Path(s).stem if Path(s).suffix else s for s in specs]  # a config file's row: its file stem
    if len(set(names)) != len(names):
        raise ValueError(f"bench --methods={methods!r} names a config twice (rows {names}); allowed: distinct names")
    configs = {n: parse_method(s) for n, s in zip(names, specs)}
    peers = [s for s in args.peers.split(",") if s]
    rows = run_workload(work, configs, peers=peers, repeats=args.repeats, warmup=args.warmup, compile=args.compile,
                        progress=args.json_out != "-")
    if mode != "shapes":  # PSNR says nothing on random weights
        nearest_peers(rows)
    title = (f"{what}, {args.steps} steps, {args.dtype}, {args.device}, torch {torch.__version__}, "
             f"{args.repeats} repeats")
    data = {"title": title, "mode": mode, "rows": [asdict(r) for r in rows]}
    if args.json_out == "-":
        print(json.dumps(data, indent=2))
    else:
        print_table(rows, title)
    if args.json_out and args.json_out != "-":
        Path(args.json_out).write_text(json.dumps(data, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(to_markdown(rows, f"**{title}**\n") + "\n")
    if args.plot:
        plot(rows, args.plot, title)
    return 0 if all(not r.error for r in rows) else 1
