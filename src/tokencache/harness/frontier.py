"""Quality-at-equal-speed comparisons: Pareto frontiers of (speed, quality) points and their values at a speed.

Pure functions on plain numbers, used by ``benchmarks/frontier.py`` (the fair protocol) and its tests. A
*point* is ``(x, y)`` with ``x`` a speed (measured speedup, or MAC reduction) and ``y`` a quality where
higher is better (PSNR). A method family's *frontier* is the upper-right envelope of its points: a point
is on it when no other point is at least as fast and at least as good (and strictly one of them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def pareto_front(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated points (higher ``x`` and higher ``y`` are better), sorted by ``x``.

    NaN points are dropped. Ties in ``x`` keep the best ``y``.

    Example:
        >>> pareto_front([(1, 40), (2, 35), (2, 30), (1.5, 30), (3, 20)])
        [(1, 40), (2, 35), (3, 20)]
    """
    pts = sorted({(float(x), float(y)) for x, y in points if not (math.isnan(x) or math.isnan(y))},
                 key=lambda p: (-p[0], -p[1]))
    front: list[tuple[float, float]] = []
    best_y = -math.inf
    for x, y in pts:  # from the fastest down: keep a point only if it beats every faster one's quality
        if y > best_y:
            front.append((x, y))
            best_y = y
    return front[::-1]


def frontier_at(front: Sequence[tuple[float, float]], x: float) -> float | None:
    """The frontier's quality at speed ``x``: linear between its two neighbouring points.

    ``None`` when ``x`` is beyond the fastest point (the method never reached that speed). Below the
    slowest point the slowest point's quality holds (a slower setting is always available).
    """
    if not front or x > front[-1][0]:
        return None
    if x <= front[0][0]:
        return front[0][1]
    for (x0, y0), (x1, y1) in zip(front, front[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None  # pragma: no cover - unreachable for a sorted front


def compare_at(
    ours: Sequence[tuple[float, float]], peers: dict[str, Sequence[tuple[float, float]]], speeds: Sequence[float]
) -> list[dict[str, Any]]:
    """At each speed: our frontier's quality, each peer's, the best peer and our margin over it.

    Args:
        ours: our points (pooled over our configurations).
        peers: peer name -> its points (each peer's knob sweep).
        speeds: the speeds to compare at (e.g. ``[2, 3, 4]``).

    Returns:
        One dict per speed: ``speed``, ``ours`` (or ``None``), ``peers`` (name -> value or ``None``),
        ``best_peer`` (name or ``None``), ``best_peer_value`` and ``margin`` (``ours - best_peer_value``;
        ``None`` unless both are defined).
    """
    our_front = pareto_front(ours)
    fronts = {name: pareto_front(p) for name, p in peers.items()}
    rows = []
    for s in speeds:
        mine = frontier_at(our_front, s)
        theirs = {name: frontier_at(f, s) for name, f in fronts.items()}
        defined = {k: v for k, v in theirs.items() if v is not None}
        best = max(defined, key=defined.get) if defined else None
        best_v = defined[best] if best is not None else None
        rows.append({"speed": s, "ours": mine, "peers": theirs, "best_peer": best, "best_peer_value": best_v,
                     "margin": None if mine is None or best_v is None else mine - best_v})
    return rows
