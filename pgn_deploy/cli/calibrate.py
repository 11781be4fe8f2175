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
    parser.add_argument("-o", "--output", metavar="OUT.onnx", help="write the calibrated copy to this file")
    parser.add_argument("--in-place", action="store_true", help="rewrite MODEL itself (instead of -o)")
    parser.add_argument("--normalize", action="store_true",
                        help="also add the in-graph <map>_norm (in-distribution percentile rank) and ood_mask outputs; "
                             "a model that has them gets them rebuilt from the new quantiles anyway")
    parser.add_argument("--force", action="store_true", help="overwrite -o if it exists")
    parser.add_argument("--backend", default="auto", choices=["auto", *backend_names()])
    return parser


def _command(args: argparse.Namespace) -> int:
    report = calibrate(args.model, args.images, args.output, in_place=args.in_place, force=args.force,
                       normalize=args.normalize, backend=args.backend)
    emit(args, report)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``pgn-calibrate``: parse ``argv`` (default ``sys.argv[1:]``), run, return the exit status."""
    return run_cli(build_parser(), _command, argv)


if __name__ == "__main__":
    sys.exit(main())
