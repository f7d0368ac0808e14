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


# --- the protocol script's bookkeeping (benchmarks/frontier.py, benchmarks/scale_study.py) ---

def _bench_module(name: str):
    import importlib
    import sys
    from pathlib import Path

    bench = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    return importlib.import_module(name)


def test_resumed_rows_are_timed_against_their_own_baselines():
    fr = _bench_module("frontier")
    base = {"e2e_s": [10.0, 10.0, 12.0], "resumed": [[20.0, 22.0, 21.0]]}
    first = {"e2e_s": [5.0, 5.0]}  # run 0 (also: rows written before runs were recorded)
    later = {"e2e_s": [10.5, 10.5], "run": 1}
    assert fr.speedup(first, base) == pytest.approx(2.0)
    assert fr.speedup(later, base) == pytest.approx(2.0)  # not 10 / 10.5 against the first run's baseline
    assert fr.baseline_times({"run": 0}, base) is base["e2e_s"]


def test_resume_refuses_other_seeds_or_batch_than_the_rows_it_extends(tmp_path, monkeypatch):
    import json
    import sys

    import torch

    fr = _bench_module("frontier")
    done = {"steps": 50, "seeds": [0, 1, 2], "per_seed": 20, "threads": 1}
    (tmp_path / "frontier_dit.json").write_text(json.dumps({"settings": done, "baseline": {}, "rows": {}}))
    common = ["frontier.py", "--family", "dit", "--resume", "--out", str(tmp_path)]
    for extra, msg in ((["--seeds", "5", "--per-seed", "20"], "--seeds=5 is invalid with --resume; allowed: 3"),
                       (["--seeds", "3", "--per-seed", "30"], "--per-seed=30 is invalid with --resume; allowed: 20"),
                       (["--seeds", "3", "--per-seed", "20", "--steps", "20"], "--steps=20 is invalid")):
        monkeypatch.setattr(sys, "argv", common + extra)
        with pytest.raises(SystemExit, match=msg):
            fr.main()
    assert torch.is_grad_enabled()  # a refused call must not switch autograd off for the rest of the process


def test_core_grid_keeps_the_scale_study_curves_and_trims_the_rest():
    fr = _bench_module("frontier")
    full = fr.transformer_candidates("dit2", 50, False)
    core = fr.transformer_candidates("dit2", 50, False, "core")
    assert {c.key for c in core} < {c.key for c in full}
    curves = {c.curve for c in core}
    for curve in ("FORA-like (reuse)", "ToCa (reuse)", "DuCa (reuse)", "TaylorSeer", "tokencache DuCa + Taylor 1"):
        assert curve in curves
    assert "PAB" not in curves and "FasterCache" not in curves
    assert any(c.curve == "ToCa (reuse)" for c in fr.transformer_candidates("dit", 50, False))
    assert any(c.curve == "ToCa (reuse)" for c in fr.transformer_candidates("pixart2", 50, False, "core"))
    dit = {c.key for c in fr.transformer_candidates("dit", 50, False)}
    assert {f"tokencache DuCa searched | {p}" for p in ("quality", "balanced", "fast")} <= dit
    assert not any("searched" in c.curve for c in core)  # the tier-1 searches are not for tier 2
    assert not any(c.curve == "ToCa (reuse)" for c in fr.unet_candidates("unet", 50, False))


def test_the_flux_pair_has_the_token_level_curves_and_its_packed_shapes():
    fr, ss = _bench_module("frontier"), _bench_module("scale_study")
    for family in ("flux", "flux2"):
        assert any(c.curve == "ToCa (reuse)" for c in fr.transformer_candidates(family, 50, False, "core"))
    # 16x16 digits / 32x32 glyphs packed 2x2; double + single blocks
    assert ss.model_shape("flux") == {"tokens": 64, "blocks": 6, "width": 64, "unit": "blocks"}
    assert ss.model_shape("flux2") == {"tokens": 256, "blocks": 8, "width": 64, "unit": "blocks"}


def test_wan_clips_are_scored_on_their_middle_frame_and_get_the_token_level_curves():
    import torch

    from tokencache.zoo.wan import MIDDLE_FRAME, classified_frame

    fr = _bench_module("frontier")
    clips = torch.rand(2, 5, 3, 4, 4)
    assert torch.equal(classified_frame(clips), clips[:, MIDDLE_FRAME])
    images = torch.rand(2, 3, 4, 4)
    assert classified_frame(images) is images
    curves = {c.curve for c in fr.transformer_candidates("wan", 50, False, "core")}
    assert {"ToCa (reuse)", "DuCa (reuse)", "FORA-like (reuse)", "TaylorSeer"} <= curves


def test_scale_study_gaps_are_token_level_minus_fora_like(tmp_path):
    ss = _bench_module("scale_study")

    def row(curve, ours, t, p, macs=None):
        return {"curve": curve, "label": "x", "ours": ours, "e2e_s": [t], "psnr": [p], "macs_ratio": macs}

    def state(fora, toca):
        return {"baseline": {"e2e_s": [12.0]}, "settings": {"seeds": [0, 1, 2], "per_seed": 10, "threads": 1},
                "rows": {"a": row("FORA-like (reuse)", True, 12.0, 60.0, 1.0),
                         "b": row("FORA-like (reuse)", True, 4.0, fora, 0.25),
                         "c": row("ToCa (reuse)", True, 12.0, 60.0, 1.0),
                         "d": row("DuCa (reuse)", True, 4.0, toca, 0.25),
                         "e": row("TaylorSeer", False, 4.0, 25.0)}}

    import json

    (tmp_path / "frontier_dit.json").write_text(json.dumps(state(fora=40.0, toca=30.0)))
    (tmp_path / "frontier_dit2.json").write_text(json.dumps(state(fora=30.0, toca=36.0)))
    res = ss.study(("dit", "dit2"), tmp_path)
    t1, t2 = res["families"]["dit"], res["families"]["dit2"]
    assert (t1["tokens"], t1["blocks"], t2["tokens"], t2["blocks"]) == (64, 4, 256, 8)
    # at 3x speed and at a 4x MAC cut both curves sit on their fast point
    assert t1["speed"][3.0]["gap (reuse)"] == pytest.approx(-10.0)
    assert t2["speed"][3.0]["gap (reuse)"] == pytest.approx(6.0)
    assert t2["macs"][4.0]["gap (reuse)"] == pytest.approx(6.0)
    assert t2["speed"][3.0]["best peer"] == pytest.approx(25.0)
    assert t2["speed"][2.0]["gap (forecast)"] is None  # no forecasting rows: no gap, not zero
    text = ss.report(res, tmp_path, "scale")
    assert "dit2 (256 x 8)" in text and (tmp_path / "scale.png").exists()


def test_rows_with_a_base_index_use_the_baselines_around_them():
    fr = _bench_module("frontier")
    base = {"e2e_s": [80.0, 80.0, 80.0, 80.0, 40.0, 44.0]}
    assert fr.speedup({"e2e_s": [21.0], "base_idx": 4}, base) == pytest.approx(2.0)  # (40 + 44) / 2 / 21
    assert fr.baseline_times({"base_idx": 5}, base) == [44.0]


def test_unet_scale_study_pairs_dato_with_deepcache_like(tmp_path):
    """The UNet pair: DaTo (token pruning on the same schedules) minus DeepCache-like, tokens = top attention level."""
    import json

    ss = _bench_module("scale_study")

    def row(curve, t, p, macs):
        return {"curve": curve, "label": "x", "ours": True, "e2e_s": [t], "psnr": [p], "macs_ratio": macs}

    def state(cache, dato, fc_cache, fc_dato):
        return {"baseline": {"e2e_s": [9.0]}, "settings": {"seeds": [0, 1, 2], "per_seed": 26, "threads": 2},
                "rows": {"a": row("DeepCache-like (reuse)", 3.0, cache, 0.33),
                         "b": row("DaTo (reuse)", 3.0, dato, 0.30),
                         "c": row("tokencache DeepCache-like + Taylor 1", 3.0, fc_cache, 0.33),
                         "d": row("tokencache DaTo + Taylor 1", 3.0, fc_dato, 0.30),
                         "e": row("DaTo pruning only", 9.0, 50.0, 1.0)}}

    (tmp_path / "frontier_unet.json").write_text(json.dumps(state(40.0, 35.0, 45.0, 41.0)))
    (tmp_path / "frontier_unet2.json").write_text(json.dumps(state(40.0, 42.0, 45.0, 46.5)))
    res = ss.study(("unet", "unet2"), tmp_path)
    t1, t2 = res["families"]["unet"], res["families"]["unet2"]
    assert (t1["tokens"], t2["tokens"]) == (256, 1024) and (t1["blocks"], t2["blocks"]) == (2, 3)
    assert res["groups"][:2] == ["DeepCache-like (reuse)", "DaTo (reuse)"]
    assert t1["speed"][3.0]["gap (reuse)"] == pytest.approx(-5.0)
    assert t2["speed"][3.0]["gap (reuse)"] == pytest.approx(2.0)
    assert t2["speed"][3.0]["gap (forecast)"] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="two transformer or two UNet families"):
        ss.study(("unet", "dit2"), tmp_path)
    text = ss.report(res, tmp_path, "scale_unet")
    assert "unet2 (1024 x 3)" in text and "gap = DaTo minus DeepCache-like" in text


def test_unet2_grid_is_the_scale_study_grid():
    fr = _bench_module("frontier")
    keys = {c.key for c in fr.unet_candidates("unet2", 50, False)}
    for k in ("DeepCache-like (reuse) | N=3", "DaTo (reuse) | N=3,r=0.4", "DaTo pruning only | r=0.4",
              "tokencache DaTo + Taylor 1 | N=3,r=0.4", "tomesd | r=0.5"):
        assert k in keys
    assert not any("searched" in k for k in keys)  # searched on the tier-1 UNet: not for tier 2
    tier1 = {c.key for c in fr.unet_candidates("unet", 50, False)}
    assert "DaTo (reuse) | N=3,r=0.4" in tier1 and any("searched" in k for k in tier1)
