"""``run_search``: NSGA-II over a method's per-step genes, in resumable optuna storage."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..harness.pipeline_io import takes_class_labels
from ..harness.registry import CONFIG_CLASSES, unet_units
from .evaluator import COST_OBJECTIVES, OBJECTIVES, EvalSettings, Evaluator
from .report import SearchResult, pareto_front
from .space import DaToSpace, make_space

_CONSTRAINT = re.compile(r"^\s*([a-z_]+)\s*(>=|<=)\s*([-+0-9.eE]+)\s*$")


def parse_constraint(text: str) -> tuple[str, str, float]:
    """``"psnr>=25"`` -> ``("psnr", ">=", 25.0)``; raises ``ValueError`` naming the text and what is allowed."""
    m = _CONSTRAINT.match(text)
    if not m or m.group(1) not in OBJECTIVES:
        raise ValueError(f"constraint {text!r} is invalid; allowed: METRIC>=X or METRIC<=X with METRIC in "
                         f"{list(OBJECTIVES)}")
    return m.group(1), m.group(2), float(m.group(3))


def constraint_values(metrics: dict[str, float], constraints: Sequence[tuple[str, str, float]]) -> list[float]:
    """optuna's convention: a value <= 0 means the constraint holds."""
    return [(x - metrics[k]) if op == ">=" else (metrics[k] - x) for k, op, x in constraints]


def default_prompts(pipe: Any) -> list[Any]:
    """Class labels 0-9 for class-conditional pipelines, the letter prompts ``"the letter A"`` ... ``"J"`` for the
    zoo's encoder-free tier-2 FLUX (``zoo.load("flux2")``, whose prompt table knows letters only), else the zoo's
    digit prompts ``"a handwritten k"``."""
    if takes_class_labels(pipe):
        return list(range(10))
    from ..zoo.pipelines import takes_letter_prompts  # the zoo imports diffusers: only when a study runs

    if takes_letter_prompts(pipe):
        return [f"the letter {chr(ord('A') + k)}" for k in range(10)]
    return [f"a handwritten {k}" for k in range(10)]


def pick_samples(prompts: Sequence[Any], n_samples: int, seed: int) -> tuple[list[Any], list[int]]:
    """A fixed subset: ``n_samples`` prompts (cycled in order if fewer, a seeded draw if more) and their seeds.

    Drawn once for the whole search and stored with the study, so every candidate sees the same inputs.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples={n_samples} is invalid; allowed: >= 1")
    prompts = list(prompts)
    if len(prompts) > n_samples:
        chosen = sorted(random.Random(seed).sample(range(len(prompts)), n_samples))
        picked = [prompts[i] for i in chosen]
    else:
        picked = [prompts[i % len(prompts)] for i in range(n_samples)]
    return picked, [seed * 100_003 + i for i in range(n_samples)]


def max_branch_depth(pipe: Any) -> int:
    """Deepest UNet branch depth of the pipeline's denoiser (0 for transformers)."""
    unet = getattr(pipe, "unet", None)
    if unet is None:
        return 0
    return unet_units(unet)[2]


def make_storage(url: str | None) -> Any:
    """An optuna storage for ``url``; SQLite gets a long lock timeout so several workers can share it."""
    if url is None:
        return None
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
    if "://" not in url:
        raise ValueError(f"storage {url!r} is invalid; allowed: an SQLAlchemy URL such as sqlite:///PATH or "
                         "postgresql://USER:PASSWORD@HOST/DB")
    # several machines: check pooled connections before use (a server or NAT may have dropped them)
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def fail_running(storage: str, study_name: str) -> int:
    """Mark the study's RUNNING trials (left by a killed process) as FAIL; only safe when no worker is alive."""
    st = make_storage(storage)
    study = optuna.load_study(study_name=study_name, storage=st)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in running:
        st.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return len(running)


def _directions(objectives: Sequence[str]) -> list[str]:
    return [OBJECTIVES[o] for o in objectives]


def n_complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def open_study(
    storage: str | None,
    study_name: str,
    settings: dict[str, Any],
    resume: bool,
    population: int,
    seed: int,
    constraints: Sequence[tuple[str, str, float]],
) -> optuna.Study:
    """Create or (with ``resume``) load the study; a stored study must have the same settings."""
    url = storage
    def constraints_func(t: FrozenTrial) -> list[float]:
        return list(t.user_attrs.get("constraints", [0.0] * len(constraints)))

    sampler = optuna.samplers.NSGAIISampler(
        population_size=population, seed=seed, constraints_func=constraints_func if constraints else None
    )
    storage = make_storage(storage)
    exists = False
    if storage is not None:
        try:
            optuna.load_study(study_name=study_name, storage=storage)
            exists = True
        except KeyError:
            exists = False
    if exists and not resume:
        raise ValueError(f"study {study_name!r} already exists in {url}; pass resume=True (--resume) to "
                         "continue it, or choose another study_name")
    study = optuna.create_study(
        storage=storage, study_name=study_name, sampler=sampler,
        directions=_directions(settings["objectives"]), load_if_exists=True,
    )
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", settings)
    else:
        for k, v in settings.items():
            if k in stored and stored[k] != v:
                raise ValueError(f"study {study_name!r} was started with {k}={stored[k]!r}, this run has {v!r}; "
                                 "resume with the same settings or choose another study_name")
    return study


def run_search(
    pipe: Any,
    method: str = "dato",
    n_trials: int = 50,
    population: int = 16,
    storage: str | None = None,
    study_name: str = "tokencache",
    objectives: Sequence[str] = ("macs", "psnr"),
    prompts: Sequence[Any] | None = None,
    n_samples: int = 4,
    steps: int = 50,
    guidance_scale: float | None = None,
    constraints: Sequence[str] = (),
    depths: Sequence[int] | None = None,
    ratios: Sequence[float] | None = None,
    approximators: Sequence[str] | None = None,
    placement: bool = False,
    fidelity_on: str = "latent",
    batch_size: int = 8,
    seed: int = 0,
    resume: bool = False,
    cache_dir: str | Path | None = None,
    seed_presets: bool = True,
    eval_presets: bool = True,
    fd_stats: str | Path | None = None,
    clip_model: str | Path | None = None,
    progress: bool = False,
    setup_only: bool = False,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
) -> SearchResult:
    """NSGA-II search of per-step strategies (cost vs quality) with optuna.

    Every candidate runs on the same fixed prompts and seeds; its quality is its fidelity to the uncached
    outputs (computed once, cached in ``cache_dir``). The study lives in ``storage`` (any SQLAlchemy URL,
    e.g. ``sqlite:///search.db``); several processes may run ``run_search`` on the same study at once, and
    a killed search continues with ``resume=True``: finished trials count toward ``n_trials``.

    Args:
        pipe: a diffusers pipeline, or a zero-argument callable returning one.
        method: ``"dato"``, ``"deepcache"``, ``"toca"``, ``"duca"`` or ``"fora"``.
        n_trials: total finished trials wanted in the study (across resumes and workers).
        population: NSGA-II population size.
        storage: optuna storage URL; ``None`` = in memory (no resume).
        study_name: name of the study in the storage.
        objectives: a cost (``"macs"``, ``"latency_model"``, ``"latency"``) then qualities (``"psnr"``,
            ``"ssim"``, ``"rel_l1"``, ``"fd"``, ``"clip"``).
        prompts: prompts / class labels to draw the fixed subset from (default: digit prompts or labels).
        n_samples: size of the fixed subset.
        steps: ``num_inference_steps``; DaTo has one gene pair per step.
        guidance_scale: CFG scale, ``None`` = pipeline default.
        constraints: e.g. ``["psnr>=25"]``; infeasible candidates never enter the front.
        depths, ratios: DaTo branch depths and pruning ratios to choose from.
        approximators: the approximator gene's choices (``"none"``, ``"taylor1"``..``"taylor3"``,
            ``"hermite1"``..``"hermite3"``, ``"foca"``); default ``none, taylor1, taylor2, foca``.
        placement: FORA only: search where every full step falls (a gene per step) instead of the interval.
        fidelity_on: ``"latent"`` or ``"image"``.
        batch_size: samples per pipeline call.
        seed: seeds the sampler and the subset.
        resume: continue an existing study of the same name.
        cache_dir: folder for the cached baseline and latency calibration.
        seed_presets: enqueue the method's presets that fit the space as first trials.
        eval_presets: evaluate the presets (outside the study) to mark them on the plot.
        fd_stats, clip_model: for the ``fd`` / ``clip`` objectives.
        progress: show a rich progress bar with the current Pareto front size.
        setup_only: create the study, baseline and preset scores, then return without running trials.
        callbacks: optuna callbacks.

    Returns:
        :class:`SearchResult` with the study, the front, preset scores and export helpers.

    Example:
        >>> from tokencache.search import run_search
        >>> res = run_search(pipe, "dato", n_trials=40, population=8, steps=20, storage="sqlite:///s.db")
        >>> res.export("strategies/")  # one YAML per front member, loadable with tc.load_config
    """
    pipe = pipe() if callable(pipe) and not hasattr(pipe, "components") else pipe
    objectives = tuple(objectives)
    if len(objectives) < 2 or objectives[0] not in COST_OBJECTIVES:
        raise ValueError(f"objectives={list(objectives)} is invalid; allowed: a cost first (one of "
                         f"{list(COST_OBJECTIVES)}) then one or more qualities from {list(OBJECTIVES)}")
    if n_trials < 1 or population < 2:
        raise ValueError(f"n_trials={n_trials}, population={population} are invalid; allowed: >= 1 and >= 2")
    if method not in CONFIG_CLASSES:
        raise ValueError(f"method {method!r} is unknown; allowed: {sorted(CONFIG_CLASSES)}")
    cons = [parse_constraint(c) for c in constraints]
    space = make_space(method, steps, max_branch_depth(pipe), depths=depths, ratios=ratios,
                       approximators=approximators, placement=placement)
    if "latency_model" in objectives and not isinstance(space, DaToSpace):
        raise ValueError("objective 'latency_model' is only calibrated for the 'dato' space; use 'macs' or 'latency'")
    subset, seeds = pick_samples(prompts or default_prompts(pipe), n_samples, seed)
    settings = EvalSettings(subset, seeds, steps, guidance_scale, batch_size, fidelity_on)
    study_settings = {
        "method": method, "objectives": list(objectives), "prompts": subset, "seeds": seeds, "steps": steps,
        "guidance_scale": guidance_scale, "fidelity_on": fidelity_on, "space": space.describe(),
        "constraints": list(constraints),
    }
    study = open_study(storage, study_name, study_settings, resume, population, seed, cons)
    if cache_dir is None and storage and storage.startswith("sqlite:///"):
        cache_dir = Path(storage[len("sqlite:///"):]).parent / f"{study_name}_cache"
    ev = Evaluator(pipe, settings, cache_dir, objectives, fd_stats, clip_model)
    _ = ev.baseline
    if "latency_model" in objectives:
        assert isinstance(space, DaToSpace)
        acts = [("full", None, r) for r in space.ratios if r != 0.0] + [("reuse", None, 0.0)]
        acts += [("partial", d, r) for d in space.depths for r in space.ratios]
        ev.calibrate(acts, n=min(steps, 10))

    presets = dict(study.user_attrs.get("presets", {}))
    if eval_presets and not presets:
        for name, cfg in space.presets().items():
            m = ev.evaluate(cfg)
            presets[name] = {"metrics": m, "config": cfg.to_dict(),
                             "feasible": all(v <= 0 for v in constraint_values(m, cons))}
        study.set_user_attr("presets", presets)
    if seed_presets and not study.user_attrs.get("presets_enqueued"):
        study.set_user_attr("presets_enqueued", True)
        for cfg in space.seeds():
            params = space.params_of(cfg)
            if params is not None:
                study.enqueue_trial(params, user_attrs={"preset_seed": True}, skip_if_exists=True)

    cache: dict[str, dict[str, float]] = {}

    def objective(trial: optuna.Trial) -> list[float]:
        cfg = space.suggest(trial)
        fp = cfg.fingerprint()
        if fp in cache and objectives[0] != "latency":
            m = cache[fp]
        else:
            m = cache[fp] = ev.evaluate(cfg)
        trial.set_user_attr("metrics", m)
        trial.set_user_attr("config", cfg.to_dict())
        trial.set_user_attr("pid", os.getpid())
        if cons:
            trial.set_user_attr("constraints", constraint_values(m, cons))
        return [m[o] for o in objectives]

    result = SearchResult(study, objectives, cons, presets)
    if setup_only:
        return result
    bar = _Bar(progress, n_trials, n_complete(study), objectives, cons)
    with bar:
        while n_complete(study) < n_trials:
            study.optimize(objective, n_trials=1, callbacks=[*callbacks, bar.callback], gc_after_trial=False)
    return result


class _Bar:
    """The harness progress bar, its description showing the current Pareto front size."""

    def __init__(self, enabled: bool, total: int, done: int, objectives: Sequence[str], cons: list) -> None:
        from ..harness.progress import Progress

        self.total, self.objectives, self.cons = total, objectives, cons
        self._p = Progress("search  front=0", total, enabled, done, transient=False, counts=True)
        self.enabled = enabled

    def __enter__(self) -> _Bar:
        self._p.__enter__()
        return self

    def callback(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.update(study)

    def update(self, study: optuna.Study) -> None:
        if self.enabled:
            trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            front = pareto_front(trials, self.objectives, self.cons)
            self._p.update(completed=min(len(trials), self.total), description=f"search  front={len(front)}")

    def __exit__(self, *exc: Any) -> None:
        self._p.__exit__(*exc)


def load_result(storage: str, study_name: str) -> SearchResult:
    """The :class:`SearchResult` of a stored study (e.g. to report or export while workers still run)."""
    study = optuna.load_study(study_name=study_name, storage=make_storage(storage))
    s = study.user_attrs.get("settings")
    if s is None:
        raise ValueError(f"study {study_name!r} in {storage} was not made by tokencache search (no settings)")
    cons = [parse_constraint(c) for c in s.get("constraints", [])]
    return SearchResult(study, tuple(s["objectives"]), cons, study.user_attrs.get("presets", {}))
