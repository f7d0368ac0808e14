"""``tokencache bench``: the command line of the benchmark (arguments in :mod:`tokencache.harness.args`)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..args import add_bench_arguments

add_arguments = add_bench_arguments
#: presets benchmarked when ``--methods`` is not given (of every registered method that applies)
DEFAULT_PRESETS = ("balanced",)


def default_methods(family: str) -> list[str]:
    """``method:preset`` specs benchmarked by default on a model family: derived from the config registry."""
    from ..registry import method_specs

    return method_specs(family, DEFAULT_PRESETS)


def parse_method(spec: str) -> Any:
    """``method:preset`` (e.g. ``dato:fast``; a bare method: ``balanced``) or a config file path -> config."""
    from ..registry import parse_method as parse

    return parse(spec, what="bench method=")


def _configs(specs: list[str]) -> dict[str, Any]:
    """Row name -> config; a config file's row is named by its file stem."""
    from ..registry import spec_label

    names = [spec_label(s) for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"bench --methods={','.join(specs)!r} names a config twice (rows {names}); allowed: "
                         "distinct names")
    return {n: parse_method(s) for n, s in zip(names, specs)}


def _check_args(args: argparse.Namespace) -> None:
    for name, low in (("steps", 1), ("repeats", 1), ("warmup", 0), ("batch", 1), ("resolution", 8)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise ValueError(f"bench --{name}={value} is invalid; allowed: an integer >= {low}")
    if args.reference and args.resolution is not None:
        raise ValueError(f"bench --resolution={args.resolution} is not allowed with --reference (the zoo models "
                         "are 16x16; tier 2 32x32)")


def _workload(args: argparse.Namespace, dtype: Any) -> tuple[Any, str, str]:
    """The workload the arguments ask for, its mode and a title prefix."""
    from .. import shapes
    from ..pipeline_io import load_pipeline
    from ..shapes import MODELS
    from .workloads import GUIDANCE, REFERENCE_GUIDANCE, bare_workload, checkpoint_workload, reference_workload

    _check_args(args)
    if args.reference:
        batch = args.batch or 10
        guidance = REFERENCE_GUIDANCE if args.guidance is None else args.guidance
        work = reference_workload(args.reference, steps=args.steps, batch=batch, guidance=guidance,
                                  device=args.device, dtype=dtype)
        from ... import zoo

        side = 16 if zoo.family_tier(args.reference) == 1 else 32  # tier 2: glyphs at 32x32
        what = f"reference {args.reference} (trained zoo pipeline) {side}x{side}, batch {batch}, CFG {guidance}"
        return work, "reference", what
    batch = args.batch or 1
    if args.model in MODELS:
        model, family = shapes.build_model(args.model, dtype, args.device)
        res = args.resolution or MODELS[args.model][2]
        guidance = args.guidance if args.guidance is not None else GUIDANCE[family]
        sd_latents = family in ("unet", "dit", "pixart", "latte")  # 4-channel latents the SD VAE decodes
        work = bare_workload(model, resolution=res, steps=args.steps, batch=batch, guidance=guidance,
                             vae=shapes.build_vae(dtype, args.device) if sd_latents else None)
        e2e = "loop + SD-VAE decode" if sd_latents else "loop only"
        what = (f"{args.model} {shapes.size_label(family, res)} (random weights; e2e = {e2e}), batch {batch}, "
                f"CFG {guidance}")
        return work, "shapes", what
    path = Path(args.model)
    if not path.exists():
        raise FileNotFoundError(f"--model {args.model!r}: no such checkpoint directory; allowed: {sorted(MODELS)} "
                                "or an existing diffusers checkpoint directory")
    pipe = load_pipeline(model=str(path), device=args.device, dtype=args.dtype)
    work = checkpoint_workload(pipe, steps=args.steps, batch=batch, guidance=args.guidance,
                               resolution=args.resolution)
    return work, "checkpoint", f"{args.model} (whole pipeline), batch {batch}, CFG {work.cfg and 'on' or 'off'}"


def run(args: argparse.Namespace) -> int:
    """Entry point of ``tokencache bench``."""
    import torch

    from ..peers import parse_peer
    from ..shapes import model_family
    from .report import plot, print_table, to_markdown
    from .runner import nearest_peers, run_workload

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    specs = [s for s in args.methods.split(",") if s] if args.methods is not None else None
    configs = _configs(specs) if specs is not None else None  # bad specs fail before any model is built
    for p in args.peers.split(","):
        if p:
            try:
                parse_peer(p)
            except ValueError as e:
                raise ValueError(f"bench --peers={args.peers!r}: {e}") from None
    dtype = getattr(torch, args.dtype)
    work, mode, what = _workload(args, dtype)
    if configs is None:
        configs = _configs(default_methods(model_family(work.denoiser)))
    peers = [s for s in args.peers.split(",") if s]
    rows = run_workload(work, configs, peers=peers, repeats=args.repeats, warmup=args.warmup, compile=args.compile,
                        progress=args.json_out != "-")
    if mode != "shapes":  # PSNR says nothing on random weights
        nearest_peers(rows)
    title = (f"{what}, {args.steps} steps, {args.dtype}, {args.device}, torch {torch.__version__}, "
             f"{args.repeats} repeats")
    data = {"title": title, "mode": mode, "rows": [asdict(r) for r in rows]}
    if args.json_out == "-":
        print(json.dumps(data, indent=2))
    else:
        print_table(rows, title)
    if args.json_out and args.json_out != "-":
        Path(args.json_out).write_text(json.dumps(data, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(to_markdown(rows, f"**{title}**\n") + "\n")
    if args.plot:
        plot(rows, args.plot, title)
    return 0 if all(not r.error for r in rows) else 1
