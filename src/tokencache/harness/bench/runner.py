"""Runs the baseline, method configs and peers alternately on one workload and measures them."""

from __future__ import annotations

import gc
import math
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ...models import find_adapter
from .. import registry as api
from ..peers import PeerTarget, make_peer, snapshot
from ..progress import Progress
from ..registry import BaseConfig, MacBook
from .workloads import Workload, bare_workload


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



class _Watch:
    """Forward hooks on the denoiser: the current timestep, the call count and the loop's time window.

    The window runs from the start of the first denoiser call to the end of the last one; on CUDA it is
    measured with events, so the hooks add no synchronisation inside the loop.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.timestep = 0.0  # in the scheduler's units, what `pipe.current_timestep` would say
        try:
            adapter = find_adapter(model)
            self.scale, self.batched_cfg = adapter.timestep_scale, adapter.cfg_layout == "batched"
        except TypeError:  # a denoiser only peers run on
            self.scale, self.batched_cfg = 1.0, True
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
            self.timestep = self.scale * (float(t.flatten()[0]) if isinstance(t, torch.Tensor) else float(t))
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


@dataclass
class Measured:
    """One timed generation: its output, end-to-end and loop seconds, and the method's summary (configs only)."""

    out: torch.Tensor
    e2e_s: float
    loop_s: float
    summary: Any = None


class Runs:
    """Runs one config or peer at a time on a denoiser: install, time one generation, remove.

    After a peer, anything it left on the modules is put back (:func:`~tokencache.harness.peers.snapshot`).
    One instance serves several workloads on the same denoiser (e.g. one per seed); it remembers each
    name's denoiser calls per generation (peers that need the step count get the baseline's) and the peers'
    calibrations (``memo``).

    Args:
        model: the denoiser.
        device: where it runs (CUDA times the loop with events).
    """

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model, self.device = model, device
        self.watch = _Watch(model, device)
        self.calls: dict[str, int] = {}
        self.memo: dict = {}

    def run(self, work: Workload, name: str, cfg: BaseConfig | None) -> Measured:
        """Time one generation of ``work`` under ``cfg``, the peer ``name`` (``"peer:..."``) or nothing.

        Raises whatever installing, running or removing raised, after cleaning up.
        """
        model, device = self.model, self.device
        undo: Callable[[], None] | None = None
        restore: Callable[[], list[str]] | None = None
        summary = None
        try:
            if name.startswith("peer:"):
                restore = snapshot(model, work.pipe)
                # per-context families (FLUX true CFG, Wan, Qwen-Image) call each branch on its own: the
                # peers' step counts are per cache context, half the calls
                batched = work.cfg and self.watch.batched_cfg
                separate = work.cfg and not self.watch.batched_cfg
                calls = self.calls.get("baseline", work.steps * (2 if separate else 1))
                target = PeerTarget(model, work.pipe, work.scheduler, calls // 2 if separate else calls,
                                    batched, timestep=lambda: self.watch.timestep, generate=work.generate,
                                    memo=self.memo, separate_cfg=separate)
                undo = make_peer(name)(target)  # raises naming a bad peer or knob
            elif name != "baseline" and cfg is None:
                raise ValueError(f"{name!r} is neither a config nor a peer; peers are named 'peer:...'")
            if cfg is not None:
                api.apply(work.target, cfg, **work.apply_kwargs)
            self.watch.reset()
            _sync(device)
            t0 = time.perf_counter()
            with torch.no_grad():
                out = work.generate()
            _sync(device)
            e2e = time.perf_counter() - t0
            self.calls.setdefault(name, self.watch.calls)
            loop = self.watch.loop_seconds()
            if cfg is not None:
                summary = api.summary(work.target)
        finally:
            if cfg is not None:
                api.remove(work.target)
            try:
                if undo is not None:
                    undo()
            except Exception as e:
                raise RuntimeError(f"disable failed: {type(e).__name__}: {e}") from e
            finally:
                if restore is not None:
                    restore()
        return Measured(out, e2e, loop, summary)

    def close(self) -> None:
        self.watch.remove()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mem(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _psnr(out: torch.Tensor, ref: torch.Tensor, data_range: float | None) -> float:
    from ...metrics import psnr

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
        peers: peer specs, names from :data:`tokencache.peers.PEERS` with optional knobs
            (``"peer:taylorseer:interval=3"``, see :func:`~tokencache.harness.peers.parse_peer`); one that fails
            gets a row with its error (its MACs are not counted: NaN).
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
    runs = Runs(model, device)

    def one(name: str, timed: bool) -> None:
        cfg = configs.get(name)
        if name.startswith("peer:"):
            rows[name].macs_ratio = float("nan")
        try:
            m = runs.run(work, name, cfg)
        except Exception as e:  # a failing config gets an error row, never a silent skip
            rows[name].error = f"{type(e).__name__}: {e}"
            return
        if timed:
            loop_t[name].append(m.loop_s)
            e2e_t[name].append(m.e2e_s)
            outs[name] = m.out
            if m.summary is not None:
                rows[name].macs_ratio = m.summary.macs_ratio
                rows[name].cache_bytes = m.summary.cache_bytes

    total = (warmup + repeats) * len(names)
    try:
        with Progress("bench", total, progress) as bar:
            for r in range(warmup + repeats):
                for name in names:
                    if rows[name].error:
                        continue
                    one(name, timed=r >= warmup)
                    bar.advance()
                    gc.collect()
    finally:
        runs.close()
    _fill_rows(rows, loop_t, e2e_t, outs, work, macs_call * runs.calls.get("baseline", work.steps), device)
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
        if name != "baseline" and "baseline" in outs and outs[name].shape != outs["baseline"].shape:
            row.error = (f"its output has shape {tuple(outs[name].shape)}, the uncached one "
                         f"{tuple(outs['baseline'].shape)}: it broke the call")
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
    """MACs of one baseline denoiser call (all CFG rows): the core's meta twin (``MacBook``), first call's inputs."""
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
    book = MacBook(model)
    book.new_call()
    book.note(None, "", "full", captured["a"], captured["k"])
    return book.macs(None, "", "full")


class _Stop(Exception):
    pass


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
