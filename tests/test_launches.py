"""The kernel-launch census (``tokencache.harness.launches``, ``benchmarks/launches.py``) and the budgets it pins.

On a fast GPU a small model is launch-bound in eager mode: a partial step that issues more kernels than it
saves MACs on is slower there. These tests count launches on the ``meta`` device at the published DiT-XL/2
and SD 1.5 shapes (exact, no compute) and fail if a change adds launches to the hot path beyond the budgets.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import tokencache as tc
from tokencache.harness import registry, shapes
from tokencache.harness.launches import LaunchCounter, census_with, step_kinds

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_counter_counts_launches_not_views_and_attention_once(device):
    q = torch.ones(1, 2, 8, 4, device=device)
    with LaunchCounter() as c:
        y = q.view(2, 8, 4).transpose(1, 2).reshape(-1)  # views (and a copy for the reshape)
        z = F.scaled_dot_product_attention(q, q, q)  # a matmul and a softmax on the CPU: one fused kernel on a GPU
        (z + 1).detach()
    assert dict(c.ops) == {"clone": 1, "scaled_dot_product_attention": 1, "add": 1}, dict(c.ops)
    assert y.shape == (64,)


def test_step_kinds_follow_the_plan_per_context():
    cfg = tc.DuCaConfig.preset("fast")
    plan = [a.kind for a in cfg.plan(STEPS)]
    assert step_kinds(cfg, STEPS, STEPS) == plan
    assert step_kinds(cfg, STEPS, 2 * STEPS) == [k for k in plan for _ in range(2)]  # cond / uncond calls
    assert step_kinds(None, STEPS, 3) == ["full"] * 3


def _meta_census(name: str, spec: str | None) -> tuple:
    model, family = shapes.build_model(name, dtype=torch.bfloat16, device="meta")
    loop = shapes.make_loop(model, family, shapes.MODELS[name][2], 1, STEPS, 4.0)
    c, summary = census_with(model, loop, None if spec is None else registry.parse_method(spec), STEPS, cfg=True)
    return c, (summary.macs_ratio if summary is not None else 1.0), model


@pytest.fixture(scope="module")
def dit_census():
    return {spec: _meta_census("dit-xl-2", spec) for spec in (None, "fora:fast", "toca:fast", "duca:fast")}


def test_dit_xl2_partial_steps_stay_within_their_launch_budget(dit_census):
    """DiT-XL/2 (28 blocks), bf16: what one call of each step kind launches, against budgets.

    A ToCa partial block may launch at most 36 kernels more than a FORA-like one (whose blocks reuse every
    module): 33 now (choosing the tokens 11, forecasting the cached modules 7, gathering, computing and
    writing back the chosen rows 6, the per-row Taylor update 10, less the norm FORA-like stubs). It was 62
    before the spatial bonus, the CFG-shared score and the per-row forecast bookkeeping were cut down. A
    computed step may add 16 per block (15 now: the V-norm score 7, the two modules' Taylor updates).
    """
    base, fora, toca, duca = (dit_census[s][0] for s in (None, "fora:fast", "toca:fast", "duca:fast"))
    blocks = 28

    def calls(c, kind):
        return [n for k, n in zip(c.kinds, c.per_call) if k == kind]

    uncached = base.per_call[0]
    assert set(base.per_call) == {uncached}  # every uncached call launches the same kernels
    assert set(calls(fora, "full")) == {uncached}  # whole-step reuse adds nothing to a computed step
    fora_partial = max(calls(fora, "partial"))
    assert fora_partial < 0.75 * uncached
    assert max(calls(toca, "partial")[1:]) - fora_partial <= 36 * blocks, toca.per_call  # after the first
    assert max(calls(toca, "full")) - uncached <= 16 * blocks, toca.per_call
    assert max(calls(duca, "aggressive")) < 0.05 * uncached  # every block passed through
    assert max(calls(duca, "partial")) <= max(calls(toca, "partial"))


def test_dit_xl2_census_counts_every_call_and_the_loop(dit_census):
    base, _, _ = dit_census[None]
    c, macs, _ = dit_census["toca:fast"]
    assert len(c.per_call) == STEPS and c.kinds == [a.kind for a in tc.ToCaConfig.preset("fast").plan(STEPS)]
    assert c.loop == base.loop > 0  # the sampler's launches do not depend on the method
    assert c.total == c.denoiser + c.loop and 0.2 < macs < 0.6


def test_sd15_census_runs_dato_on_meta_and_its_partial_steps_are_cheap():
    """DaTo's random base selection draws on the device: on ``meta`` it draws nothing instead of failing."""
    base, _, _ = _meta_census("sd15", None)
    dato, macs, _ = _meta_census("sd15", "dato:fast")
    deep, _, _ = _meta_census("sd15", "deepcache:fast")
    uncached = base.by_kind()["full"][1]
    assert dato.by_kind()["partial"][1] < 0.2 * uncached
    assert deep.by_kind()["partial"][1] < 0.1 * uncached
    assert dato.by_kind()["full"][1] < 1.25 * uncached  # pruning's own launches on a full step
    assert macs < 0.3


def test_launches_script_writes_its_table_and_json(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import launches
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert launches.main(["--shapes", "dit-xl-2", "--methods", "fora:fast,dato:fast", "--steps", "3",
                          "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "launches.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["none", "fora:fast"]  # dato does not apply to a transformer
    assert rows[0]["launch_bound"] == 1.0 and rows[1]["launch_bound"] > 1.0 and rows[1]["macs_ratio"] < 1.0
    md = (tmp_path / "launches.md").read_text()
    assert "| dit-xl-2 | 3 | fora:fast |" in md
    with pytest.raises(SystemExit):
        launches.main(["--shapes", "dit-xl-3", "--out", str(tmp_path)])
