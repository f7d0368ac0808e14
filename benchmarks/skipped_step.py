"""What a skipped step costs on a reference transformer, with and without the norm stubs (``input_norms``).

A module produced whole by its approximator ignores its input; the norm that only it reads returns one
token then (``tokencache.methods.token_cache.SkippedInputHook``). This times FORA-like plans on a trained
reference model (``tokencache.zoo``) with those stubs and without them (the adapter's ``norms_of``
patched to declare none), alternating with the uncached baseline, median of ``--repeats``. Outputs are
checked bit-identical between the two. One thread by default: set ``OMP_NUM_THREADS`` to change it.

    OMP_NUM_THREADS=1 python benchmarks/skipped_step.py --family dit
    OMP_NUM_THREADS=1 python benchmarks/skipped_step.py --family pixart --batch 100
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager, nullcontext

import torch

import tokencache as tc
from tokencache.harness.bench import reference_workload
from tokencache.methods.fora import taylorseer_plan
from tokencache.models import ModelAdapter


@contextmanager
def no_stubs():
    """Install without the norm stubs (the adapter declares no input norms)."""
    saved = ModelAdapter.norms_of
    ModelAdapter.norms_of = lambda self, block: {}
    try:
        yield
    finally:
        ModelAdapter.norms_of = saved


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="dit", choices=("dit", "pixart", "dit2", "pixart2"))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    work = reference_workload(args.family, steps=args.steps, batch=args.batch, seed=0)
    work.generate()  # warm-up

    def timed(cfg: tc.config.BaseConfig | None, stubs: bool) -> tuple[float, torch.Tensor, float | None]:
        if cfg is None:
            t0 = time.perf_counter()
            out = work.generate()
            return time.perf_counter() - t0, out, None
        with nullcontext() if stubs else no_stubs():
            tc.apply(work.target, cfg, **work.apply_kwargs)
        try:
            t0 = time.perf_counter()
            out = work.generate()
            return time.perf_counter() - t0, out, tc.summary(work.target).macs_ratio
        finally:
            tc.remove(work.target)

    s = args.steps
    configs = {
        "FORA-like every 2": tc.FORAConfig(interval=2),
        "FORA-like every 4": tc.FORAConfig(interval=4),
        "FORA-like every 8": tc.FORAConfig(interval=8),
        f"FORA-like every {s} (one full step)": tc.FORAConfig(interval=s),
        "FORA + Taylor 1, w=3, N=8": tc.FORAConfig(step_plan=taylorseer_plan(3, 8, s), forecast="taylor"),
        "ToCa fast": tc.ToCaConfig.preset("fast"),
        "DuCa fast": tc.DuCaConfig.preset("fast"),
    }
    print(f"reference {args.family}, {s} DDIM steps, CFG 3, {args.batch} images, {torch.get_num_threads()} thread(s), "
          f"torch {torch.__version__}; median of {args.repeats}, alternating with the baseline\n")
    print("| plan | MACs ratio | speed-up without stubs | speed-up with stubs | speed per MAC (with) | outputs |")
    print("|---|---|---|---|---|---|")
    for name, cfg in configs.items():
        base, off, on = [], [], []
        for _ in range(args.repeats):
            base.append(timed(None, True)[0])
            t_off, out_off, macs = timed(cfg, False)
            t_on, out_on, _ = timed(cfg, True)
            off.append(t_off)
            on.append(t_on)
        b = statistics.median(base)
        same = "bit-identical" if torch.equal(out_off, out_on) else "DIFFER"
        sp_on = b / statistics.median(on)
        sp_off = b / statistics.median(off)
        print(f"| {name} | {macs:.3f} | {sp_off:.2f}x | {sp_on:.2f}x | {sp_on * macs:.2f} | {same} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
