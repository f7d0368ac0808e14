"""tokencache generate: inputs, sharding, resume and a 2-process run equal to the single-process one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tokencache.harness.generate import (
    Job,
    make_jobs,
    parse_seeds,
    read_manifest,
    read_prompts,
    resolve_config,
    safe_name,
    shard,
)

torch.set_num_threads(1)  # the CI box is shared; avoid thread oversubscription
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}




def test_read_prompts_formats(tmp_path):
    (tmp_path / "p.txt").write_text("a cat\n\n a dog \n")
    assert read_prompts(tmp_path / "p.txt") == ["a cat", "a dog"]
    (tmp_path / "p.csv").write_text("prompt,x\na cat,1\n\"a, dog\",2\n")
    assert read_prompts(tmp_path / "p.csv") == ["a cat", "a, dog"]
    (tmp_path / "l.csv").write_text("class_label\n3\n7\n")
    assert read_prompts(tmp_path / "l.csv") == [3, 7]
    (tmp_path / "p.json").write_text(json.dumps(["a", 4]))
    assert read_prompts(tmp_path / "p.json") == ["a", 4]


@pytest.mark.parametrize("name,text,match", [
    ("missing.txt", None, "missing.txt.*does not exist"),
    ("p.yaml", "a", "suffix '.yaml' is unsupported"),
    ("p.csv", "caption\na\n", "needs 'prompt' or 'class_label'"),
    ("l.csv", "class_label\nseven\n", "l.csv:2 column 'class_label' value 'seven'"),
    ("p.json", "{\"a\": 1}", "must hold a JSON list"),
    ("q.json", "[1, null]", r"entry \[1\]=None"),
    ("r.json", "[1,", "not valid JSON"),
    ("e.txt", "\n\n", "holds no prompts"),
])
def test_read_prompts_errors(tmp_path, name, text, match):
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        read_prompts(tmp_path / name)


def test_seeds_jobs_shard_names():
    assert parse_seeds("0,3-5") == [0, 3, 4, 5]
    with pytest.raises(ValueError, match="'x'"):
        parse_seeds("1,x")
    with pytest.raises(ValueError, match="'5-3'"):
        parse_seeds("5-3")
    jobs = make_jobs(["a", "b"], seeds=[7, 8])
    assert [(j.index, j.prompt, j.seed) for j in jobs] == [(0, "a", 7), (1, "a", 8), (2, "b", 7), (3, "b", 8)]
    assert [j.seed for j in make_jobs(["a", "b"], base_seed=10, per_prompt=2)] == [10, 11, 12, 13]
    for n, bs, world in [(10, 1, 3), (11, 4, 2), (5, 2, 4)]:
        got = sorted(i for r in range(world) for b in shard(n, bs, r, world) for i in b)
        assert got == list(range(n))  # every image exactly once
    assert [b[0] for b in shard(10, 1, 1, 3)] == [1, 4, 7]  # batch size 1: i % world == rank
    assert safe_name("A cat/..\\ on *Mars*!") == "a_cat_on_mars"
    assert Job(3, "x y", 5).file == "000003_x_y_s5.png"
    with pytest.raises(ValueError, match="--method 'nope' is unknown"):
        resolve_config("nope")
    with pytest.raises(FileNotFoundError, match="nothere.yaml"):
        resolve_config(config="nothere.yaml")


def test_cli_errors(tmp_path, cli):
    r = cli("generate", "--model", tmp_path / "nomodel", "--prompts", tmp_path / "x.txt", "--out", tmp_path / "o")
    assert r.returncode == 2 and "x.txt" in r.stderr
    (tmp_path / "x.txt").write_text("a\n")
    r = cli("generate", "--model", tmp_path / "nomodel", "--prompts", tmp_path / "x.txt", "--out", tmp_path / "o")
    assert r.returncode == 2 and "model_index.json" in r.stderr


def test_two_processes_equal_single_and_resume(tmp_path, saved_pipe, cli):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog\na red car\nhello\nzebra\n")
    common = ["--model", saved_pipe, "--prompts", prompts, "--steps", 4, "--batch-size", 2, "--method", "dato",
              "--preset", "fast", "--json", "--no-progress"]
    one = cli("generate", "--out", tmp_path / "one", *common)
    assert one.returncode == 0, one.stderr
    # accelerate's --cpu launcher runs one process; its torchrun launcher (--multi_gpu) also works on CPU
    acc = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "tokencache",
           "generate", "--out", str(tmp_path / "two"), *map(str, common)]
    two = subprocess.run(acc, capture_output=True, text=True, env=ENV, timeout=180)
    if two.returncode != 0:  # no torch.distributed launcher here: the same split with explicit env
        procs = [subprocess.Popen([sys.executable, "-m", "tokencache", "generate", "--out", str(tmp_path / "two"),
                                   *map(str, common)], env={**ENV, "RANK": str(r), "WORLD_SIZE": "2"})
                 for r in range(2)]
        assert all(p.wait(timeout=120) == 0 for p in procs)
    files = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert len(files) == 5
    assert sorted(p.name for p in (tmp_path / "two").glob("*.png")) == files
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f
    ranks = {r["rank"] for r in read_manifest(tmp_path / "two").values()}
    assert ranks == {0, 1}

    # resume: delete two images, only those are regenerated; the others are untouched
    out = tmp_path / "one"
    gone = files[1:3]
    for f in gone:
        (out / f).unlink()
    mtimes = {f: (out / f).stat().st_mtime_ns for f in files if f not in gone}
    again = cli("generate", "--out", out, *common)
    assert again.returncode == 0, again.stderr
    counts = json.loads(again.stdout.strip().splitlines()[-1])
    assert counts["generated"] == 2
    for f in gone:
        assert (out / f).read_bytes() == (tmp_path / "two" / f).read_bytes()
    assert {f: (out / f).stat().st_mtime_ns for f in mtimes} == mtimes
    assert not list(out.glob(".*.tmp"))
    # another config into the same folder is refused, naming both hashes
    bad = cli("generate", "--out", out, *common[:-6], "--method", "deepcache", "--json")
    assert bad.returncode == 2 and "use another --out" in bad.stderr


@pytest.mark.parametrize("family", ["flux", "wan"])
def test_generate_and_search_run_on_the_encoder_free_reference_families(tmp_path, cli, family):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a handwritten 3\n7\n")
    r = cli("generate", "--reference", family, "--prompts", prompts, "--out", tmp_path / "g", "--steps", 2,
            "--method", "toca", "--preset", "fast", "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["generated"] == 2
    assert len(list((tmp_path / "g").glob("*.png"))) == 2
    prompts.write_text("a cat\n")
    bad = cli("generate", "--reference", family, "--prompts", prompts, "--out", tmp_path / "b", "--steps", 2)
    assert bad.returncode == 2 and "'a cat'" in bad.stderr and "exactly one digit" in bad.stderr
    s = cli("search", "--reference", family, "--method", "fora", "--trials", 2, "--steps", 4,
            "--out", tmp_path / "s")
    assert s.returncode == 0, s.stderr
    assert list((tmp_path / "s" / "strategies").glob("*.yaml"))
