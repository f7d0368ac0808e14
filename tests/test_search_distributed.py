"""Several search workers on one optuna study (SQLite, and a real PostgreSQL when CI provides one).

The workers are real processes running :func:`tokencache.search.run_search` on the zoo's UNet pipeline;
only the evaluator is a cheap deterministic stand-in (metrics from a hash of the candidate config, a short
sleep per trial), so that killing a worker in the middle of a trial is easy and the run takes seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("TOKENCACHE_TEST_PG_URL")

METRICS = r'''
import hashlib, json

def metrics(d):
    """Deterministic metrics of a config dict (a hash of its fields)."""
    h = int(hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12], 16)
    return {"macs": (h % 997) / 997, "psnr": 20 + (h // 997 % 991) / 50, "ssim": 0.9, "rel_l1": 0.1, "latency": 1.0}
'''

WORKER = METRICS + r'''
import os, sys, time
import optuna
from tokencache.search import study as S

class CheapEvaluator:
    """Deterministic metrics of a config (a hash of its fields); marks the process busy while it 'runs'."""
    def __init__(self, pipe, settings, cache_dir=None, objectives=("macs", "psnr"), fd_stats=None, clip_model=None):
        self.objectives = objectives
    baseline = {}
    def evaluate(self, cfg):
        busy = os.path.join(os.environ["TC_BUSY_DIR"], f"{os.getpid()}")
        open(busy, "w").close()
        time.sleep(float(os.environ.get("TC_TRIAL_S", "0.3")))
        os.unlink(busy)
        return metrics(cfg.to_dict())

S.Evaluator = CheapEvaluator
optuna.logging.set_verbosity(optuna.logging.WARNING)
storage, name, n_trials = sys.argv[1], sys.argv[2], int(sys.argv[3])
from tokencache.harness.pipeline_io import load_pipeline
S.run_search(load_pipeline(reference="unet"), "dato", n_trials=n_trials, population=4, storage=storage,
             study_name=name, steps=6, n_samples=1, resume=True, seed_presets=False, eval_presets=False)
'''


def _env(tmp_path: Path) -> dict[str, str]:
    busy = tmp_path / "busy"
    busy.mkdir(exist_ok=True)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src"), "TC_BUSY_DIR": str(busy)}


def _worker(tmp_path: Path, storage: str, name: str, n_trials: int) -> subprocess.Popen:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return subprocess.Popen([sys.executable, str(script), storage, name, str(n_trials)], env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


_STORAGES: dict = {}


def _trials(storage: str, name: str):
    """All trials of the study (one storage object per URL: each holds a connection pool)."""
    import optuna

    from tokencache.search.study import make_storage

    if storage not in _STORAGES:
        _STORAGES[storage] = make_storage(storage)
    st = _STORAGES[storage]
    try:
        return optuna.load_study(study_name=name, storage=st).get_trials(deepcopy=True)
    except KeyError:  # not created yet
        return []


def _front(trials, objectives=("macs", "psnr")):
    from tokencache.search import pareto_front

    front = pareto_front(trials, objectives, [])
    return sorted((t.values[0], t.values[1], tuple(sorted(t.params.items()))) for t in front)


def _storages():
    out = ["sqlite"]
    out.append(pytest.param("postgresql", marks=pytest.mark.skipif(
        not PG_URL, reason="TOKENCACHE_TEST_PG_URL is not set (.ci/run starts a PostgreSQL server and sets it)")))
    return out


@pytest.mark.parametrize("kind", _storages())
def test_two_workers_one_killed_mid_trial_then_resumed(kind, tmp_path):
    import optuna
    from optuna.trial import TrialState

    from tokencache.search.study import fail_running

    storage = f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite" else PG_URL
    name = f"dist-{os.getpid()}-{time.time_ns()}"  # one fresh study per run on a shared server
    first, total = 10, 14
    a = _worker(tmp_path, storage, name, first)
    b = _worker(tmp_path, storage, name, first)
    busy = tmp_path / "busy" / str(a.pid)
    deadline = time.time() + 240
    try:
        # wait until worker A has finished two trials and is inside its next one, then SIGKILL it
        while True:
            assert time.time() < deadline, (a.poll(), b.poll(), b.stderr.read() if b.poll() is not None else "")
            assert a.poll() is None, a.stderr.read()
            done_a = [t for t in _trials(storage, name)
                      if t.state == TrialState.COMPLETE and t.user_attrs.get("pid") == a.pid]
            if len(done_a) >= 2 and busy.exists():
                before = {t.number: t.values for t in _trials(storage, name) if t.state == TrialState.COMPLETE}
                # the query can outlast a trial on a loaded machine: kill only while A is still inside one
                if busy.exists():
                    os.kill(a.pid, signal.SIGKILL)
                    break
            time.sleep(0.05)
        a.wait(30)
        assert b.wait(240) == 0, b.stderr.read()
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.wait()
    trials = _trials(storage, name)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    assert len(running) == 1 and "metrics" not in running[0].user_attrs  # A's trial, killed before it finished
    assert fail_running(storage, name) == 1
    c = _worker(tmp_path, storage, name, total)  # resume: one worker tops the study up
    assert c.wait(240) == 0, c.stderr.read()

    trials = _trials(storage, name)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [running[0].number]
    # no finished trial lost (same values), none counted twice (distinct numbers, one trial per record)
    now = {t.number: t.values for t in complete}
    assert all(now.get(n) == v for n, v in before.items())
    assert len({t.number for t in trials}) == len(trials) == len({t._trial_id for t in trials})
    assert total <= len(complete) <= total + 1  # two workers racing for the last trial may both finish one
    assert {t.user_attrs["pid"] for t in complete} >= {a.pid, b.pid, c.pid}

    # the front equals the one a single worker reaches on the same trials (in memory, one process)
    ns: dict = {}
    exec(METRICS, ns)
    single = optuna.create_study(directions=["minimize", "maximize"])
    for t in complete:  # the same configs, scored again here
        m = ns["metrics"](t.user_attrs["config"])
        single.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                                   values=[m["macs"], m["psnr"]], user_attrs={"metrics": m}))
    assert _front(complete) == _front(single.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    from tokencache.search import load_result

    result = load_result(storage, name)
    assert len(result.trials) == len(complete)

