"""What every pgn-* command shares: one set of flags, one way to fail, one way to print.

Flags on every command: ``--version``, ``--debug`` (tracebacks), ``-q/--quiet`` (no progress
bars, no notes on stderr), ``-v/--verbose`` (extra notes, e.g. which backends were skipped) and,
where a report exists, ``--json``. Conventions: ``-o/--output`` is always a file, ``--out``
always a folder (created when missing); shapes are ``NxCxHxW`` or ``HxW``
(:func:`pgn_deploy.contract.parse_shape`); ``--backend`` is the runtime backend.

A :class:`~pgn_deploy.contract.PGNError` (or a bad path, an interrupted run) is printed as one
line ``<prog>: error: <message>`` on stderr with exit status 2 (1 is kept for "ran, but the
check failed"); the traceback appears only with ``--debug``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pgn_deploy._version import __version__
from pgn_deploy.contract import EXTRAS, PGNError

EXIT_FAILED = 1
EXIT_ERROR = 2

COMMANDS = {
    "export": "Export a checkpoint to ONNX with the PGN maps grafted in",
    "check": "Check a grafted model against PyTorch, or against another build of it",
    "run": "Segmentation, heatmaps, OoD masks and overlays for images, folders and videos",
    "calibrate": "Store in-distribution score statistics in a model",
    "metrics": "SegmentMeIfYouCan metrics of saved score maps",
    "eval": "The paper's tables for a grafted model on a data set",
    "synthroad": "Generate SynthRoad street scenes in the public benchmarks' layouts",
    "build": "Build a TensorRT plan from a grafted model",
    "lint": "TensorRT / ONNX Runtime readiness of a grafted model, checked on the CPU",
    "triton": "Write a Triton model repository",
    "serve": "Serve a grafted model with PyTriton on this host",
    "bench": "Latency, throughput and memory of a grafted model",
    "mine": "Rank many frames by OoD instances, on one machine or a Ray cluster",
}


class Report(Protocol):
    """What a command's API returns: it renders itself as text and as JSON."""

    def to_text(self) -> str:
        """Human-readable lines for the terminal."""

    def to_json(self) -> Any:
        """JSON-ready data for ``--json``."""


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number >= ``minimum`` (else argparse's one-line error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    parse.__name__ = f"whole number >= {minimum}"
    return parse


def finite_number(text: str) -> float:
    """An argparse ``type``: a finite float (``nan`` and ``inf`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def make_parser(prog: str, description: str, json_flag: bool = True) -> argparse.ArgumentParser:
    """An ArgumentParser with the flags every command shares (see the module docstring)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"{prog} (pgn-deploy) {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", help="no progress bars and no notes on stderr")
    loudness.add_argument("-v", "--verbose", action="store_true", help="more notes on stderr")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return parser


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal (CI logs stay clean), never with --quiet or --json."""
    return not args.quiet and not getattr(args, "json", False) and sys.stderr.isatty()


def note(args: argparse.Namespace, prog: str, message: str, verbose_only: bool = False) -> None:
    """One informational line on stderr, unless --quiet (or, for ``verbose_only``, without --verbose)."""
    if args.quiet or (verbose_only and not args.verbose):
        return
    print(f"{prog}: {message}", file=sys.stderr)


def emit(args: argparse.Namespace, report: Report) -> None:
    """Print a report: its JSON with --json, else its own text."""
    if getattr(args, "json", False):
        print_json(report.to_json())
    else:
        print(report.to_text())


def run_cli(
    parser: argparse.ArgumentParser,
    command: Callable[[argparse.Namespace], int | None],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``argv``, run ``command(args)`` and turn errors into one line and an exit code."""
    args = parser.parse_args(argv)
    try:
        return int(command(args) or 0)
    except (PGNError, OSError) as exc:
        if args.debug:
            raise
        message = str(exc) if isinstance(exc, PGNError) else f"{type(exc).__name__}: {exc}"
        print(f"{parser.prog}: error: {message.splitlines()[0] if message else type(exc).__name__}",
              file=sys.stderr)
        return EXIT_ERROR
    except ModuleNotFoundError as exc:  # an optional dependency this path needs
        if args.debug:
            raise
        print(f"{parser.prog}: error: {missing_module_message(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        if args.debug:
            raise
        print(f"{parser.prog}: error: out of memory: the inputs are too large for this host", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


def missing_module_message(exc: ModuleNotFoundError) -> str:
    """One line for a missing optional module: the extra that installs it."""
    module = (exc.name or str(exc)).split(".")[0]
    extra = EXTRAS.get(module)
    if extra is None:
        return f"the Python package {module!r} is not installed"
    return f"this needs the Python package {module!r}, which is not installed; install it with: " \
           f"pip install 'pgn-deploy[{extra}]'"


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str))
