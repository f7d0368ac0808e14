"""``tokencache search``: command-line front end of :func:`run_search`, with worker processes."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..harness.args import REFERENCE_FAMILIES
from .objectives import OBJECTIVES


def _csv(kind: type) -> Any:
    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__}") from None

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``tokencache search``."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="local diffusers checkpoint folder (loaded with local_files_only=True)")
    src.add_argument("--reference", choices=REFERENCE_FAMILIES, help="a tiny reference model (tokencache.zoo)")
    parser.add_argument("--method", default="dato",
                        help="a registered method with a search space (default dato); an unknown one lists them")
    parser.add_argument("--trials", type=int, default=64, help="finished trials wanted in the study (default 64)")
    parser.add_argument("--population", type=int, default=16, help="NSGA-II population size (default 16)")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps; DaTo has 2 genes per step")
    parser.add_argument("--samples", type=int, default=4, help="size of the fixed prompt/seed subset (default 4)")
    parser.add_argument("--prompts", default=None, help="prompts file (.txt/.csv/.json) to draw the subset from")
    parser.add_argument("--guidance-scale", type=float, default=None)
    parser.add_argument("--objectives", type=_csv(str), default=["macs", "psnr"],
                        help=f"cost first, then qualities; from {list(OBJECTIVES)} (default macs,psnr)")
    parser.add_argument("--constraint", action="append", default=[], help="e.g. 'psnr>=25' (repeatable)")
    parser.add_argument("--depths", type=_csv(int), default=None, help="DaTo branch depths (default 1,2,3)")
    parser.add_argument("--ratios", type=_csv(float), default=None, help="DaTo ratios (default 0,.3,.4,.5,.6,.7)")
    parser.add_argument("--approximators", type=_csv(str), default=None,
                        help="approximator gene choices (default none,taylor1,taylor2,foca; 'none' alone: reuse only)")
    parser.add_argument("--placement", action="store_true",
                        help="fora: a gene per step (where the full steps fall) instead of the interval")
    parser.add_argument("--fidelity-on", choices=("latent", "image"), default="latent")
    parser.add_argument("--fd-stats", default=None, help=".npz reference statistics for the 'fd' objective")
    parser.add_argument("--clip-model", default=None, help="local CLIP folder for the 'clip' objective")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default="search_out", help="folder for study.db, baseline cache, plot, configs")
    parser.add_argument("--storage", default=None, help="optuna storage URL (default sqlite:///OUT/study.db)")
    parser.add_argument("--study-name", default=None, help="default: tokencache-METHOD-STEPS")
    parser.add_argument("--resume", action="store_true", help="continue an existing study (finished trials count)")
    parser.add_argument("--fail-running", action="store_true",
                        help="with --resume: mark trials left RUNNING by a killed process as FAIL")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on the same storage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-seed-presets", action="store_true", help="don't enqueue the presets as first trials")
    parser.add_argument("--no-presets", action="store_true", help="don't evaluate the presets for the plot/table")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--report-only", action="store_true", help="only print/plot/export the stored study")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the front as JSON")


def _kwargs(args: argparse.Namespace, storage: str, name: str) -> dict[str, Any]:
    prompts = None
    if args.prompts:
        from ..harness.pipeline_io import read_prompts

        prompts = read_prompts(args.prompts)
    return dict(
        method=args.method, n_trials=args.trials, population=args.population, storage=storage, study_name=name,
        objectives=args.objectives, prompts=prompts, n_samples=args.samples, steps=args.steps,
        guidance_scale=args.guidance_scale, constraints=args.constraint, depths=args.depths, ratios=args.ratios,
        approximators=args.approximators, placement=args.placement,
        fidelity_on=args.fidelity_on, batch_size=args.batch_size, seed=args.seed,
        seed_presets=not args.no_seed_presets, eval_presets=not args.no_presets, fd_stats=args.fd_stats,
        clip_model=args.clip_model,
    )


def _names(args: argparse.Namespace) -> tuple[str, str]:
    out = Path(args.out).resolve()
    storage = args.storage or f"sqlite:///{out / 'study.db'}"
    return storage, args.study_name or f"tokencache-{args.method}-{args.steps}"


def run(args: argparse.Namespace) -> int:
    """Entry point of ``tokencache search``."""
    import optuna

    from ..harness.pipeline_io import load_pipeline
    from .study import fail_running, load_result, n_complete, run_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage, name = _names(args)
    if args.workers < 1:
        raise ValueError(f"--workers {args.workers} is invalid; allowed: >= 1")
    try:
        if not args.report_only:
            if args.fail_running and args.resume:
                n = fail_running(storage, name)
                print(f"marked {n} interrupted trial(s) as FAIL", file=sys.stderr)
            pipe = load_pipeline(args.model, args.reference, args.device)
            kw = _kwargs(args, storage, name)
            if args.workers == 1:
                run_search(pipe, resume=args.resume, progress=not args.no_progress and sys.stderr.isatty(), **kw)
            else:
                res = run_search(pipe, resume=args.resume, setup_only=True, **kw)
                del pipe
                _run_workers(args, storage, name, res.study, n_complete)
        result = load_result(storage, name)
    except _WorkersFailed as e:  # other user errors become one line in tokencache.cli
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; finished trials are kept in {storage} (study {name!r}): rerun with --resume",
              file=sys.stderr)
        return 130
    out = Path(args.out)
    if result.trials:
        plot = result.plot(out / "front.png")
        files = result.export(out / "strategies")
    else:
        plot, files = None, []
    if args.json:
        print(json.dumps({**result.as_dict(), "plot": str(plot) if plot else None,
                          "configs": [str(f) for f in files], "storage": storage}, indent=2))
    else:
        from rich.console import Console

        con = Console()
        con.print(result.table())
        for p in result.presets:
            dom = result.dominating(p)
            con.print(f"preset {p!r}: dominated by trial(s) {[t.number for t in dom] or 'none'}")
        con.print(f"plot: {plot}\nconfigs: {out / 'strategies'} ({len(files)} files)\nstorage: {storage} ({name})")
    return 0


class _WorkersFailed(RuntimeError):
    pass


def _run_workers(args: argparse.Namespace, storage: str, name: str, study: Any, n_complete: Any) -> None:
    """Start ``--workers`` processes on the same study and wait for them (progress from the storage)."""
    spec = {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "command"}
    spec.update(workers=1, resume=True, no_progress=True, json=False, fail_running=False, storage=storage,
                study_name=name, report_only=False)
    fd, path = tempfile.mkstemp(suffix=".json", prefix="tokencache-worker-")
    Path(path).write_text(json.dumps(spec))
    cmd = [sys.executable, "-c", "import sys; from tokencache.search.cli import worker_main; "
           "sys.exit(worker_main(sys.argv[1]))", path]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL) for _ in range(args.workers)]
    try:
        from ..harness.progress import Progress

        with Progress(f"search ({args.workers} workers)", args.trials,
                      not args.no_progress and sys.stderr.isatty(), transient=False, counts=True) as bar:
            while any(p.poll() is None for p in procs):
                bar.update(completed=min(n_complete(study), args.trials))
                time.sleep(1.0)
    finally:
        for p in procs:
            p.wait()
        Path(path).unlink(missing_ok=True)
    bad = [p.returncode for p in procs if p.returncode != 0]
    if bad:
        raise _WorkersFailed(f"{len(bad)} worker(s) failed with exit codes {bad}")


def worker_main(spec_path: str) -> int:
    """A worker process: run the search loop on the stored study until it has enough finished trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args = argparse.Namespace(**json.loads(Path(spec_path).read_text()))
    from ..harness.pipeline_io import load_pipeline
    from .study import run_search

    storage, name = _names(args)
    pipe = load_pipeline(args.model, args.reference, args.device)
    run_search(pipe, resume=True, progress=False, **_kwargs(args, storage, name))
    return 0
