"""pgn-calibrate: measure score-map statistics on in-distribution images, store them in the model."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pgn_deploy.cli.common import emit, make_parser, run_cli
from pgn_deploy.runtime.backends.base import backend_names
from pgn_deploy.runtime.calibrate import calibrate


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pgn-calibrate``."""
    parser = make_parser("pgn-calibrate", "Measure every score map's quantiles on in-distribution images "
                         "and store them in the model's metadata (default thresholds, comparable heatmaps).")
    parser.add_argument("model", help="grafted model (.pgn.onnx) or TensorRT plan (.plan with its .json)")
    parser.add_argument("images", nargs="+", help="in-distribution image files, folders or videos")
    parser.add_argument("-o", "--output", metavar="OUT", help="write a calibrated copy here instead of rewriting MODEL")
    parser.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    parser.add_argument("--backend", default="auto", choices=["auto", *backend_names()])
    return parser


def _command(args: argparse.Namespace) -> int:
    report = calibrate(args.model, args.images, args.output, force=args.force, backend=args.backend)
    emit(args, report)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``pgn-calibrate``: parse ``argv`` (default ``sys.argv[1:]``), run, return the exit status."""
    return run_cli(build_parser(), _command, argv)


if __name__ == "__main__":
    sys.exit(main())
