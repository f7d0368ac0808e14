"""``tokencache generate``: batch generation with any method config, resumable and data-parallel.

Work is split into *global batches* of ``batch_size`` consecutive image indices; process ``rank`` of
``world_size`` takes the batches ``k`` with ``k % world_size == rank`` (with ``--batch-size 1`` that is
image ``i`` with ``i % world_size == rank``). Batches are therefore the same whatever the number of
processes, so a multi-process run writes exactly the images of a single-process run (the noise of
every image comes from its own seeded generator, and DaTo's own token-selection noise depends on the
batch it is in). Every image is written once, to a temporary file then ``os.replace``-d into place, and
recorded in ``manifest.jsonl``; a rerun skips images that are on disk and in the manifest.

Example:
    >>> tokencache generate --reference unet --prompts prompts.txt --out out/ --method dato --preset fast
    >>> accelerate launch --multi_gpu --num_processes 2 -m tokencache generate --reference unet --prompts p.txt --out o/
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .args import REFERENCE_FAMILIES, add_generate_arguments
from .pipeline_io import load_pipeline, read_prompts, run_pipeline, takes_class_labels  # noqa: F401  (re-exported)
from .progress import Progress

MANIFEST = "manifest.jsonl"
add_arguments = add_generate_arguments
__all__ = ["REFERENCE_FAMILIES", "MANIFEST", "generate", "make_jobs", "shard", "parse_seeds", "resolve_config",
           "read_manifest", "load_pipeline", "read_prompts", "run_pipeline", "takes_class_labels", "run"]


# ---------------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------------
def parse_seeds(text: str) -> list[int]:
    """Parse ``"0,1,5-8"`` into ``[0, 1, 5, 6, 7, 8]``; raises ``ValueError`` naming a bad part."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"seeds part {part!r} is invalid; allowed: integers and ranges like '0,3,10-19'")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ValueError(f"seeds range {part!r} is empty; write it low-high")
        seeds.extend(range(lo, hi + 1))
    return seeds


def safe_name(text: str, max_len: int = 40) -> str:
    """A file-name-safe slug of a prompt: lowercase ``[a-z0-9_-]``, at most ``max_len`` characters."""
    slug = re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_")
    return (slug[:max_len].rstrip("_")) or "x"


@dataclass(frozen=True)
class Job:
    """One image to generate."""

    index: int
    prompt: str | int
    seed: int

    @property
    def file(self) -> str:
        return f"{self.index:06d}_{safe_name(str(self.prompt))}_s{self.seed}.png"


def make_jobs(
    prompts: Sequence[str | int], seeds: Sequence[int] | None = None, base_seed: int = 0, per_prompt: int = 1
) -> list[Job]:
    """Jobs for every prompt: one per seed in ``seeds``, or ``per_prompt`` with seed ``base_seed + index``."""
    jobs: list[Job] = []
    for p in prompts:
        if seeds:
            for s in seeds:
                jobs.append(Job(len(jobs), p, int(s)))
        else:
            for _ in range(per_prompt):
                jobs.append(Job(len(jobs), p, base_seed + len(jobs)))
    return jobs


def shard(n_jobs: int, batch_size: int, rank: int, world_size: int) -> list[list[int]]:
    """Global batches of ``batch_size`` consecutive indices owned by ``rank`` (``k % world_size == rank``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid; allowed: an integer >= 1")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} is invalid for world_size={world_size}")
    batches = [list(range(s, min(s + batch_size, n_jobs))) for s in range(0, n_jobs, batch_size)]
    return [b for k, b in enumerate(batches) if k % world_size == rank]


# ---------------------------------------------------------------------------------------------------
# pipelines
# ---------------------------------------------------------------------------------------------------
def resolve_config(method: str | None = None, preset: str | None = None, config: str | None = None):
    """A method config from ``--config FILE`` or ``--method NAME [--preset NAME]``; ``None`` = no acceleration."""
    from .registry import load_config, parse_method

    if config is not None:
        if method is not None or preset is not None:
            raise ValueError("give either --config FILE or --method/--preset, not both")
        return load_config(config)
    if method is None or method == "none":
        if preset is not None:
            raise ValueError("--preset needs --method")
        return None
    if ":" in method or Path(method).suffix:
        raise ValueError(f"--method {method!r} is invalid; allowed: a method name (the preset goes in --preset, "
                         "a file in --config)")
    return parse_method(method if preset is None else f"{method}:{preset}", default_preset=None, what="--method ")


# ---------------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------------
def read_manifest(out: Path) -> dict[str, dict[str, Any]]:
    """``file -> record`` of the manifest in ``out`` (later lines win; torn last lines are skipped)."""
    path = out / MANIFEST
    records: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "file" in rec:
                records[rec["file"]] = rec
    return records


def _append_line(path: Path, record: dict[str, Any]) -> None:
    data = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)  # one write of a short line: atomic with O_APPEND on local file systems
    finally:
        os.close(fd)


def save_png_atomic(image: Any, path: Path) -> None:
    """Write a PIL image to ``path`` through a temporary file in the same folder and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` from accelerate's / torchrun's environment (``RANK``/``WORLD_SIZE``)."""
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return rank, world


def generate(
    pipe: Any,
    jobs: Sequence[Job],
    out: str | Path,
    config: Any = None,
    steps: int = 50,
    batch_size: int = 1,
    guidance_scale: float | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    model_id: str = "",
) -> dict[str, int]:
    """Generate the images of ``jobs`` owned by ``rank`` into ``out``, skipping finished ones.

    Args:
        pipe: a diffusers pipeline.
        jobs: from :func:`make_jobs`.
        out: output folder (created).
        config: a tokencache method config, or ``None`` for the plain pipeline.
        steps: ``num_inference_steps``.
        batch_size: images per pipeline call.
        guidance_scale: CFG scale, ``None`` = pipeline default.
        rank, world_size: this process's share (see the module docstring).
        progress: show a progress bar.
        model_id: recorded in the manifest.

    Returns:
        ``{"generated": n, "skipped": m}`` for this process.

    Example:
        >>> jobs = make_jobs(["a handwritten 3"], seeds=[0, 1])
        >>> generate(pipe, jobs, "out", config=tc.DaToConfig.preset("fast"), steps=50)
    """
    from .registry import apply, remove, summary

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_hash = config.fingerprint() if config is not None else "none"
    done = read_manifest(out)
    for rec in done.values():
        if rec.get("config") != cfg_hash or rec.get("steps") != steps:
            raise ValueError(
                f"output folder {str(out)!r} holds images of config {rec.get('config')!r} at {rec.get('steps')} "
                f"steps (file {rec['file']!r}); this run is config {cfg_hash!r} at {steps} steps: use another --out"
            )
    mine = shard(len(jobs), batch_size, rank, world_size)
    todo = [b for b in mine if any(not _finished(out, jobs[i], done) for i in b)]
    n_mine = sum(len(b) for b in mine)
    counts = {"generated": 0, "skipped": n_mine - sum(len(b) for b in todo)}
    if config is not None:
        apply(pipe, config)
    try:
        with Progress(f"generate [rank {rank}]", n_mine, progress, counts["skipped"], transient=False) as bar:
            for batch in todo:
                bj = [jobs[i] for i in batch]
                t0 = time.perf_counter()
                images = run_pipeline(pipe, [j.prompt for j in bj], [j.seed for j in bj], steps, guidance_scale)
                dt = (time.perf_counter() - t0) / len(bj)
                macs = summary(pipe).macs_ratio if config is not None else 1.0
                for j, img in zip(bj, images):
                    if _finished(out, j, done):
                        counts["skipped"] += 1  # its batch-mates were missing; this one stays untouched
                        continue
                    save_png_atomic(img, out / j.file)
                    _append_line(out / MANIFEST, {
                        "index": j.index, "prompt": j.prompt, "seed": j.seed, "config": cfg_hash,
                        "steps": steps, "time_s": round(dt, 6), "macs_ratio": round(macs, 6), "file": j.file,
                        "model": model_id, "rank": rank,
                    })
                    counts["generated"] += 1
                bar.advance(len(bj))
    finally:
        if config is not None:
            remove(pipe)
    return counts


def _finished(out: Path, job: Job, done: dict[str, dict[str, Any]]) -> bool:
    return job.file in done and (out / job.file).is_file()


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    """Entry point of ``tokencache generate``."""
    # user errors (ValueError, FileNotFoundError, ...) become one line in tokencache.cli
    items = read_prompts(args.prompts)
    seeds = parse_seeds(args.seeds) if args.seeds else None
    if args.images_per_prompt < 1:
        raise ValueError(f"--images-per-prompt {args.images_per_prompt} is invalid; allowed: >= 1")
    if args.steps < 1:
        raise ValueError(f"--steps {args.steps} is invalid; allowed: >= 1")
    config = resolve_config(args.method, args.preset, args.config)
    jobs = make_jobs(items, seeds, args.seed, args.images_per_prompt)
    if args.limit is not None:
        jobs = jobs[: args.limit]
    rank, world = dist_info()
    import torch

    device = args.device
    if device is None:
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() and world > 1 else (
            "cuda" if torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in
            ("1", "true") else "cpu")
    pipe = load_pipeline(args.model, args.reference, device, args.dtype)
    counts = generate(
        pipe, jobs, args.out, config, args.steps, args.batch_size, args.guidance_scale, rank, world,
        progress=not args.no_progress and sys.stderr.isatty(), model_id=args.model or f"zoo:{args.reference}",
    )
    counts.update(rank=rank, world_size=world, total=len(jobs))
    if args.json:
        print(json.dumps(counts))
    else:
        print(f"[rank {rank}/{world}] generated {counts['generated']}, skipped {counts['skipped']} "
              f"of {len(jobs)} images in {args.out}")
    return 0
