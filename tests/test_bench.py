"""Benchmark harness logic on tiny models (no timing assertions: speed targets live in benchmarks/)."""

import json

import pytest
import torch

import tokencache as tc
from conftest import tiny_unet
from tokencache import bench
from tokencache.stats import count_macs


def test_sd15_shape_macs_match_flop_counter_reference():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**bench.SD15_UNET)
    x = torch.empty(1, 4, 64, 64, device="meta")
    ctx = torch.empty(1, 77, 768, device="meta")
    macs = count_macs(unet, (x, torch.tensor(10, device="meta")), {"encoder_hidden_states": ctx})
    assert macs == pytest.approx(401.6e9, rel=0.01)  # published flop_counter figure at 512x512


def test_run_bench_rows_and_ratios(tmp_path):
    model = tiny_unet()
    configs = {"dato:fast": tc.DaToConfig.preset("fast"), "bad": tc.DaToConfig(patch_size=3, prune_ratio=0.5)}
    rows = bench.run_bench(model, configs, resolution=64, steps=6, repeats=2, warmup=1, progress=False)
    by = {r.name: r for r in rows}
    assert rows[0].name == "baseline" and by["baseline"].speedup == 1.0
    fast = by["dato:fast"]
    assert not fast.error and fast.loop_s > 0
    assert fast.speedup == pytest.approx(by["baseline"].loop_s / fast.loop_s)
    assert fast.speedup_per_mac_reduction == pytest.approx(fast.speedup * fast.macs_ratio)
    assert 0 < fast.macs_ratio < 1 and fast.macs_per_image == pytest.approx(
        by["baseline"].macs_per_image * fast.macs_ratio)
    assert fast.psnr_vs_baseline < float("inf")
    assert "patch_size=3" in by["bad"].error  # a failing config is an error row, not a silent skip
    assert not tc.is_applied(model)  # every run removed its hooks
    md = bench.to_markdown(rows)
    assert "| dato:fast |" in md and "error: ValueError" in md
    png = bench.plot(rows, tmp_path / "p.png")
    assert png.stat().st_size > 1000


def test_cli_json_schema(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "build_model", lambda name, dtype, device: (tiny_unet(), "unet"))
    out = tmp_path / "r.json"
    code = bench.run(bench_args(["--model", "sd15", "--resolution", "64", "--steps", "4", "--repeats", "1",
                                 "--warmup", "0", "--methods", "deepcache:fast", "--json", str(out),
                                 "--markdown", str(tmp_path / "r.md"), "--plot", str(tmp_path / "r.png")]))
    assert code == 0
    data = json.loads(out.read_text())
    assert [r["name"] for r in data["rows"]] == ["baseline", "deepcache:fast"]
    assert set(data["rows"][1]) >= {"loop_s", "speedup", "macs_ratio", "macs_per_image", "peak_mem_bytes",
                                    "cache_bytes", "psnr_vs_baseline", "speedup_per_mac_reduction", "error"}
    assert (tmp_path / "r.md").exists() and (tmp_path / "r.png").exists()


def test_unknown_model_and_method():
    with pytest.raises(ValueError, match="model='sd99'"):
        bench.build_model("sd99")
    with pytest.raises(ValueError, match="method='fastest'"):
        bench.parse_method("fastest:fast")


def bench_args(argv):
    import argparse

    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    return p.parse_args(argv)


def test_failing_or_unknown_peer_gives_an_error_row(monkeypatch):
    def broken(model, loop):
        raise ImportError("No module named 'cache_dit'")

    monkeypatch.setitem(bench.PEERS, "peer:broken", broken)
    model = tiny_unet()
    rows = bench.run_bench(model, {}, peers=["peer:broken", "peer:nope"], resolution=64, steps=3, repeats=1,
                           warmup=0, progress=False)
    by = {r.name: r for r in rows}
    assert by["peer:broken"].error == "ImportError: No module named 'cache_dit'"
    assert "unknown" in by["peer:nope"].error
    assert not by["baseline"].error and by["baseline"].loop_s > 0
