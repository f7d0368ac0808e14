"""The fair quality protocol: tokencache's configurations against every peer at its best, at equal speed.

On a trained reference model (``tokencache.zoo``), every candidate (our methods with reuse and with
forecasts, and each peer over a grid of its main knobs) generates the same ``--seeds`` x ``--per-seed``
images (``--per-seed / 10`` per digit, one noise seed per batch), 50 DDIM steps (FLUX, Wan: Euler), CFG 3
(Wan: clips, PSNR over every frame, FD and accuracy on the middle frame):

* **fidelity**: PSNR against the uncached images of the same seed, per seed (mean and spread shown);
* **distribution**: FD in the digit classifier's features, all seeds' images against the real test
  digits; the uncached baseline is drawn on ``--fd-sets`` independent seed sets, so its own resampling
  spread is known; and class accuracy;
* **speed**: end-to-end pipeline time, one batch per seed; a baseline batch is timed before every
  candidate (alternating), and speedups are the median baseline time over the candidate's median;
  our configurations also get exact MACs.
* **matched placement**: TaylorSeer's full steps are at its own positions (``warmup`` full steps, then
  ``(step - warmup - 1) % interval == 0``); our forecasting FORA-like runs at exactly those positions
  too (``FORAConfig.step_plan = taylorseer_plan(...)``), so the comparison at each grid point is at equal
  MACs and equal placement. The searched placements (``src/tokencache/strategies``) are searched on other
  seeds (``tokencache search --seed 7``) than the ones evaluated here.

Each family's frontiers are the Pareto envelopes of PSNR against measured speedup, pooled over our
configurations and per peer (``tokencache.harness.frontier``), compared at 1.5x, 2x, 3x and 4x.

    python benchmarks/frontier.py --family dit --out benchmarks/results            # ~25 min on 2 cores
    python benchmarks/frontier.py --family dit --seeds 3 --per-seed 20 --quick      # smoke run

Results are appended to ``OUT/frontier_FAMILY.json`` after every candidate; ``--resume`` skips the
candidates already there (the same machine and settings are assumed).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import tokencache as tc
from tokencache import zoo
from tokencache.cli import quiet_notices
from tokencache.harness.bench import reference_workload
from tokencache.harness.bench.runner import Runs
from tokencache.harness.frontier import compare_at, pareto_front
from tokencache.methods.fora import taylorseer_plan
from tokencache.metrics import frechet_distance, psnr
from tokencache.search import shipped_strategies
from tokencache.zoo.data import load_digits_split
from tokencache.zoo.evaluate import GLYPH_REFERENCE
from tokencache.zoo.wan import classified_frame

SPEEDS = (1.5, 2.0, 3.0, 4.0)
#: the sampler each family's report names (tier-2 names drop their "2")
SOLVERS = {
    "unet": "DDIM steps, CFG 3",
    "dit": "DDIM steps, CFG 3",
    "pixart": "DDIM steps, CFG 3",
    "flux": "Euler steps (flow matching), true CFG 3",
    "wan": "Euler steps (flow matching), CFG 3 per branch, 5-frame clips (PSNR over every frame, FD and accuracy "
           "on the middle frame)",
}


@dataclass
class Candidate:
    """One point of a sweep: ``curve`` groups the points of one method or peer."""

    curve: str
    label: str
    ours: bool
    config: Any = None  # a tokencache config (ours)
    peer: str = ""  # a peer spec (theirs)

    @property
    def key(self) -> str:
        return f"{self.curve} | {self.label}"


#: (warm-up, interval) of the TaylorSeer grid; our forecasting FORA-like runs at the same positions
TS_GRID = ((1, 2), (1, 3), (3, 4), (3, 6), (3, 8), (3, 10))


#: the trimmed grid of ``--grid core`` (the tier-2 DiT, whose samples cost 4x a tier-1 DiT's): each curve's
#: points at the ends and the middle of its range
CORE_LABELS = {
    "FORA-like (reuse)": None,
    "tokencache FORA + Taylor 1 (TaylorSeer positions)": {"w=1,N=2", "w=1,N=3", "w=3,N=6"},
    "tokencache FORA + FoCa (TaylorSeer positions)": {"w=1,N=3"},
    "tokencache DuCa presets (Taylor 1)": {"balanced", "fast"},
    "TaylorSeer": {"w=1,N=2", "w=1,N=3", "w=3,N=6"},
    "MagCache": {"t=0.06,K=3", "t=0.12,K=4", "t=0.5,K=8"},
    "First Block Cache": {"t=0.1", "t=0.2", "t=0.4"},
    "cache-dit DBCache (taylorseer)": {"t=0.2"},
}


def scale_candidates() -> list[Candidate]:
    """The token-level methods with reuse and with forecasts, for the scale study (tier 1 against tier 2)."""
    ours = [Candidate("ToCa (reuse)", f"N={k}", True,
                      tc.ToCaConfig(interval=k, first_full_steps=2, fresh_ratio=0.1)) for k in (2, 3, 4)]
    ours += [Candidate("DuCa (reuse)", c, True, tc.DuCaConfig(cycle=c, first_full_steps=2, fresh_ratio=0.1))
             for c in ("FCA", "FCAC", "FACAC")]
    ours += [Candidate("tokencache ToCa presets (Taylor 1)", p, True, tc.ToCaConfig.preset(p))
             for p in ("quality", "balanced")]
    return ours


def transformer_candidates(family: str, steps: int, quick: bool, grid: str = "full") -> list[Candidate]:
    ts = TS_GRID[1::3] if quick else TS_GRID
    ours = [Candidate("FORA-like (reuse)", f"N={k}", True, tc.FORAConfig(interval=k)) for k in (2, 3, 4, 6, 8)]
    ours += [Candidate("tokencache FORA + Taylor 1 (TaylorSeer positions)", f"w={w},N={k}", True,
                       tc.FORAConfig(step_plan=taylorseer_plan(w, k, steps), forecast="taylor")) for w, k in ts]
    ours += [Candidate("tokencache FORA + FoCa (TaylorSeer positions)", f"w={w},N={k}", True,
                       tc.FORAConfig(step_plan=taylorseer_plan(w, k, steps), forecast="foca"))
             for w, k in ((1, 3), (3, 6))]
    ours += [Candidate("tokencache DuCa + Taylor 1", c, True,
                       tc.DuCaConfig(cycle=c, first_full_steps=3, fresh_ratio=0.1, forecast="taylor"))
             for c in ("FAA", "FAAA", "FAAAA", "FAAAAA")]
    ours += [Candidate("tokencache DuCa presets (Taylor 1)", p, True, tc.DuCaConfig.preset(p))
             for p in ("quality", "balanced", "fast")]
    for name, path in shipped_strategies().items():
        if name.startswith(f"reference_{family}_fora"):
            ours.append(Candidate("tokencache FORA searched placement", name.rsplit("_", 1)[-1], True,
                                  tc.load_config(path)))
        if name.startswith(f"reference_{family}_duca"):  # benchmarks/export_strategies.py
            ours.append(Candidate("tokencache DuCa searched", name.rsplit("_", 1)[-1], True, tc.load_config(path)))
    peers = [Candidate("TaylorSeer", f"w={w},N={k}", False, peer=f"peer:taylorseer:interval={k}:warmup={w}")
             for w, k in ts]
    peers += [Candidate("TaylorSeer order 2", f"w={w},N={k}", False,
                        peer=f"peer:taylorseer:interval={k}:warmup={w}:order=2") for w, k in ((1, 3), (3, 6))]
    peers += [Candidate("MagCache", f"t={t},K={k}", False, peer=f"peer:magcache:threshold={t}:max_skip={k}")
              for t, k in ((0.06, 3), (0.12, 4), (0.24, 6), (0.5, 8), (1.0, 10))]
    peers += [Candidate("First Block Cache", f"t={t}", False, peer=f"peer:first-block-cache:threshold={t}")
              for t in (0.05, 0.1, 0.2, 0.4, 0.8)]
    peers += [Candidate("FasterCache", f"skip={k}", False, peer=f"peer:faster-cache:skip={k}") for k in (2, 4)]
    peers += [Candidate("PAB", f"skip={k}", False, peer=f"peer:pab:skip={k}:low=0:high=1000") for k in (2, 4)]
    for cal in ("none", "taylorseer"):
        peers += [Candidate(f"cache-dit DBCache ({cal})", f"t={t}", False,
                            peer=f"peer:cache-dit:threshold={t}:calibrator={cal}:warmup=3")
                  for t in (0.2, 0.4, 0.8)]
    if family.startswith(("dit", "pixart", "flux", "wan")):  # the scale study's token-level curves
        ours += scale_candidates()
    if grid == "core":
        token_curves = {c.curve for c in scale_candidates()} | {"tokencache DuCa + Taylor 1"}

        def keep(c: Candidate) -> bool:
            if c.curve in CORE_LABELS:
                return CORE_LABELS[c.curve] is None or c.label in CORE_LABELS[c.curve]
            return c.curve in token_curves
        ours, peers = [c for c in ours if keep(c)], [c for c in peers if keep(c)]
    if quick:
        ours = ours[::3]
        peers = peers[::3]
    return _interleave(ours, peers)


def unet_scale_candidates() -> list[Candidate]:
    """DaTo as a controlled change of DeepCache-like for the scale study: the same uniform full-step schedules
    with the top level's self-attention pruned (``r=0.4``, patch 2), and pruning alone (every step full)."""
    ours = [Candidate("DaTo (reuse)", f"N={k},r=0.4", True,
                      tc.DaToConfig(cache_plan=["full" if i % k == 0 else 1 for i in range(50)], prune_ratio=0.4,
                                    forecast="none")) for k in (2, 3, 5)]
    ours += [Candidate("DaTo pruning only", f"r={r}", True, tc.DaToConfig(cache_plan=["full"] * 50, prune_ratio=r))
             for r in (0.4, 0.6)]
    ours += [Candidate("tokencache DaTo + Taylor 1", "N=3,r=0.4", True,
                       tc.DaToConfig(cache_plan=["full" if i % 3 == 0 else 1 for i in range(50)], prune_ratio=0.4,
                                     forecast="taylor"))]
    return ours


def unet_candidates(family: str, steps: int, quick: bool, grid: str = "full") -> list[Candidate]:
    if family == "unet2":  # tier 2: the scale study's grid (the tier-1 searched strategies are not for it)
        ours = [Candidate("DeepCache-like (reuse)", f"N={k}", True, tc.DeepCacheConfig(interval=k, branch=0))
                for k in (2, 3, 4, 6)]
        ours += [Candidate("tokencache DeepCache-like + Taylor 1", f"N={k}", True,
                           tc.DeepCacheConfig(interval=k, branch=0, forecast="taylor")) for k in (2, 3, 4, 6)]
        ours += [Candidate("tokencache DaTo presets (Taylor 1)", p, True, tc.DaToConfig.preset(p))
                 for p in ("balanced", "fast")]
        ours += unet_scale_candidates()
        peers = [Candidate("DeepCache", f"N={k}", False, peer=f"peer:deepcache:interval={k}:branch=0")
                 for k in (2, 4)]
        peers += [Candidate("tomesd", "r=0.5", False, peer="peer:tomesd:ratio=0.5")]
        if quick:
            ours, peers = ours[::3], peers[::2]
        return _interleave(ours, peers)
    ours = [Candidate("DeepCache-like (reuse)", f"N={k}", True, tc.DeepCacheConfig(interval=k, branch=0))
            for k in (2, 4, 8)]
    ours += [Candidate("tokencache DeepCache-like + Taylor 1", f"N={k}", True,
                       tc.DeepCacheConfig(interval=k, branch=0, forecast="taylor")) for k in (2, 3, 4, 6, 8)]
    ours += [Candidate("tokencache DeepCache-like + FoCa", "N=4", True,
                       tc.DeepCacheConfig(interval=4, branch=0, forecast="foca"))]
    for name, path in shipped_strategies().items():
        if name.startswith("reference_unet_dato") and not name.endswith("quality"):
            cfg = tc.load_config(path)
            curve = "DaTo searched (reuse)" if cfg.forecast == "none" else f"tokencache DaTo searched ({cfg.forecast})"
            ours.append(Candidate(curve, name.rsplit("_", 1)[-1], True, cfg))
    ours += [Candidate("tokencache DaTo presets (Taylor 1)", p, True, tc.DaToConfig.preset(p))
             for p in ("balanced", "fast")]
    peers = [Candidate("DeepCache", f"N={k}", False, peer=f"peer:deepcache:interval={k}:branch=0")
             for k in (2, 3, 4, 6, 8)]
    peers += [Candidate("tomesd", f"r={r}", False, peer=f"peer:tomesd:ratio={r}") for r in (0.3, 0.5, 0.7)]
    peers += [Candidate("PAB", f"skip={k}", False, peer=f"peer:pab:skip={k}:low=0:high=1000") for k in (2, 4)]
    ours += unet_scale_candidates()
    if quick:
        ours = ours[::3]
        peers = peers[::2]
    return _interleave(ours, peers)


def _interleave(a: list[Candidate], b: list[Candidate]) -> list[Candidate]:
    """Alternate ours and peers, so slow drift of the machine touches both alike."""
    out: list[Candidate] = []
    for i in range(max(len(a), len(b))):
        out += a[i:i + 1] + b[i:i + 1]
    return out


def fd_of(images: torch.Tensor, clf: Any, real_feats: torch.Tensor) -> float:
    return float(frechet_distance(clf.features(classified_frame(images).float()), real_feats))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", required=True, choices=("unet", "dit", "pixart", "flux", "wan", *zoo.TIER2_FAMILIES))
    ap.add_argument("--grid", choices=("full", "core"), default="full",
                    help="core: a trimmed grid (CORE_LABELS plus the scale study's token-level curves)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=5, help="noise seeds (one batch each; >= 3)")
    ap.add_argument("--per-seed", type=int, default=100,
                    help="images per seed (a multiple of 10; of 26 for the tier-2 families, which sample letters)")
    ap.add_argument("--fd-sets", type=int, default=3, help="independent baseline seed sets for FD's spread")
    ap.add_argument("--baseline-every", type=int, default=1, help="time a baseline batch before every k-th candidate")
    ap.add_argument("--quick", action="store_true", help="a third of the grid (smoke run)")
    ap.add_argument("--only", default="", help="comma-separated substrings: run only candidates whose key matches")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    quiet_notices()  # as the CLI: PixArt's clean_caption notice once per batch drowns the progress
    if args.seeds < 3 and not args.quick:
        raise SystemExit(f"--seeds={args.seeds} is invalid; allowed: >= 3 (the protocol shows the spread)")
    tier = zoo.family_tier(args.family)
    classes = 10 if tier == 1 else len(zoo.CLASSES)
    if args.per_seed % classes:
        raise SystemExit(f"--per-seed={args.per_seed} is invalid; allowed: a multiple of {classes} (balanced classes)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"frontier_{args.family}{'_quick' if args.quick else ''}.json"
    state: dict[str, Any] = json.loads(path.read_text()) if args.resume and path.exists() else {}
    if state:  # a resumed run must sample what the rows it extends sampled
        done = state["settings"]
        for flag, asked, ran in (("steps", args.steps, done["steps"]), ("seeds", args.seeds, len(done["seeds"])),
                                 ("per-seed", args.per_seed, done["per_seed"])):
            if asked != ran:
                raise SystemExit(f"--{flag}={asked} is invalid with --resume; allowed: {ran} (what {path} ran with)")
    torch.set_grad_enabled(False)  # after the argument checks: a refused call leaves the caller's mode alone
    make = unet_candidates if args.family.startswith("unet") else transformer_candidates
    cands = make(args.family, args.steps, args.quick, args.grid)
    if args.only:
        cands = [c for c in cands if any(s in c.key for s in args.only.split(","))]

    pipe = zoo.load(args.family)
    clf = zoo.load_classifier(tier=tier)
    x_test = load_digits_split()[2] if tier == 1 else zoo.glyph_split(**GLYPH_REFERENCE)[2]
    real = clf.features(x_test)
    seeds = list(range(args.seeds))
    works = {s: reference_workload(args.family, steps=args.steps, batch=args.per_seed, seed=s, pipe=pipe)
             for s in seeds}
    digits = torch.tensor([i % classes for i in range(args.per_seed)] * len(seeds))
    runs = Runs(works[0].denoiser, torch.device("cpu"))
    works[0].generate()  # warm-up

    if "baseline" not in state:
        base_out, base_t = {}, []
        for s in seeds:
            m = runs.run(works[s], "baseline", None)
            base_out[s] = m.out
            base_t.append(m.e2e_s)
        fd_sets = []
        for j in range(1, args.fd_sets):
            imgs = [reference_workload(args.family, steps=args.steps, batch=args.per_seed, seed=1000 * j + s,
                                       pipe=pipe).generate() for s in seeds]
            fd_sets.append(fd_of(torch.cat(imgs), clf, real))
        allb = torch.cat([base_out[s] for s in seeds])
        fd0 = fd_of(allb, clf, real)
        state["baseline"] = {"e2e_s": base_t, "fd": fd0, "fd_sets": [fd0, *fd_sets],
                             "accuracy": float((clf(classified_frame(allb)).argmax(-1) == digits).float().mean())}
        torch.save(base_out, out / f".frontier_{args.family}_baseline.pt")
        state["settings"] = {"steps": args.steps, "seeds": seeds, "per_seed": args.per_seed,
                             "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_name()}
        run, base_times = 0, state["baseline"]["e2e_s"]
    else:  # a resumed invocation times its own baselines: its rows' speedups are against those alone
        state["baseline"].setdefault("resumed", []).append([])
        run, base_times = len(state["baseline"]["resumed"]), state["baseline"]["resumed"][-1]
    base_path = out / f".frontier_{args.family}_baseline.pt"
    if base_path.exists():
        base_out = torch.load(base_path)
        if run:
            base_times += [runs.run(works[s], "baseline", None).e2e_s for s in seeds]
    else:  # resumed without the cached outputs: regenerate them (seeded, so identical)
        base_out = {}
        for s in seeds:
            m = runs.run(works[s], "baseline", None)
            base_out[s] = m.out
            base_times.append(m.e2e_s)
        torch.save(base_out, base_path)
    rows: dict[str, Any] = state.setdefault("rows", {})
    for i, c in enumerate(cands):
        if c.key in rows:
            continue
        if i % args.baseline_every == 0:  # alternate with the baseline
            base_times.append(runs.run(works[seeds[i % len(seeds)]], "baseline", None).e2e_s)
        row: dict[str, Any] = {"curve": c.curve, "label": c.label, "ours": c.ours, "peer": c.peer,
                               "config": c.config.to_dict() if c.config is not None else None, "run": run,
                               "base_idx": len(base_times) - 1}
        try:
            imgs, times, psnrs, macs, cache = [], [], [], [], []
            for s in seeds:
                m = runs.run(works[s], c.peer or c.key, c.config)
                imgs.append(m.out)
                times.append(m.e2e_s)
                psnrs.append(float(psnr(m.out, base_out[s])))
                if m.summary is not None:
                    macs.append(m.summary.macs_ratio)
                    cache.append(m.summary.cache_bytes)
            allc = torch.cat(imgs)
            row.update(e2e_s=times, psnr=psnrs, fd=fd_of(allc, clf, real), macs_ratio=macs[0] if macs else None,
                       cache_bytes=max(cache) if cache else None,
                       accuracy=float((clf(classified_frame(allc)).argmax(-1) == digits).float().mean()))
        except Exception as e:  # an error row, never a silent skip
            row["error"] = f"{type(e).__name__}: {e}"
        rows[c.key] = row
        path.write_text(json.dumps(state, indent=1))
        print(f"[{i + 1}/{len(cands)}] {c.key}: {summarise(row, state['baseline'])}", flush=True)
        gc.collect()
    runs.close()
    path.write_text(json.dumps(state, indent=1))
    report(state, args.family, out, suffix="_quick" if args.quick else "")
    return 0


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or ``platform.processor()`` where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "CPU"


def _sd(values: list[float]) -> float:
    """Spread over seeds (sample standard deviation); NaN when a value is infinite (identical output)."""
    return statistics.stdev(values) if all(v < float("inf") for v in values) else float("nan")


def baseline_times(row: dict, baseline: dict) -> list[float]:
    """The baseline timings a row is compared with: those of the invocation that ran it.

    Rows of the first invocation (``run`` 0 or absent) use ``baseline["e2e_s"]``; a ``--resume`` invocation
    times its own baselines (``baseline["resumed"][run - 1]``), so a later run on a differently loaded
    machine does not move the speedups already measured.
    """
    run = row.get("run", 0)
    times = baseline["e2e_s"] if run == 0 else baseline["resumed"][run - 1]
    if "base_idx" in row:  # the baselines timed just before and just after it: the machine drifts over hours
        return times[row["base_idx"]:row["base_idx"] + 2]
    return times


def speedup(row: dict, baseline: dict) -> float:
    return statistics.median(baseline_times(row, baseline)) / statistics.median(row["e2e_s"])


def summarise(row: dict, baseline: dict) -> str:
    if "error" in row:
        return row["error"]
    p = row["psnr"]
    return (f"{speedup(row, baseline):.2f}x, PSNR {statistics.mean(p):.2f} ± {_sd(p):.2f} dB, "
            f"FD {row['fd']:.2f}, acc {row['accuracy']:.1%}" + (f", MACs {row['macs_ratio']:.3f}"
                                                                 if row.get("macs_ratio") else ""))


def report(state: dict, family: str, out: Path, suffix: str = "") -> dict:
    """Markdown table, frontier comparison and plot from the stored state."""
    base = state["baseline"]
    rows = {k: r for k, r in state["rows"].items() if "error" not in r}
    pts: dict[str, list[tuple[float, float]]] = {}
    ours_pts: list[tuple[float, float]] = []
    for r in rows.values():
        p = (speedup(r, base), statistics.mean(r["psnr"]))
        r["_xy"] = p
        pts.setdefault(r["curve"], []).append(p)
        if r["ours"]:
            ours_pts.append(p)
    peer_pts = {c: p for c, p in pts.items() if not any(r["ours"] for r in rows.values() if r["curve"] == c)}
    cmp_rows = compare_at(ours_pts, peer_pts, SPEEDS)
    fd_sets = base["fd_sets"]
    fd_hi = max(fd_sets)

    def at_least(points_of: list[dict], s: float) -> dict | None:
        """The frontier point that is the slowest among those at least ``s`` fast (what you would pick)."""
        front = set(pareto_front([r["_xy"] for r in points_of]))
        ok = [r for r in points_of if r["_xy"] in front and r["_xy"][0] >= s]
        return min(ok, key=lambda r: r["_xy"][0]) if ok else None

    ours_rows = [r for r in rows.values() if r["ours"]]
    peer_rows = [r for r in rows.values() if not r["ours"]]
    st = state["settings"]
    b_t = base["e2e_s"]
    resumed = "".join(f"; resumed run {k}: {statistics.median(t):.2f} s, median of {len(t)}, its rows' speedups "
                      "are against it" for k, t in enumerate(base.get("resumed", []), 1) if t)
    solver = SOLVERS[family.rstrip("2")]
    lines = [f"**Fair protocol, reference {family}** ({st['steps']} {solver}, {len(st['seeds'])} seeds x "
             f"{st['per_seed']} images = {len(st['seeds']) * st['per_seed']} per configuration, float32, "
             f"{st.get('cpu', 'CPU')} "
             f"{st['threads']} threads, torch {st['torch']}; baseline {statistics.median(b_t):.2f} s per batch "
             f"(median of {len(b_t)} alternating runs, {min(b_t):.2f}-{max(b_t):.2f}{resumed}); baseline FD "
             f"{base['fd']:.2f}, over {len(fd_sets)} independent seed sets {min(fd_sets):.2f}-{fd_hi:.2f}; "
             f"baseline accuracy {base['accuracy']:.1%})", "",
             *([f"Run notes: {'; '.join(state['notes'])}.", ""] if state.get("notes") else []),
             "| speed | ours: PSNR on the frontier (dB) | best peer frontier (dB) | margin | our config at >= speed: "
             "speedup, PSNR ± seed spread, FD, accuracy | best peer's config at >= speed |",
             "|---|---|---|---|---|---|"]
    for c in cmp_rows:
        s = c["speed"]
        mine, theirs = at_least(ours_rows, s), at_least([r for r in peer_rows if r["curve"] == c["best_peer"]], s)

        def cell(r: dict | None) -> str:
            if r is None:
                return "not reached"
            p = r["psnr"]
            within = " (within the baseline's spread)" if r["fd"] <= fd_hi else ""
            return (f"{r['curve']} {r['label']}: {r['_xy'][0]:.2f}x, {statistics.mean(p):.1f} ± "
                    f"{_sd(p):.1f} dB, FD {r['fd']:.1f}{within}, {r['accuracy']:.1%}")

        def fmt(v: float | None, spec: str = ".1f") -> str:
            return "not reached" if v is None else format(v, spec)

        margin = "" if c["margin"] is None else fmt(c["margin"], "+.1f")
        lines.append(f"| {s:g}x | {fmt(c['ours'])} | {fmt(c['best_peer_value'])} ({c['best_peer'] or '-'}) | "
                     f"{margin} | {cell(mine)} | {cell(theirs)} |")
    lines += ["", "| curve | setting | e2e speedup | MACs ratio | PSNR mean ± sd over seeds (dB) | FD | accuracy |",
              "|---|---|---|---|---|---|---|"]
    for r in sorted(state["rows"].values(), key=lambda r: (not r["ours"], r["curve"], r["label"])):
        if "error" in r:
            lines.append(f"| {r['curve']} | {r['label']} | error: {r['error']} | | | | |")
            continue
        p = r["psnr"]
        macs = "" if r.get("macs_ratio") is None else format(r["macs_ratio"], ".3f")
        lines.append(f"| {r['curve']} | {r['label']} | {speedup(r, base):.2f}x | {macs} | {statistics.mean(p):.2f} ± "
                     f"{_sd(p):.2f} | {r['fd']:.2f} | {r['accuracy']:.1%} |")
    (out / f"frontier_{family}{suffix}.md").write_text("\n".join(lines) + "\n")
    plot(rows, pts, cmp_rows, family, out / f"frontier_{family}{suffix}.png", fd_sets)
    print("\n".join(lines[:len(SPEEDS) + 4]))
    return {"comparison": cmp_rows}


def plot(rows: dict, pts: dict, cmp_rows: list, family: str, path: Path, fd_sets: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5))
    ours = {r["curve"] for r in rows.values() if r["ours"]}
    colours = plt.get_cmap("tab20")  # up to 20 curves, none sharing a colour
    for i, (curve, p) in enumerate(sorted(pts.items())):
        front = pareto_front(p)
        style = "-" if curve in ours else "--"
        line = a.plot([x for x, _ in front], [y for _, y in front], style, marker="o", ms=3, label=curve,
                      color=colours(i % 20))[0]
        a.scatter([x for x, _ in p], [y for _, y in p], s=6, color=line.get_color(), alpha=0.4)
        rs = sorted((r for r in rows.values() if r["curve"] == curve), key=lambda r: r["_xy"][0])
        b.plot([r["_xy"][0] for r in rs], [r["fd"] for r in rs], style, marker="o", ms=3, color=line.get_color())
    b.axhspan(min(fd_sets), max(fd_sets), color="grey", alpha=0.25, label="uncached, resampled")
    a.set_xlabel("measured end-to-end speedup (x)")
    a.set_ylabel("PSNR vs uncached (dB), mean over seeds")
    b.set_xlabel("measured end-to-end speedup (x)")
    b.set_ylabel("FD to real digits (classifier features)")
    a.set_title(f"reference {family}: fidelity frontiers (solid: tokencache)")
    b.set_title("distribution quality")
    a.legend(fontsize=6)
    b.legend(fontsize=7)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
