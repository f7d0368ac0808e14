"""Bench output: the terminal table (80 columns), markdown and a speedup-vs-PSNR plot."""

from __future__ import annotations

import math
from pathlib import Path

from ..tables import print_table as _print_table
from .runner import Row


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
    """The rows as a table on the terminal (at most 80 columns when piped), errors listed under it."""
    accuracy, nearest = _has_accuracy(rows), _has_nearest(rows)
    cells = [_cells(r, accuracy, nearest) if not r.error else [r.name, "error (below)"] for r in rows]
    _print_table(title, _header(accuracy, nearest), cells, [f"{r.name}: {r.error}" for r in rows if r.error])


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
