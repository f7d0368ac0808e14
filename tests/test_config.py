"""Configs: presets, validation messages, (de)serialisation, plan mapping."""

import json

import pytest

import tokencache as tc
from tokencache.core.schedule import StepAction, count_kinds, resample, resample_plan


@pytest.mark.parametrize("cls", [tc.DaToConfig, tc.DeepCacheConfig, tc.ToMeConfig])
@pytest.mark.parametrize("preset", ["quality", "balanced", "fast"])
def test_presets_round_trip_yaml_and_json(cls, preset, tmp_path):
    cfg = cls.preset(preset)
    assert cls.from_dict(cfg.to_dict()) == cfg
    for ext in ("yaml", "json"):
        path = cfg.save(tmp_path / f"c.{ext}")
        assert cls.load(path) == cfg
        assert tc.load_config(path) == cfg


def test_unknown_preset_names_value_and_choices():
    with pytest.raises(ValueError, match=r"name='turbo'.*\['balanced', 'fast', 'paper-sd15', 'quality'\]"):
        tc.DaToConfig.preset("turbo")


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"prune_ratio": 0.75}, "prune_ratio"),
        ({"prune_ratio": -0.1}, "prune_ratio"),
        ({"prune_ratio": [0.3, 0.9]}, "prune_ratio"),
        ({"patch_size": 0}, "patch_size"),
        ({"cache_plan": []}, "cache_plan"),
        ({"cache_plan": ["full", "half"]}, r"cache_plan\[1\]"),
        ({"cache_plan": ["full", 0]}, r"cache_plan\[1\]"),
        ({"cache_plan": ["reuse", "full"]}, r"cache_plan\[0\]"),
        ({"recovery": "nearest"}, "recovery"),
        ({"base_selection": "entropy"}, "base_selection"),
        ({"prune_levels": [-1]}, "prune_levels"),
        ({"align_cfg": "yes"}, "align_cfg"),
    ],
)
def test_dato_validation_names_field_and_value(kwargs, field):
    with pytest.raises(ValueError, match=f"DaToConfig.{field}=.*allowed"):
        tc.DaToConfig(**kwargs)


def test_ratio_bound_depends_on_patch_size():
    tc.DaToConfig(prune_ratio=0.85, patch_size=3)  # 1 - 1/9 = 0.889
    with pytest.raises(ValueError, match="0.75"):
        tc.DaToConfig(prune_ratio=0.8, patch_size=2)


def test_baseline_validation():
    with pytest.raises(ValueError, match="DeepCacheConfig.interval=0"):
        tc.DeepCacheConfig(interval=0)
    with pytest.raises(ValueError, match="ToMeConfig.ratio=0.8"):
        tc.ToMeConfig(ratio=0.8)


def test_from_dict_rejects_unknown_field_and_wrong_method(tmp_path):
    with pytest.raises(ValueError, match="no field"):
        tc.DaToConfig.from_dict({"method": "dato", "speed": 3})
    with pytest.raises(ValueError, match="does not match"):
        tc.DaToConfig.from_dict({"method": "tome"})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"method": "nope"}))
    with pytest.raises(ValueError, match="method='nope'"):
        tc.load_config(bad)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        tc.load_config(tmp_path / "missing.yaml")


def test_resample_relative_position():
    assert resample(["full", "reuse"], 4) == ["full", "full", "reuse", "reuse"]
    assert resample([1, 2, 3, 4], 2) == [1, 3]


def test_resample_plan_keeps_share_of_full_steps_without_aliasing():
    plan = ["full" if i % 5 == 0 else 3 for i in range(50)]
    for n in (10, 20, 25, 50, 100):
        out = resample_plan(plan, n)
        assert out[0] == "full"
        assert out.count("full") == round(10 * n / 50)
    assert resample_plan(plan, 50) == plan


def test_plans_map_to_any_step_count():
    cfg = tc.DaToConfig.preset("fast")
    for n in (7, 20, 50, 83):
        plan = cfg.plan(n)
        assert len(plan) == n and plan[0].kind == "full"
    counts = count_kinds(cfg.plan(50))
    assert counts == {"full": 5, "partial": 23, "reuse": 22, "aggressive": 0}


def test_per_step_ratios_and_deepcache_plan():
    cfg = tc.DaToConfig(cache_plan=["full", 2, "reuse", 1], prune_ratio=[0.0, 0.3, 0.5, 0.7])
    assert cfg.plan(4) == [
        StepAction("full", None, 0.0), StepAction("partial", 2, 0.3), StepAction("reuse", None, 0.0),
        StepAction("partial", 1, 0.7),
    ]
    dc = tc.DeepCacheConfig(interval=3, branch=1).plan(6)
    assert [a.kind for a in dc] == ["full", "partial", "partial"] * 2 and dc[1].depth == 2
