"""The ``tokencache`` command: ``demo``, ``generate``, ``eval``, ``bench``, ``search``.

Building the parser imports only light modules (no torch, no diffusers): each subcommand names the
function that adds its arguments and the function that runs it, and the second one is imported only
when the subcommand runs. Every user error (a bad value, a missing file, a method that does not run on
the model, a bad storage URL) ends in one line ``error: ...`` on stderr and exit code 2; ``--debug``
shows the traceback instead. Third-party notices that are not about the user's input are filtered
out unless ``--verbose``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
import warnings
from typing import Any, NoReturn

#: subcommand -> (arguments function, run function, one-line help); functions as "module:name"
SUBCOMMANDS = {
    "demo": ("tokencache.harness.args:add_demo_arguments", "tokencache.harness.demo:run",
             "run every method on the bundled reference models and report speed and quality"),
    "generate": ("tokencache.harness.args:add_generate_arguments", "tokencache.harness.generate:run",
                 "generate images for prompts/class labels with any method (resumable)"),
    "eval": ("tokencache.harness.args:add_eval_arguments", "tokencache.harness.evaluate:run",
             "FID/FD, CLIP score and fidelity of generated folders"),
    "bench": ("tokencache.harness.args:add_bench_arguments", "tokencache.harness.bench.cli:run",
              "speed, MACs and memory of methods side by side with peers"),
    "search": ("tokencache.search.cli:add_arguments", "tokencache.search.cli:run",
               "NSGA-II search of per-step strategies"),
}

#: third-party notices that say nothing about the user's input (matched against the message)
NOTICES = (
    r".*requires torchvision \(not installed\)",  # transformers: image processors fall back to PIL
    r".*clean_caption=True.* requires the Beautiful Soup",  # PixArt: the zoo's prompts need no cleaning
    r".*clean_caption=True.* requires the ftfy",
    r"Setting `clean_caption` to False",
    r".*should be kept in float32",  # diffusers: fp32 modules of a pipeline kept in float32
    r".*`_keep_in_fp32_modules`",
    r"An error occurred while trying to fetch ",  # diffusers, a missing safetensors file: the error that follows
    r"Defaulting to unsafe serialization",  # says which weights are missing
)
#: loggers whose handlers get the notice filter
NOTICE_LOGGERS = ("diffusers", "transformers")


def _load(ref: str) -> Any:
    mod, _, name = ref.partition(":")
    return getattr(importlib.import_module(mod), name)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _add_globals(p: argparse.ArgumentParser, top: bool) -> None:
    default = False if top else argparse.SUPPRESS  # a subcommand's copy never overrides the top-level one
    p.add_argument("--debug", action="store_true", default=default, help="show tracebacks of errors")
    p.add_argument("--verbose", action="store_true", default=default,
                   help="show third-party notices (diffusers, transformers) too")


def build_parser() -> argparse.ArgumentParser:
    """The full parser; imports no torch or diffusers."""
    parser = _Parser(prog="tokencache", description="Training-free acceleration of diffusers")
    _add_globals(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (add_ref, run_ref, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_globals(p, top=False)
        _load(add_ref)(p)
        p.set_defaults(_run=run_ref)
    return parser


class NoticeFilter(logging.Filter):
    """Drops log records whose message matches one of :data:`NOTICES`."""

    def __init__(self, patterns: tuple[str, ...] = NOTICES) -> None:
        super().__init__()
        self._re = re.compile("|".join(f"(?:{p})" for p in patterns), re.DOTALL)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return not self._re.match(record.getMessage())
        except Exception:  # a malformed record is not ours to drop
            return True


def quiet_notices() -> None:
    """Filter :data:`NOTICES` out of the diffusers and transformers log handlers and out of ``warnings``,
    and turn off those libraries' checkpoint-loading bars.

    Only these messages are dropped; log levels, and everything the user's own code logs, stay as they are.
    """
    for pattern in NOTICES:
        warnings.filterwarnings("ignore", message=pattern)
    filt = NoticeFilter()
    for name in NOTICE_LOGGERS:
        lib = _library_logging(name)
        if lib is not None:
            lib.get_logger()  # configures the library's own handler, which the filter goes on
            lib.disable_progress_bar()  # "Loading pipeline components...": the harness has its own progress
        logger = logging.getLogger(name)
        logger.addFilter(filt)
        for h in logger.handlers:
            if not any(isinstance(f, NoticeFilter) for f in h.filters):
                h.addFilter(filt)
            if isinstance(h, logging.StreamHandler) and getattr(h.stream, "closed", False):
                # main() called in-process again after stderr was swapped (tests, notebooks)
                h.__dict__.pop("flush", None)  # diffusers binds the old stderr's flush to its handler
                h.stream = sys.stderr


def _library_logging(name: str) -> Any:
    try:
        return importlib.import_module(f"{name}.utils.logging")
    except ImportError:  # transformers is optional for some subcommands
        return None


def user_error(e: BaseException) -> str | None:
    """The one-line message of a user error, or ``None`` for anything else (a bug: show the traceback)."""
    mod = type(e).__module__ or ""
    if isinstance(e, KeyError):
        text = str(e.args[0]) if e.args else repr(e)
    elif isinstance(e, (ValueError, TypeError, OSError)) or mod.split(".")[0] in ("yaml", "sqlalchemy", "optuna"):
        text = str(e)
    elif isinstance(e, ImportError) and "DB access module" in str(e):  # optuna: no driver for the storage URL
        text = str(e)
    else:
        return None
    text = " ".join(text.split()) or type(e).__name__
    if mod.split(".")[0] in ("yaml", "sqlalchemy", "optuna"):
        text = f"{type(e).__name__}: {text}"
    return text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    if not args.verbose:
        quiet_notices()
    try:
        return int(_load(args._run)(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        msg = user_error(e)
        if msg is None or args.debug:
            raise
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
