"""What every pgn-* command shares: the --debug/--json flags and error handling.

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
from typing import Any

from pgn_deploy.contract import PGNError

EXIT_FAILED = 1
EXIT_ERROR = 2


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
    """An ArgumentParser with the common ``--debug`` (and ``--json``) flags."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return parser


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
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str))
