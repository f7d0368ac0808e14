"""Quality-at-equal-speed math of the fair protocol (tokencache.harness.frontier)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokencache.harness.frontier import compare_at, frontier_at, pareto_front


def test_pareto_front_keeps_only_undominated_points():
    pts = [(1, 40), (2, 35), (2, 30), (1.5, 30), (3, 20), (2.5, 10), (float("nan"), 99)]
    assert pareto_front(pts) == [(1, 40), (2, 35), (3, 20)]
    assert pareto_front([]) == []
    assert pareto_front([(2, 30), (2, 30)]) == [(2, 30)]


def test_frontier_at_interpolates_and_refuses_to_extrapolate_speed():
    front = [(1.0, 40.0), (2.0, 30.0), (4.0, 20.0)]
    assert frontier_at(front, 1.5) == pytest.approx(35.0)
    assert frontier_at(front, 3.0) == pytest.approx(25.0)
    assert frontier_at(front, 4.0) == 20.0
    assert frontier_at(front, 4.01) is None  # never reached
    assert frontier_at(front, 0.5) == 40.0  # a slower setting is available
    assert frontier_at([], 1.0) is None


def test_compare_at_names_the_best_peer_and_the_margin():
    ours = [(1.2, 45), (2.1, 40), (3.3, 33)]
    peers = {"A": [(1.5, 41), (2.5, 30)], "B": [(1.1, 50), (2.0, 36), (4.5, 20)]}
    rows = compare_at(ours, peers, [2, 3, 4])
    assert rows[0]["best_peer"] == "B" and rows[0]["best_peer_value"] == pytest.approx(36)
    assert rows[0]["ours"] == pytest.approx(45 - 5 * (0.8 / 0.9)) and rows[0]["margin"] > 0
    assert rows[1]["peers"]["A"] is None  # A never reached 3x
    assert rows[2]["ours"] is None and rows[2]["margin"] is None and rows[2]["best_peer"] == "B"


@given(st.lists(st.tuples(st.floats(0.5, 10), st.floats(0, 60)), min_size=1, max_size=30))
def test_front_dominates_every_point(points):
    front = pareto_front(points)
    xs = [x for x, _ in front]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
    ys = [y for _, y in front]
    assert all(a > b for a, b in zip(ys, ys[1:]))  # faster points on the front are strictly worse
    for x, y in points:
        v = frontier_at(front, x)
        assert v is not None and v >= y - 1e-9  # nothing lies above the frontier
