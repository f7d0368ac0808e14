"""Command-line arguments of ``demo``, ``generate``, ``eval`` and ``bench``: light, no torch or diffusers.

``tokencache --help`` and every subcommand's ``--help`` build their parsers from this module (and
``tokencache.search.cli``) only; the modules that run a subcommand are imported when it runs.
Method names are checked against the config registry when the command runs, and an unknown one is
answered with the registered names.
"""

from __future__ import annotations

import argparse

#: the zoo's trained reference families (``tokencache.zoo.ALL_FAMILIES``: tier 1, then tier 2; a test keeps
#: the two equal)
REFERENCE_FAMILIES = ("unet", "dit", "pixart", "flux", "wan", "dit2", "unet2", "pixart2", "flux2")
DTYPES = ("float32", "float16", "bfloat16")
METHOD_SPEC_HELP = "METHOD[:PRESET] of a registered method (e.g. dato:fast) or a config file (.yaml/.yml/.json)"


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``tokencache generate``."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="local diffusers checkpoint folder (loaded with local_files_only=True)")
    src.add_argument("--reference", choices=REFERENCE_FAMILIES, help="a tiny reference model from tokencache.zoo")
    parser.add_argument("--prompts", required=True, help=".txt (one per line), .csv (prompt/class_label) or .json")
    parser.add_argument("--out", required=True, help="output folder for PNGs and manifest.jsonl")
    parser.add_argument("--method", default=None,
                        help="a registered method name, or none (default); an unknown name lists them")
    parser.add_argument("--preset", default=None, help="a preset of the method, e.g. quality, balanced or fast")
    parser.add_argument("--config", default=None, help="a config YAML/JSON (e.g. exported by `tokencache search`)")
    parser.add_argument("--seeds", default=None, help="seeds for every prompt, e.g. '0-3,10' (default: --seed + index)")
    parser.add_argument("--seed", type=int, default=0, help="base seed: image i gets seed + i (without --seeds)")
    parser.add_argument("--images-per-prompt", type=int, default=1)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--guidance-scale", type=float, default=None)
    parser.add_argument("--device", default=None, help="torch device (default: accelerate's, else cpu)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")


FEATURES = ("digits", "glyphs", "pixels", "inception")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``tokencache eval``."""
    parser.add_argument("folders", nargs="+", help="generated image folders (or .npz statistics for FD)")
    parser.add_argument("--baseline", default=None, help="folder of same-named reference images (PSNR/SSIM/rel-L1)")
    parser.add_argument("--fd-ref", default=None, help="folder or .npz statistics to compute FD/FID against")
    parser.add_argument("--features", choices=FEATURES, default="digits", help="feature extractor for FD")
    parser.add_argument("--inception-weights", default=None, help="local Inception file for --features inception")
    parser.add_argument("--clip-model", default=None, help="local CLIP folder (save_pretrained) for the CLIP score")
    parser.add_argument("--save-stats", default=None, help="write the (single) folder's feature statistics here")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``tokencache demo``."""
    p.add_argument("--out", default="tokencache-demo", help="output folder (default: tokencache-demo)")
    p.add_argument("--per-digit", type=int, default=2, help="images per digit and family (default 2)")
    p.add_argument("--steps", type=int, default=50, help="denoising steps (default 50)")
    p.add_argument("--families", default=None, help=f"comma-separated subset of {','.join(REFERENCE_FAMILIES)}")
    p.add_argument("--quick", action="store_true", help="1 image per digit and 10 steps (a smoke run)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``tokencache bench``."""
    from .peers import PEERS
    from .shapes import MODELS

    where = p.add_mutually_exclusive_group()
    where.add_argument("--model", default="sd15",
                       help=f"one of {sorted(MODELS)} (random weights) or a local diffusers checkpoint path")
    where.add_argument("--reference", default=None, choices=REFERENCE_FAMILIES,
                       help="time a trained zoo pipeline end to end (PSNR and accuracy are meaningful)")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated {METHOD_SPEC_HELP} (default: the 'balanced' preset of every "
                        "registered method that runs on the model's family)")
    p.add_argument("--peers", default="", help=f"comma-separated peers to run alongside: {sorted(PEERS)}, each with "
                                                 "optional knobs, e.g. peer:taylorseer:interval=3:order=2")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--resolution", type=int, default=None, help="image side (not for --reference: 16 px)")
    p.add_argument("--batch", type=int, default=None, help="images per generation (default 1; 10 for --reference)")
    p.add_argument("--guidance", type=float, default=None,
                   help="CFG scale (default: 7.5 UNets, 1.5 DiT/PixArt shapes, the pipeline's for checkpoints, "
                        "3.0 for --reference)")
    p.add_argument("--dtype", default="float32", choices=DTYPES)
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", dest="json_out", default=None, help="write rows as JSON to this path ('-' = stdout)")
    p.add_argument("--markdown", default=None, help="write a markdown table to this path")
    p.add_argument("--plot", default=None, help="write a speedup-vs-PSNR PNG to this path")
