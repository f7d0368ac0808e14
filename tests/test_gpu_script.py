"""The GPU benchmark script (benchmarks/gpu/run.py) end to end on tiny shapes, on the CPU, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu" / "run.py"


def _run(out: Path, *extra: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--device", "cpu", "--tiny", *extra],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    proc = _run(out, "--shapes", "sd15,sdxl,dit-xl-2,pixart-alpha-1024,flux-dev")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


def test_outputs_exist(tiny_run):
    out, data = tiny_run
    assert (out / "results.md").read_text().startswith("# GPU benchmark")
    png = (out / "speed.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert data["env"]["tiny"] and data["env"]["dtype"] == "bfloat16" and data["env"]["device"] == "cpu"


def test_expected_rows(tiny_run):
    _, data = tiny_run
    rows = {(r["shape"], r["compile"], r["name"]): r for r in data["rows"]}
    import tokencache  # noqa: F401  (CONFIG_CLASSES is filled on import)
    from tokencache.config import CONFIG_CLASSES

    unet = [m for m, c in CONFIG_CLASSES.items() if "unet" in c.structures]
    dit = [m for m, c in CONFIG_CLASSES.items() if "transformer" in c.structures]
    expected = {
        "sd15-tiny": (unet, ["peer:deepcache", "peer:tomesd", "peer:pab"]),
        "sdxl-tiny": (unet, ["peer:deepcache", "peer:tomesd", "peer:pab"]),
        "dit-xl-2-tiny": (dit, ["peer:first-block-cache", "peer:taylorseer", "peer:magcache", "peer:cache-dit"]),
        "pixart-alpha-1024-tiny": (dit, ["peer:first-block-cache", "peer:pab", "peer:faster-cache"]),
        # guidance-distilled: one call per step, packed latents unpacked for the 16-channel-style VAE decode
        "flux-dev-tiny": (dit, ["peer:first-block-cache", "peer:pab", "peer:taylorseer", "peer:magcache",
                                "peer:faster-cache", "peer:cache-dit"]),
    }
    for shape, (methods, peers) in expected.items():
        base = rows[(shape, "eager", "baseline")]
        assert not base["error"] and not base["skipped"], base
        assert base["speedup"] == pytest.approx(1.0) and base["macs_ratio"] == 1.0
        for m in methods:
            r = rows[(shape, "eager", f"{m}:balanced")]
            assert not r["error"] and not r["skipped"], r
            assert 0 < r["macs_ratio"] <= 1.0 and r["loop_s"] > 0 and r["e2e_s"] >= r["loop_s"]
            assert r["speedup_per_mac_reduction"] == pytest.approx(r["speedup"] * r["macs_ratio"])
            assert r["macs_per_image"] > 0 and r["cache_bytes"] is not None
        for p in peers:
            r = rows[(shape, "eager", p)]
            assert not r["error"], r
    # caches are freed after each call and on remove (live tensors walked on the first row per method)
    probed = [r for r in data["rows"] if r["kind"] == "method" and r["retained_after_remove_bytes"] is not None]
    assert len(probed) >= 12
    for r in probed:
        assert r["retained_after_call_bytes"] <= 0 and r["retained_after_remove_bytes"] <= 0, r
    # compiled modes (tiny default: the DiT baseline, whole and regional)
    for mode in ("whole", "regional"):
        r = rows[("dit-xl-2-tiny", mode, "baseline")]
        assert not r["error"] and r["loop_s"] > 0 and r["speedup_vs_eager_baseline"] > 0, r
    shapes = {s["name"]: s for s in data["env"]["shapes"]}
    assert shapes["flux-dev-tiny"]["sampler"].startswith("flow-matching Euler")


def test_time_guard_skips_rows(tmp_path):
    proc = _run(tmp_path, "--shapes", "dit-xl-2", "--peers", "none", "--compile", "eager", "--budget-s", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert rows and all(r["skipped"].startswith("skipped: time budget") for r in rows)
    assert "skipped: time budget" in (tmp_path / "results.md").read_text()


def test_flux_latents_reach_the_vae_as_the_pipeline_unpacks_them():
    """The FLUX row decodes what FluxPipeline would: its unpacking, then ``/ scaling + shift``."""
    import importlib.util

    import torch
    from diffusers import FluxPipeline

    spec = importlib.util.spec_from_file_location("gpu_run", SCRIPT)
    run = importlib.util.module_from_spec(spec)
    sys.modules["gpu_run"] = run  # its dataclasses look their module up
    try:
        spec.loader.exec_module(run)
    finally:
        del sys.modules["gpu_run"]
    packed = torch.randn(2, 16, 4 * 5)  # 4x4 packed positions of 5 latent channels -> 8x8 latents
    ours = run.unpack_latents(packed, 5)
    theirs = FluxPipeline._unpack_latents(packed, 64, 64, 8)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert torch.equal(FluxPipeline._pack_latents(ours, 2, 5, 8, 8), packed)

    class Vae:
        dtype = torch.float32
        config = type("C", (), {"latent_channels": 5, "scaling_factor": 0.5, "shift_factor": 0.25})()

    torch.testing.assert_close(run.vae_input(packed, Vae()), theirs / 0.5 + 0.25)
    Vae.config.shift_factor = None  # SD's VAE: no shift, 4-D latents untouched but scaled
    torch.testing.assert_close(run.vae_input(theirs, Vae()), theirs / 0.5)
    # PAB's and FasterCache's timestep ranges are in scheduler units; FLUX takes t / 1000
    from mmdit_tiny import tiny_flux

    current = {"t": 0.0}
    run._timestep_reader(current, tiny_flux())(None, (), {"timestep": torch.tensor([0.75])})
    assert current["t"] == pytest.approx(750.0)


def test_the_launch_census_goes_beside_the_eager_rows(tmp_path):
    """The committed census names the GPU run's shapes and presets; its bounds land on the eager rows only."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_run", SCRIPT)
    run = importlib.util.module_from_spec(spec)
    sys.modules["gpu_run"] = run
    try:
        spec.loader.exec_module(run)
    finally:
        del sys.modules["gpu_run"]
    bounds = run.load_census(str(ROOT / "benchmarks" / "results" / "launches" / "launches.json"))
    for shape in ("sd15", "sdxl", "dit-xl-2", "pixart-alpha-1024", "flux-dev"):
        assert bounds[(shape, "baseline")] == (1.0, 1.0)
        for spec_ in run.method_specs(run.shapes_for(False)[shape].family, None):
            assert (shape, spec_) in bounds, (shape, spec_)
    assert run.load_census("none") == {} and run.load_census(str(tmp_path / "missing.json")) == {}
    rows = [run.Row("dit-xl-2", "eager", "toca:fast", "method", loop_s=1.0, e2e_s=1.0),
            run.Row("dit-xl-2", "whole", "toca:fast", "method", loop_s=1.0, e2e_s=1.0)]
    run.attach_census(rows, bounds)
    assert rows[0].census_launch_bound == bounds[("dit-xl-2", "toca:fast")][0] and rows[1].census_launch_bound is None
    env = {"device_name": "x", "torch": "t", "diffusers": "d", "dtype": "bfloat16", "warmup": 1, "repeats": 3,
           "date": "now", "elapsed_s": 1.0, "budget_s": 2.0, "shapes": []}
    md = run.to_markdown(rows, env)
    launch, compute = bounds[("dit-xl-2", "toca:fast")]
    assert f"{launch:.2f}x / {compute:.2f}x" in md
