"""The forecast fields every caching config shares: validation, YAML, memory, per-call and per-context state."""

from __future__ import annotations

import pytest
import torch

import tokencache as tc
from test_contract import TINY, _run

CACHING = [tc.DaToConfig, tc.DeepCacheConfig, tc.ToCaConfig, tc.DuCaConfig, tc.FORAConfig]


@pytest.mark.parametrize("cls", CACHING, ids=lambda c: c.method)
def test_fields_round_trip_and_bad_values_name_the_field(cls, tmp_path):
    cfg = cls.preset("balanced", forecast="taylor", forecast_order=2, cache_dtype="bfloat16")
    assert tc.load_config(cfg.save(tmp_path / "c.yaml")) == cfg
    # the presets of our methods forecast (measured better); the baselines' presets reuse, as published
    assert cls.preset("balanced").forecast == ("none" if cls.method in ("fora", "deepcache") else "taylor")
    assert cls(**{k: v for k, v in cls.PRESETS["balanced"].items() if k != "forecast"}).forecast == "none"
    bad = ((dict(forecast="cubic"), "forecast"), (dict(forecast=[]), "forecast"),
           (dict(forecast="taylor", forecast_order=4), "forecast_order"),
           (dict(forecast_order=-1), "forecast_order"), (dict(cache_dtype="int8"), "cache_dtype"))
    for kw, field in bad:
        with pytest.raises(ValueError, match=rf"{cls.__name__}\.{field}.*(allowed|must be)"):
            cls(**kw)


def _dit():
    make, inputs = TINY["DiTTransformer2DModel"]
    return make(), inputs


def test_forecast_memory_is_counted_and_freed_after_the_call():
    net, inputs = _dit()
    sizes = {}
    for name, kw in (("reuse", {}), ("taylor2", dict(forecast="taylor", forecast_order=2)),
                     ("bf16", dict(cache_dtype="bfloat16"))):
        tc.apply(net, tc.FORAConfig(interval=3, **kw), num_inference_steps=12, cfg=False)
        out = _run(net, inputs, 2, steps=12)
        sizes[name] = tc.summary(net).cache_bytes
        assert net._tokencache.contexts.cache_bytes() == 0  # freed after the last step
        assert all(not o.isnan().any() for o in out)
        tc.remove(net)
    assert sizes["taylor2"] == 3 * sizes["reuse"] > 0  # order + 1 tensors per slot (4 full steps of 12)
    assert sizes["bf16"] * 2 == sizes["reuse"]


def test_forecast_state_is_per_call_and_per_context():
    net, inputs = _dit()
    cfg = tc.FORAConfig(interval=3, forecast="taylor", forecast_order=1)
    tc.apply(net, cfg, num_inference_steps=6, cfg=False)
    first = _run(net, inputs, 1, contexts=["cond"])
    again = _run(net, inputs, 1, contexts=["cond"])  # a new call: nothing carried over
    both = _run(net, inputs, 1, contexts=["cond", "uncond"])
    tc.remove(net)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    for i in range(6):
        torch.testing.assert_close(both[2 * i], first[i], atol=1e-6, rtol=0)
    base = _run(net, inputs, 1, contexts=["cond"])
    assert not torch.equal(first[4], base[4])  # skipped steps were forecast, not computed


def test_forecast_coordinate_follows_the_scheduler():
    """timestep/sigma coordinates: equal to step on a uniform schedule, different on a non-uniform one."""
    from diffusers import DDIMScheduler, DiTPipeline, DPMSolverMultistepScheduler

    from test_dit import tiny_dit, tiny_vae

    def run(pipe, **kw):
        cfg = tc.FORAConfig(interval=3, forecast="taylor", **kw)
        tc.apply(pipe, cfg)
        try:
            out = pipe(class_labels=[1, 2], num_inference_steps=9, guidance_scale=1.0, output_type="np",
                       generator=torch.Generator().manual_seed(0)).images
            return out, pipe.transformer._tokencache.contexts.current.last_records
        finally:
            tc.remove(pipe)

    pipe = DiTPipeline(transformer=tiny_dit(), vae=tiny_vae(), scheduler=DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    step, _ = run(pipe)
    timestep, _ = run(pipe, forecast_coordinate="timestep")
    assert abs(step - timestep).max() < 2e-6  # DDIM timesteps are affine in the step index
    with pytest.raises(ValueError, match=r"forecast_coordinate='sigma' needs a pipeline scheduler with sigmas"):
        run(pipe, forecast_coordinate="sigma")  # DDIM has no sigmas: one-line error naming the field
    pipe.scheduler = DPMSolverMultistepScheduler(use_karras_sigmas=True)
    karras_step, _ = run(pipe)
    karras_sigma, _ = run(pipe, forecast_coordinate="sigma")
    assert abs(karras_step - karras_sigma).max() > 2e-5  # non-uniform: the forecasts differ
    assert torch.isfinite(torch.as_tensor(karras_sigma)).all()
    assert tc.load_config(tc.FORAConfig(forecast_coordinate="sigma").save(pytest.importorskip("tempfile").mktemp(
        suffix=".yaml"))).forecast_coordinate == "sigma"
    with pytest.raises(ValueError, match=r"FORAConfig\.forecast_coordinate.*allowed"):
        tc.FORAConfig(forecast_coordinate="time")
    with pytest.raises(ValueError, match=r"needs a pipeline"):
        tc.apply(tiny_dit(), tc.FORAConfig(forecast_coordinate="timestep"), num_inference_steps=4)


def test_fora_step_plan_places_the_full_steps():
    from tokencache.methods.fora import taylorseer_plan

    assert taylorseer_plan(3, 5, 20) == "FFFCFCCCCFCCCCFCCCCF"  # steps < 3, then (s - 4) % 5 == 0
    assert taylorseer_plan(1, 3, 8) == "FCFCCFCC"
    same = tc.FORAConfig(step_plan="FCC" * 4)
    assert same.plan(12) == tc.FORAConfig(interval=3).plan(12)
    kinds = [a.kind for a in tc.FORAConfig(step_plan="FFCCCFCCCC").plan(20)]
    assert kinds.count("full") == 6 and kinds[0] == "full"  # mapped by position, share of full steps (3 of 10) kept
    cfg = tc.FORAConfig(step_plan=taylorseer_plan(2, 3, 12), forecast="taylor")
    assert tc.load_config(cfg.save(tmp := __import__("tempfile").mkdtemp() + "/p.yaml")) == cfg and tmp
    for bad in ("", "CF", "FXC", ["F", "C"]):
        with pytest.raises(ValueError, match=r"FORAConfig\.step_plan=.* is invalid; allowed: None or a string"):
            tc.FORAConfig(step_plan=bad)
    net, inputs = _dit()
    outs = {}
    for name, c in (("interval", tc.FORAConfig(interval=3)), ("plan", same),
                    ("other", tc.FORAConfig(step_plan="FFCFFCFFCFFC"))):
        tc.apply(net, c, num_inference_steps=12, cfg=False)
        outs[name] = _run(net, inputs, 1, steps=12)
        counts = tc.summary(net).steps_by_kind
        tc.remove(net)
        outs[name + "_full"] = counts["full"]
    assert all(torch.equal(a, b) for a, b in zip(outs["interval"], outs["plan"]))
    assert outs["plan_full"] == 4 and outs["other_full"] == 8
