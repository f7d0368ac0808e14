"""The command line: one-line user errors (exit 2), --debug tracebacks, light and fast --help, 80-column tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "p.txt").write_text("a handwritten 3\n")
    (d / "evil.yaml").write_text("method: dato\nprune_ratio: !!python/object/apply:os.system ['echo pwned']\n")
    (d / "bad_value.yaml").write_text("method: dato\nprune_ratio: 7\n")
    (d / "bad_method.yaml").write_text("method: turbo\n")
    (d / "broken.yaml").write_text("method: [dato\n")
    (d / "not_a_mapping.yaml").write_text("- 1\n- 2\n")
    (d / "img").mkdir()
    # a checkpoint folder whose weights are missing
    nw = d / "noweights"
    nw.mkdir()
    (nw / "model_index.json").write_text(json.dumps({
        "_class_name": "DDPMPipeline", "_diffusers_version": "0.42.1", "scheduler": ["diffusers", "DDPMScheduler"],
        "unet": ["diffusers", "UNet2DModel"]}))
    (nw / "scheduler").mkdir()
    (nw / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMScheduler"}))
    (nw / "unet").mkdir()
    (nw / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "sample_size": 8}))
    return d


@pytest.fixture(scope="module")
def unsupported(tmp_path_factory):
    """A saved unconditional DDPM pipeline: its UNet2DModel is no supported denoiser."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    path = tmp_path_factory.mktemp("ddpm") / "ddpm"
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
                       norm_num_groups=8, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(path)
    return path


def _gen(d, *extra):
    return ["generate", "--prompts", d / "p.txt", "--out", d / "out", "--steps", "2", *extra]


#: (id, argv from the files fixture, words the message must contain)
BAD = [
    ("method-for-model", lambda d: _gen(d, "--reference", "unet", "--method", "toca"), ["ToCaConfig", "UNet"]),
    ("unknown-method", lambda d: _gen(d, "--reference", "unet", "--method", "turbo"), ["turbo", "allowed"]),
    ("unknown-preset", lambda d: _gen(d, "--reference", "unet", "--method", "dato", "--preset", "ultra"),
     ["ultra", "allowed"]),
    ("yaml-python-tag", lambda d: _gen(d, "--reference", "unet", "--config", d / "evil.yaml"), ["python"]),
    ("config-bad-value", lambda d: _gen(d, "--reference", "unet", "--config", d / "bad_value.yaml"),
     ["prune_ratio", "7", "allowed"]),
    ("config-bad-method", lambda d: _gen(d, "--reference", "unet", "--config", d / "bad_method.yaml"),
     ["turbo", "allowed"]),
    ("config-broken-yaml", lambda d: _gen(d, "--reference", "unet", "--config", d / "broken.yaml"), []),
    ("config-not-mapping", lambda d: _gen(d, "--reference", "unet", "--config", d / "not_a_mapping.yaml"), []),
    ("config-missing", lambda d: _gen(d, "--reference", "unet", "--config", d / "nothere.yaml"), ["nothere.yaml"]),
    ("missing-checkpoint", lambda d: _gen(d, "--model", d / "nomodel"), ["nomodel"]),
    ("missing-weights", lambda d: _gen(d, "--model", d / "noweights"), ["noweights"]),
    ("bad-steps", lambda d: _gen(d, "--reference", "unet", "--steps", "0"), ["--steps", "0"]),
    ("not-a-number", lambda d: _gen(d, "--reference", "unet", "--steps", "many"), ["--steps", "many"]),
    ("bad-seeds", lambda d: _gen(d, "--reference", "unet", "--seeds", "1,x"), ["'x'"]),
    ("bad-reference", lambda d: _gen(d, "--reference", "sd99"), ["sd99", "unet"]),
    ("missing-prompts", lambda d: ["generate", "--reference", "unet", "--prompts", d / "no.txt", "--out", d / "o"],
     ["no.txt"]),
    ("bench-bad-steps", lambda d: ["bench", "--model", "sd15", "--steps", "0"], ["--steps", "0"]),
    ("bench-bad-method", lambda d: ["bench", "--model", "sd15", "--methods", "dato:ultra"], ["ultra", "allowed"]),
    ("bench-bad-peer", lambda d: ["bench", "--model", "sd15", "--peers", "peer:nope"], ["peer:nope", "allowed"]),
    ("bench-bad-model", lambda d: ["bench", "--model", d / "nomodel"], ["nomodel", "sd15"]),
    ("bench-bad-float", lambda d: ["bench", "--guidance", "high"], ["--guidance", "high"]),
    ("eval-missing-folder", lambda d: ["eval", d / "nofolder", "--baseline", d / "img"], ["nofolder"]),
    ("eval-empty-folder", lambda d: ["eval", d / "img", "--fd-ref", d / "img"], ["holds no images"]),
    ("demo-bad-family", lambda d: ["demo", "--families", "sdxl", "--out", d / "demo"], ["sdxl", "allowed"]),
    ("demo-bad-steps", lambda d: ["demo", "--steps", "0", "--out", d / "demo"], ["--steps", "0"]),
    ("search-bad-storage", lambda d: ["search", "--reference", "unet", "--steps", "2", "--samples", "1",
                                      "--storage", "nosuchdb://x/y", "--out", d / "s"], ["nosuchdb"]),
    ("search-unsearchable", lambda d: ["search", "--reference", "unet", "--method", "tome", "--steps", "2",
                                       "--out", d / "s2"], ["tome", "allowed"]),
    ("search-bad-trials", lambda d: ["search", "--reference", "unet", "--trials", "x"], ["--trials", "x"]),
    ("search-bad-constraint", lambda d: ["search", "--reference", "unet", "--steps", "2", "--samples", "1",
                                         "--constraint", "speed>2", "--out", d / "s3"], ["speed>2", "allowed"]),
    ("no-such-command", lambda d: ["fly"], ["fly"]),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_user_errors_are_one_line_with_exit_2(case, files, cli):
    _, argv, words = case
    r = cli(*argv(files))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_unsupported_pipeline_is_one_line(unsupported, files, cli):
    for argv in (_gen(files, "--model", unsupported, "--method", "dato"),
                 ["bench", "--model", unsupported, "--methods", "dato:fast", "--steps", "2", "--repeats", "1"]):
        r = cli(*argv)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr


def test_debug_shows_the_traceback(files, cli):
    with pytest.raises(TypeError, match="ToCaConfig"):
        cli("--debug", *_gen(files, "--reference", "unet", "--method", "toca"))
    with pytest.raises(ValueError, match="prune_ratio"):
        cli(*_gen(files, "--reference", "unet", "--config", files / "bad_value.yaml"), "--debug")


def test_notices_are_filtered_by_message_only():
    import logging

    from tokencache.cli import NoticeFilter

    f = NoticeFilter()

    def rec(msg):
        return logging.LogRecord("diffusers.x", logging.WARNING, __file__, 1, msg, (), None)

    assert not f.filter(rec("`CLIPImageProcessor` requires torchvision (not installed); falling back to ..."))
    assert not f.filter(rec("Setting `clean_caption=True` requires the Beautiful Soup library but it was not found"))
    assert f.filter(rec("your prompt was truncated to 77 tokens"))


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)


LIGHT = """
import importlib.util, sys, time, types
# load tokencache.cli without tokencache/__init__.py (whose laziness is not the CLI's business)
pkg = types.ModuleType("tokencache"); pkg.__path__ = [{src!r}]; sys.modules["tokencache"] = pkg
t = time.perf_counter()
from tokencache.cli import SUBCOMMANDS, build_parser
p = build_parser()
for name in SUBCOMMANDS:
    p._subparsers._group_actions[0].choices[name].format_help()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "diffusers", "transformers", "optuna"))
print(time.perf_counter() - t, heavy[:5])
"""


def test_parsers_import_no_torch_and_are_fast():
    r = _python(LIGHT.format(src=str(ROOT / "src" / "tokencache")))
    assert r.returncode == 0, r.stderr
    seconds, heavy = r.stdout.split(" ", 1)
    assert heavy.strip() == "[]"
    assert float(seconds) < 1.0


def _package_is_light() -> bool:
    r = _python("import sys, tokencache; print('torch' in sys.modules)")
    return r.stdout.strip() == "False"


@pytest.mark.parametrize("argv", [[], ["bench"], ["generate"], ["search"], ["eval"], ["demo"]])
def test_help_answers_fast(argv):
    if not _package_is_light():
        pytest.skip("`import tokencache` still imports torch (the lazy package import is the core's part)")
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "tokencache", *argv, "--help"], capture_output=True, text=True,
                       env=ENV, timeout=60)
    assert r.returncode == 0 and "usage:" in r.stdout
    assert time.perf_counter() - t < 3.0
    assert not r.stderr


def test_tables_fit_80_columns_and_keep_method_names():
    from tokencache.harness import demo
    from tokencache.harness.bench import Row, report
    from tokencache.harness.tables import render

    names = ["baseline", "dato:quality", "dato:searched-balanced", "deepcache:balanced", "duca:balanced"]
    rows = [demo.DemoRow("unet", n, 1.23, 4.56, 0.123, 28.5, 1.23, 0.9) for n in names]
    rows.append(demo.DemoRow("unet", "tome:balanced", 0, 0, 0, 0, 0, 0, "TypeError: " + "x" * 150))
    text = render("tokencache demo (50 steps) -> /a/rather/long/output/folder/name/for/the/demo", *demo.table(rows))
    bench_rows = [Row(n, loop_s=1.5, e2e_s=2.0, speedup=2.1, e2e_speedup=1.7, macs_per_image=3e12, macs_ratio=0.4,
                      psnr_vs_baseline=30.1, accuracy=0.9, nearest_peer="peer:deepcache", nearest_peer_psnr=29.0,
                      nearest_peer_e2e_s=2.1, faster_than_nearest_peer=True) for n in names]
    acc, near = report._has_accuracy(bench_rows), report._has_nearest(bench_rows)
    text2 = render("reference unet", report._header(acc, near), [report._cells(r, acc, near) for r in bench_rows])
    for t in (text, text2):
        assert max(len(line) for line in t.splitlines()) <= 80, t
        for n in names:
            assert n in t, (n, t)
        assert "…" not in t
    assert "tome:balanced" in text and "x" * 60 in text.replace("\n", "")  # the error, under the table, folded


def test_light_lists_match_the_heavy_ones():
    from tokencache import zoo
    from tokencache.harness.args import FEATURES, REFERENCE_FAMILIES
    from tokencache.harness.registry import method_specs

    assert REFERENCE_FAMILIES == zoo.ALL_FAMILIES and FEATURES == ("digits", "glyphs", "pixels", "inception")
    assert method_specs("unet", ("balanced",)) == ["dato:balanced", "deepcache:balanced", "tome:balanced"]
