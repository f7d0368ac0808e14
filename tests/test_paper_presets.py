"""The authors' published recipes as named presets: their schedules, exactly, and they run."""

from __future__ import annotations

import pytest
import torch

import tokencache as tc
from test_contract import TINY, _run
from tokencache.harness.registry import parse_method
from tokencache.methods.dato import AUTHORS_STRATEGY
from tokencache.methods.token_cache import authors_plan


def _kinds(plan):
    return "".join(a.kind[0].upper() for a in plan)


def test_authors_dit_schedule_follows_their_force_scheduler():
    """s counts down from 49; the interval is round(3 / (1.4 - 0.8 s/50)), 2 for s in [10, 20)."""
    plan = tc.ToCaConfig.preset("paper-dit").plan(50)
    kinds = _kinds(plan)
    # s=49 full (interval 5); s=45 sets interval 4 but 45 % 4 != 0, so partial; s=44 full, then every 4
    assert kinds[:14] == "FPPPPFPPPFPPPF"
    for i in range(30, 40):  # s = 19 .. 10: interval 2, full at even s
        s = 49 - i
        assert kinds[i] == ("F" if s % 2 == 0 else "P")
    for i, a in enumerate(plan):  # partial steps: R * (3 - 4 s/T), negative (no tokens) early
        if a.kind == "partial":
            assert a.ratio == pytest.approx(0.07 * (3 - 4 * (49 - i) / 50))
    assert sum(a.ratio <= 0 for a in plan if a.kind == "partial") == 9  # s = 38 .. 49, not full


def test_authors_duca_dit_alternates_conservative_and_aggressive_by_residue():
    plan = tc.DuCaConfig.preset("paper-dit").plan(50)
    toca = tc.ToCaConfig.preset("paper-dit").plan(50)
    assert [a.kind == "full" for a in plan] == [a.kind == "full" for a in toca]  # the same full steps
    assert _kinds(plan)[:6] == "FPAPPF"  # s=48: 48 % 5 = 3 (C), 47: 2 (A), 46: 1 (C), 45: 45 % 4 = 1 (C)
    assert all(a.ratio == 0.0 for a in plan if a.kind == "aggressive")


def test_authors_pixart_schedule_counts_up():
    plan = authors_plan("authors-pixart", 3, 0.3, 20, dual=False)
    assert _kinds(plan) == "FPPPPPFPPFPPFPPFPPFP"  # interval round(3 / (0.8 + 0.4 s/20)): 4 at s=0 ... 3 later
    assert plan[1].ratio == pytest.approx(0.3 * (1.9 - 1.8 * 1 / 20))
    assert tc.ToCaConfig.preset("paper-pixart").plan(20) == plan


def test_dato_paper_sd15_is_the_authors_strategy_on_50_calls():
    cfg = tc.DaToConfig.preset("paper-sd15")
    code = {12: "full", 1: 1, 0: "reuse"}
    assert cfg.cache_plan == ["full", *(code[v] for v in AUTHORS_STRATEGY[:49])]
    assert [i for i, v in enumerate(AUTHORS_STRATEGY) if v == 12] == [13, 23, 35, 45]
    kinds = [a.kind for a in cfg.plan(50)]
    assert (kinds.count("full"), kinds.count("partial"), kinds.count("reuse")) == (5, 20, 25)
    assert cfg.random_sign and cfg.recovery == "kept" and cfg.prune_ratio == 0.4


@pytest.mark.parametrize(
    ("family", "method", "name"),
    [("DiTTransformer2DModel", "toca", "paper-dit"), ("DiTTransformer2DModel", "duca", "paper-dit"),
     ("PixArtTransformer2DModel", "toca", "paper-pixart"), ("UNet2DConditionModel", "dato", "paper-sd15")],
)
def test_paper_presets_run_and_count_their_plan(family, method, name):
    make, inputs = TINY[family]
    model = make()
    cfg = parse_method(f"{method}:{name}")
    steps = 20 if "pixart" in name else 50
    tc.apply(model, cfg, num_inference_steps=steps, cfg=False)
    try:
        outs = _run(model, inputs, 2, steps=steps)
        s = tc.summary(model)
    finally:
        tc.remove(model)
    assert all(torch.isfinite(o).all() for o in outs)
    kinds = [a.kind for a in cfg.plan(steps)]
    assert s.steps_total == steps and s.steps_full == kinds.count("full")
    assert s.macs_ratio < 1.0


def test_schedule_field_round_trips_and_bad_values_are_named(tmp_path):
    cfg = tc.DuCaConfig.preset("paper-dit")
    assert tc.load_config(cfg.save(tmp_path / "d.yaml")) == cfg
    with pytest.raises(ValueError, match=r"ToCaConfig\.schedule.*authors-dit"):
        tc.ToCaConfig(schedule="paper")
    with pytest.raises(ValueError, match=r"allowed: .*paper-dit"):
        tc.ToCaConfig.preset("papers")
    with pytest.raises(ValueError, match=r"paper-sd15"):
        parse_method("dato:paper")
