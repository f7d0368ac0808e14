"""The ``tokencache`` command: ``demo``, ``generate``, ``eval``, ``bench``, ``search``.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; this file only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "demo": ("tokencache.demo", "run every method on the bundled reference models and report speed and quality"),
    "generate": ("tokencache.generate", "generate images for prompts/class labels with any method (resumable)"),
    "eval": ("tokencache.evaluate", "FID/FD, CLIP score and fidelity of generated folders"),
    "bench": ("tokencache.bench", "speed, MACs and memory of methods side by side with peers"),
    "search": ("tokencache.search", "NSGA-II search of per-step strategies"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokencache", description="Training-free acceleration of diffusers")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (mod_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        try:
            mod = importlib.import_module(mod_name)
            mod.add_arguments, mod.run  # noqa: B018
        except (ImportError, AttributeError) as e:  # a subcommand that cannot load says why when used
            p.set_defaults(_missing=f"tokencache {name} is unavailable: {e}")
            continue
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "_missing", None):
        print(args._missing, file=sys.stderr)
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
