"""Benchmark harness logic on tiny models (no timing assertions: speed targets live in benchmarks/)."""

import json

import pytest
import torch

import tokencache as tc
from conftest import tiny_unet, tiny_vae
from tokencache.core.accounting import count_macs
from tokencache.harness import bench, shapes


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
    monkeypatch.setattr(shapes, "build_model", lambda name, dtype, device: (tiny_unet(), "unet"))
    monkeypatch.setattr(shapes, "build_vae", lambda dtype, device: tiny_vae())
    out = tmp_path / "r.json"
    code = bench.run(bench_args(["--model", "sd15", "--resolution", "64", "--steps", "4", "--repeats", "1",
                                 "--warmup", "0", "--methods", "deepcache:fast", "--json", str(out),
                                 "--markdown", str(tmp_path / "r.md"), "--plot", str(tmp_path / "r.png")]))
    assert code == 0
    data = json.loads(out.read_text())
    assert [r["name"] for r in data["rows"]] == ["baseline", "deepcache:fast"]
    assert set(data["rows"][1]) >= {"loop_s", "speedup", "macs_ratio", "macs_per_image", "peak_mem_bytes",
                                    "cache_bytes", "psnr_vs_baseline", "speedup_per_mac_reduction", "error",
                                    "e2e_s", "e2e_speedup", "nearest_peer", "faster_than_nearest_peer"}
    assert data["mode"] == "shapes" and data["rows"][1]["faster_than_nearest_peer"] is None  # random weights
    assert (tmp_path / "r.md").exists() and (tmp_path / "r.png").exists()


def test_cli_config_files_and_default_methods(tmp_path, monkeypatch):
    monkeypatch.setattr(shapes, "build_model", lambda name, dtype, device: (tiny_unet(), "unet"))
    monkeypatch.setattr(shapes, "build_vae", lambda dtype, device: tiny_vae())
    cfg = tc.DeepCacheConfig(interval=2).save(tmp_path / "my_strategy.yaml")
    out = tmp_path / "r.json"
    common = ["--model", "sd15", "--resolution", "64", "--steps", "3", "--repeats", "1", "--warmup", "0"]
    assert bench.run(bench_args([*common, "--methods", str(cfg), "--json", str(out)])) == 0
    assert [r["name"] for r in json.loads(out.read_text())["rows"]] == ["baseline", "my_strategy"]  # file stem
    with pytest.raises(ValueError, match="names a config twice"):
        bench.run(bench_args([*common, "--methods", f"{cfg},{cfg}"]))
    assert bench.run(bench_args([*common, "--json", str(out)])) == 0  # no --methods: the UNet presets
    names = [r["name"] for r in json.loads(out.read_text())["rows"]]
    assert names == ["baseline", *bench.default_methods("unet")]


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
    def broken(target):
        raise ImportError("No module named 'cache_dit'")

    monkeypatch.setitem(bench.PEERS, "peer:broken", broken)
    model = tiny_unet()
    rows = bench.run_bench(model, {}, peers=["peer:broken", "peer:nope"], resolution=64, steps=3, repeats=1,
                           warmup=0, progress=False)
    by = {r.name: r for r in rows}
    assert by["peer:broken"].error == "ImportError: No module named 'cache_dit'"
    assert "unknown" in by["peer:nope"].error
    assert not by["baseline"].error and by["baseline"].loop_s > 0


def test_a_peer_that_changes_the_output_shape_gets_an_error_row():
    from types import SimpleNamespace

    from tokencache.harness.bench.runner import Row, _fill_rows

    rows = {"baseline": Row(name="baseline"), "peer:x": Row(name="peer:x")}
    times = {"baseline": [2.0], "peer:x": [1.0]}
    outs = {"baseline": torch.zeros(1, 4, 8, 8), "peer:x": torch.zeros(2, 4, 8, 8)}  # e.g. CFG rows not recombined
    _fill_rows(rows, times, times, outs, SimpleNamespace(data_range=None, images=1, score=None), 1.0,
               torch.device("cpu"))
    assert rows["peer:x"].error == "its output has shape (2, 4, 8, 8), the uncached one (1, 4, 8, 8): it broke the call"
    assert not rows["baseline"].error and rows["baseline"].loop_s == 2.0


def test_shapes_end_to_end_adds_the_vae_decode_of_the_final_latents(monkeypatch):
    vae = tiny_vae()
    decoded = []
    decode = vae.decode
    monkeypatch.setattr(vae, "decode", lambda z, *a, **k: decoded.append(z.shape) or decode(z, *a, **k))
    monkeypatch.setattr(shapes, "build_model", lambda name, dtype, device: (tiny_unet(), "unet"))
    monkeypatch.setattr(shapes, "build_vae", lambda dtype, device: vae)
    args = bench_args(["--model", "sd15", "--resolution", "64", "--steps", "3"])
    work, mode, _ = bench._workload(args, torch.float32)
    assert mode == "shapes"
    rows = bench.run_workload(work, {"dato:fast": tc.DaToConfig.preset("fast")}, repeats=1, warmup=0,
                              progress=False)
    assert decoded == [(1, 4, 8, 8)] * 2  # once per timed run (baseline, dato:fast), in the same run
    base, fast = rows
    for r in rows:
        assert not r.error and r.e2e_s > r.loop_s > 0
    assert fast.e2e_speedup == pytest.approx(base.e2e_s / fast.e2e_s)
    assert fast.speedup == pytest.approx(base.loop_s / fast.loop_s)


def test_sd_vae_shape():
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        vae = AutoencoderKL(**bench.SD_VAE)
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863  # Stable Diffusion's published VAE
    assert len(vae.decoder.up_blocks) == 4 and vae.config.latent_channels == 4


def _check_reference_rows(rows, methods):
    by = {r.name: r for r in rows}
    base = by["baseline"]
    assert not base.error and base.psnr_vs_baseline == float("inf") and 0 <= base.accuracy <= 1
    for r in rows:
        assert not r.error, r.error
        assert r.e2e_s >= r.loop_s > 0
        assert r.e2e_speedup == pytest.approx(base.e2e_s / r.e2e_s)
        assert r.speedup == pytest.approx(base.loop_s / r.loop_s)
    for name in methods:
        assert 0 < by[name].psnr_vs_baseline < float("inf") and 0 < by[name].macs_ratio < 1
    return by


def test_reference_unet_end_to_end_psnr_and_accuracy():
    work = bench.reference_workload("unet", steps=3, batch=2)
    rows = bench.run_workload(work, {"dato:fast": tc.DaToConfig.preset("fast")}, peers=["peer:deepcache"],
                              repeats=1, warmup=0, progress=False)
    by = _check_reference_rows(rows, ["dato:fast"])
    assert by["peer:deepcache"].psnr_vs_baseline < float("inf")  # the pip DeepCache ran on the zoo UNet
    assert not tc.is_applied(work.pipe)


def test_reference_dit_with_diffusers_hook_peers_leaves_the_model_clean():
    work = bench.reference_workload("dit", steps=3, batch=2)
    first = work.generate()
    rows = bench.run_workload(work, {"toca:fast": tc.ToCaConfig.preset("fast")},
                              peers=["peer:pab", "peer:first-block-cache"], repeats=1, warmup=0, progress=False)
    by = _check_reference_rows(rows, ["toca:fast"])
    assert by["peer:pab"].psnr_vs_baseline < float("inf")  # PAB reused attention at t=334 (in 100..800)
    assert by["toca:fast"].nearest_peer == "" and by["toca:fast"].faster_than_nearest_peer is None  # not asked
    den = work.denoiser
    assert not any(getattr(m, "_diffusers_hook", None) and m._diffusers_hook.hooks for m in den.modules())
    assert not den._forward_pre_hooks and not den._forward_hooks  # the harness's own hooks are gone too
    assert torch.equal(work.generate(), first)  # a baseline run after the peers equals the first one


def test_snapshot_restores_what_a_peer_leaves_behind():
    from tokencache.harness.peers import snapshot

    model = tiny_unet()
    block = model.down_blocks[0]
    restore = snapshot(model)
    block.forward = lambda *a, **k: None
    block._norm1_emb = torch.nn.Linear(2, 2)
    model.flag = True
    assert sorted(restore()) == ["UNet2DConditionModel", "down_blocks.0"]
    assert "forward" not in vars(block) and "_norm1_emb" not in block._modules and not hasattr(model, "flag")
    assert restore() == []


def _row(name, psnr, e2e, error=""):
    return bench.Row(name, psnr_vs_baseline=psnr, e2e_s=e2e, error=error)


def test_nearest_peer_by_psnr():
    inf = float("inf")
    rows = [
        _row("baseline", inf, 1.0),
        _row("toca:fast", 30.0, 0.5),
        _row("duca:fast", 20.0, 0.9),
        _row("fora:lossless", inf, 0.95),
        _row("dato:broken", 0.0, 0.0, error="ValueError: x"),
        _row("peer:a", 31.0, 0.6),
        _row("peer:b", 22.0, 0.8),
        _row("peer:b-slow", 18.0, 2.0),  # as near to duca:fast as peer:b: the faster peer is taken
        _row("peer:c", inf, 0.7),
        _row("peer:failed", 20.0, 0.1, error="ImportError: no"),
    ]
    by = {r.name: r for r in bench.nearest_peers(rows)}
    assert (by["toca:fast"].nearest_peer, by["toca:fast"].nearest_peer_psnr) == ("peer:a", 31.0)
    assert by["toca:fast"].faster_than_nearest_peer is True and by["toca:fast"].nearest_peer_e2e_s == 0.6
    assert (by["duca:fast"].nearest_peer, by["duca:fast"].faster_than_nearest_peer) == ("peer:b", False)
    assert (by["fora:lossless"].nearest_peer, by["fora:lossless"].faster_than_nearest_peer) == ("peer:c", False)
    for name in ("baseline", "dato:broken", "peer:a"):
        assert by[name].nearest_peer == "" and by[name].faster_than_nearest_peer is None


def test_nearest_peer_none_without_comparable_peer():
    inf = float("inf")
    only_failed = bench.nearest_peers([_row("toca:fast", 30.0, 0.5), _row("peer:x", 30.0, 1.0, error="E: e")])
    assert only_failed[0].faster_than_nearest_peer is None and only_failed[0].nearest_peer == ""
    only_lossless = bench.nearest_peers([_row("toca:fast", 30.0, 0.5), _row("peer:x", inf, 1.0)])
    assert only_lossless[0].faster_than_nearest_peer is None
    md = bench.to_markdown(bench.nearest_peers([_row("toca:fast", 30.0, 0.5), _row("peer:x", 29.0, 1.0)]))
    assert "| peer:x (29.0 dB) | yes (2.00x) |" in md  # the margin: peer time / ours


def test_checkpoint_mode_times_the_whole_pipeline(saved_pipe, tmp_path):
    out = tmp_path / "c.json"
    code = bench.run(bench_args(["--model", str(saved_pipe), "--steps", "3", "--repeats", "1", "--warmup", "0",
                                 "--methods", "dato:fast", "--peers", "peer:deepcache", "--json", str(out)]))
    assert code == 0
    data = json.loads(out.read_text())
    assert data["mode"] == "checkpoint"
    base, fast, peer = data["rows"]
    for r in (base, fast, peer):
        assert not r["error"] and r["e2e_s"] >= r["loop_s"] > 0
    assert fast["psnr_vs_baseline"] < float("inf") and base["psnr_vs_baseline"] == float("inf")
    assert peer["psnr_vs_baseline"] < float("inf")  # DeepCache reused the deep features at steps 2 and 3
    assert fast["nearest_peer"] == "peer:deepcache"  # the only peer, so the nearest
    assert fast["faster_than_nearest_peer"] == (fast["e2e_s"] <= peer["e2e_s"])


def test_invalid_arguments_name_the_field():
    with pytest.raises(ValueError, match="--steps=0 is invalid; allowed: an integer >= 1"):
        bench.run(bench_args(["--reference", "dit", "--steps", "0"]))
    with pytest.raises(ValueError, match="--resolution=64 is not allowed with --reference"):
        bench.run(bench_args(["--reference", "dit", "--resolution", "64"]))


@pytest.mark.parametrize("name, res, gmacs", [("dit-xl-2", 256, 118.6), ("dit-xl-2-512", 512, 524.6)])
def test_dit_xl2_macs_match_the_published_gflops(name, res, gmacs):
    from diffusers import DiTTransformer2DModel

    with torch.device("meta"):
        dit = DiTTransformer2DModel(**bench.MODELS[name][1])
    x = torch.empty(1, 4, res // 8, res // 8, device="meta")
    kw = {"timestep": torch.zeros(1, dtype=torch.long, device="meta"),
          "class_labels": torch.zeros(1, dtype=torch.long, device="meta")}
    assert count_macs(dit, (x,), kw) == pytest.approx(gmacs * 1e9, rel=0.01)  # DiT paper, Table 4


def test_pixart_1024_and_latte_shapes_run_in_the_bare_loop(monkeypatch):
    from diffusers import LatteTransformer3DModel, PixArtTransformer2DModel

    # tiny stand-ins with the published shapes' structure: PixArt at sample size 128 conditions on resolution
    with torch.device("meta"):
        big = PixArtTransformer2DModel(**bench.MODELS["pixart-alpha-1024"][1])
    assert big.use_additional_conditions
    torch.manual_seed(0)
    pixart = PixArtTransformer2DModel(num_attention_heads=3, attention_head_dim=8, in_channels=4, out_channels=8,
                                      num_layers=2, sample_size=128, patch_size=16, cross_attention_dim=24,
                                      caption_channels=24, norm_type="ada_norm_single", num_embeds_ada_norm=1000,
                                      use_additional_conditions=True).eval()
    latte = LatteTransformer3DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                    num_layers=2, sample_size=8, patch_size=2, cross_attention_dim=16,
                                    caption_channels=24, video_length=3).eval()
    assert bench.model_family(latte) == "latte"
    for model, res in ((pixart, 1024), (latte, 64)):
        work = bench.bare_workload(model, resolution=res, steps=3, guidance=4.5, vae=tiny_vae())
        rows = bench.run_workload(work, {"toca": tc.ToCaConfig(interval=2, fresh_ratio=0.5)}, repeats=1, warmup=0,
                                  progress=False)
        assert [r.error for r in rows] == ["", ""], rows
        assert 0 < rows[1].macs_ratio < 1 and rows[1].psnr_vs_baseline < float("inf")


def test_magcache_calibration_runs_without_autograd():
    # under autograd a whole generation's activations stay alive: DiT-XL/2 at 50 steps ran out of 24 GiB
    from diffusers import DiTTransformer2DModel

    from tokencache.harness import peers

    torch.manual_seed(0)
    dit = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=1000).eval()
    work = bench.bare_workload(dit, resolution=64, steps=3, guidance=1.5)
    grad_modes = []

    def generate():
        grad_modes.append(torch.is_grad_enabled())
        return work.generate()

    ratios = peers.calibrate_mag_ratios(peers.PeerTarget(dit, steps=3, generate=generate))
    assert grad_modes == [False] and len(ratios) == 3 and ratios[0] == 1.0
    assert not any(getattr(m, "_diffusers_hook", None) and m._diffusers_hook.hooks for m in dit.modules())


def test_stateful_peers_keep_the_pipelines_per_branch_contexts():
    """Wan calls each CFG branch in its own ``cache_context``: TaylorSeer's and MagCache's states stay per
    branch (the harness's context hook used to rename every call ``"cond"``, so both branches shared one
    Taylor history); a pipeline that sets no context (batched CFG) still gets one, ``"cond"``."""
    from diffusers import DiTTransformer2DModel

    from mmdit_tiny import tiny_wan
    from tokencache.harness import peers

    def contexts(model):
        from diffusers.hooks.hooks import StateManager

        names = set()
        for m in model.modules():
            for hook in peers._hooks_of(m).values():
                names |= {k for a in vars(hook).values() if isinstance(a, StateManager) for k in a._state_cache}
        return names

    torch.manual_seed(0)
    dit = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=1000).eval()
    for model, expected in ((tiny_wan(), {"cond", "uncond"}), (dit, {"cond"})):
        work = bench.bare_workload(model, resolution=64, steps=4, guidance=3.0)
        disable = peers.peer_taylorseer(peers.PeerTarget(model, steps=4), interval=2, warmup=1)
        with torch.no_grad():
            work.generate()
        assert contexts(model) == expected, type(model).__name__
        disable()


def test_peers_on_per_branch_pipelines_get_steps_per_context(monkeypatch):
    """Wan calls the model twice per step (cond, uncond): MagCache's and cache-dit's step counts are per cache
    context (6, not the 12 calls), cache-dit is told the CFG is separate, and MagCache's calibration keeps one
    ratio per step (the cond context's)."""
    from mmdit_tiny import tiny_wan
    from tokencache.harness import peers

    seen = []

    def probe(target):
        seen.append((target.steps, target.separate_cfg, target.cfg))
        return lambda: None

    monkeypatch.setitem(peers.PEERS, "peer:pab", probe)
    rows = bench.run_bench(tiny_wan(), {}, peers=["peer:pab", "peer:magcache"], resolution=64, steps=6,
                           guidance=3.0, repeats=1, warmup=0, progress=False)
    assert seen and set(seen) == {(6, True, False)}
    by = {r.name: r for r in rows}
    assert not by["peer:magcache"].error, by["peer:magcache"].error


def test_peer_knobs_parse_validate_and_change_what_the_peer_does():
    from tokencache.harness.peers import parse_peer, peer_knobs

    assert peer_knobs("peer:taylorseer") == {"interval": 5, "warmup": 3, "order": 1}
    assert parse_peer("peer:taylorseer:interval=2:order=2") == ("peer:taylorseer", {"interval": 2, "order": 2})
    assert parse_peer("peer:cache-dit:calibrator=foca:warmup=2") == (
        "peer:cache-dit", {"calibrator": "foca", "warmup": 2})
    with pytest.raises(ValueError, match=r"peer:magcache knob 'thresh=1' is invalid; allowed: KNOB=VALUE with KNOB"):
        parse_peer("peer:magcache:thresh=1")
    with pytest.raises(ValueError, match=r"peer:taylorseer knob interval='two' is invalid; allowed: a int"):
        parse_peer("peer:taylorseer:interval=two")
    with pytest.raises(ValueError, match=r"--peers='peer:pab:skip=x'"):
        bench.run(bench_args(["--reference", "dit", "--peers", "peer:pab:skip=x"]))
    # the knob reaches the tool: TaylorSeer with a full step every 2 steps is closer to uncached than every 6
    work = bench.reference_workload("dit", steps=12, batch=2)
    rows = bench.run_workload(work, {}, peers=["peer:taylorseer:interval=2:warmup=1",
                                               "peer:taylorseer:interval=6:warmup=1"],
                              repeats=1, warmup=0, progress=False)
    by = {r.name: r for r in rows}
    assert not any(r.error for r in rows), [r.error for r in rows]
    assert by["peer:taylorseer:interval=2:warmup=1"].psnr_vs_baseline > by[
        "peer:taylorseer:interval=6:warmup=1"].psnr_vs_baseline + 3


def test_reference_tier2_dit_samples_letters_scored_by_the_glyph_classifier(tmp_path):
    """`bench --reference dit2`: 32x32 letters A-Z, accuracy from the held-out glyph classifier."""
    work = bench.reference_workload("dit2", steps=3, batch=28)
    out = work.generate()
    assert out.shape[-2:] == (32, 32)
    labels = [i % 26 for i in range(28)]
    from tokencache import zoo
    from tokencache.metrics import class_accuracy

    assert work.score(out) == class_accuracy(out, labels, zoo.load_classifier(tier=2))
    md = tmp_path / "t.md"
    assert bench.run(bench_args(["--reference", "dit2", "--steps", "2", "--batch", "2", "--repeats", "1",
                                 "--warmup", "0", "--methods", "fora:balanced", "--markdown", str(md)])) == 0
    assert "reference dit2 (trained zoo pipeline) 32x32" in md.read_text()


def test_taylorseer_identifiers_hook_every_familys_attention_and_feed_forward():
    import re

    from mmdit_tiny import tiny_flux, tiny_sd3, tiny_wan
    from test_dit import tiny_dit
    from tokencache.harness.peers import TAYLORSEER_IDENTIFIERS

    def hooked(model):  # (stack, module) of every hooked module, over all blocks
        return {(n.split(".")[0], n.split(".")[-1])
                for n, _ in model.named_modules() if any(re.fullmatch(p, n) for p in TAYLORSEER_IDENTIFIERS)}

    t, s = "transformer_blocks", "single_transformer_blocks"
    assert hooked(tiny_dit()) == {(t, "attn1"), (t, "ff")}
    assert hooked(tiny_sd3()) == {(t, "attn"), (t, "attn2"), (t, "ff"), (t, "ff_context")}
    assert hooked(tiny_wan()) == {("blocks", "attn1"), ("blocks", "attn2"), ("blocks", "ffn")}
    assert hooked(tiny_flux()) == {(t, "attn"), (t, "ff"), (t, "ff_context"),
                                   (s, "attn"), (s, "proj_mlp"), (s, "proj_out")}


def test_cache_dit_and_faster_cache_run_on_sd3_in_the_bare_loop():
    """cache-dit through the BlockAdapter of its own SD3 pipeline adapter (its transformer-only mode does not
    match ``SD3Transformer2DModel``); FasterCache with ``pooled_projections`` split into its CFG halves."""
    pytest.importorskip("cache_dit")
    from mmdit_tiny import tiny_sd3

    model = tiny_sd3()
    peers = ["peer:cache-dit:threshold=0.5:warmup=1", "peer:faster-cache"]
    rows = bench.run_bench(model, {}, peers=peers, resolution=64, steps=6, guidance=4.0, repeats=1, warmup=0,
                           progress=False)
    by = {r.name: r for r in rows}
    for name in peers:
        assert not by[name].error, by[name].error
        assert 0 < by[name].psnr_vs_baseline < float("inf")  # it ran, and it skipped some work
    assert not any(getattr(m, "_diffusers_hook", None) and m._diffusers_hook.hooks for m in model.modules())


def test_pab_and_faster_cache_see_scheduler_timesteps_and_per_context_calls():
    """FLUX takes ``t / 1000``: PAB's and FasterCache's ranges are in scheduler units, so the peers read the
    timestep scaled back (PAB skipped nothing on FLUX before; FasterCache failed on its first call). Wan calls
    each CFG branch on its own: FasterCache runs without its batched-CFG approximation instead of failing."""
    from mmdit_tiny import tiny_flux, tiny_wan
    from tokencache.harness.bench.runner import _Watch

    watch = _Watch(tiny_flux(), torch.device("cpu"))
    assert watch.scale == 1000.0 and watch.batched_cfg is False
    assert _Watch(tiny_wan(), torch.device("cpu")).scale == 1.0
    for make, guidance in ((tiny_flux, 1.0), (tiny_wan, 4.0)):
        model = make()
        peers = ["peer:pab", "peer:faster-cache"]
        rows = bench.run_bench(model, {}, peers=peers, resolution=64, steps=6, guidance=guidance, repeats=1,
                               warmup=0, progress=False)
        by = {r.name: r for r in rows}
        for name in peers:
            assert not by[name].error, (make.__name__, name, by[name].error)
        if make is tiny_flux:  # Wan's self-attention is the same in both branches: PAB's reuse there is exact
            assert 0 < by["peer:pab"].psnr_vs_baseline < float("inf")
        assert 0 < by["peer:faster-cache"].psnr_vs_baseline < float("inf")


def test_bench_headers_name_the_generated_size():
    from tokencache.harness import shapes

    assert shapes.size_label("sd3", 1024) == "1024x1024"
    # Wan generates 832/480-aspect clips of WAN_FRAMES frames: the header says so, not "480x480"
    assert shapes.size_label("wan", 480) == "480x832, 5 frames" and shapes.wan_width(240) == 416
