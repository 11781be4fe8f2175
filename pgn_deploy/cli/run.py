"""pgn-run: segmentation, PGN heatmaps, OoD masks and overlays for images, folders and videos."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pgn_deploy.cli.common import (
    EXIT_FAILED,
    emit,
    finite_number,
    make_parser,
    note,
    run_cli,
    show_progress,
    whole_number,
)
from pgn_deploy.runtime.annotate import AnnotateOptions, annotate
from pgn_deploy.runtime.backends.base import backend_names
from pgn_deploy.runtime.runner import Runtime
from pgn_deploy.runtime.visualize import LAYOUTS


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pgn-run``."""
    parser = make_parser("pgn-run", "Run a grafted model (pgn-export) on images, folders (recursive) and "
                         "videos; write colour segmentation, PGN heatmap, overlay and OoD mask per input.")
    parser.add_argument("model", help="grafted model (.pgn.onnx) or TensorRT plan (.plan with its .json)")
    parser.add_argument("inputs", nargs="+", help="image files, folders or video files")
    parser.add_argument("--out", required=True, help="output folder (created if missing; other files kept)")
    parser.add_argument("--score", help="score map to show and threshold (default: the first PGN map)")
    parser.add_argument("--threshold", type=finite_number,
                        help="OoD threshold (default: the calibrated q0.99; none: no masks)")
    parser.add_argument("--min-area", type=whole_number(0), default=50, help="smallest OoD instance counted (pixels)")
    parser.add_argument("--save-npy", action="store_true", help="also write every score map as <stem>.<map>.npy")
    parser.add_argument("--layout", choices=LAYOUTS, default="stack",
                        help="overlay: segmentation above the heatmap (stack) or beside it (side)")
    parser.add_argument("--backend", default="auto", choices=["auto", *backend_names()])
    parser.add_argument("--threads", type=whole_number(0), default=0, help="CPU threads per inference (0: default)")
    parser.add_argument("--batch", type=whole_number(1), default=8, help="most images per inference call")
    parser.add_argument("--max-pixels", type=whole_number(1),
                        help="skip (and report) frames above this many pixels before inference (default: "
                             "derived from the model's outputs and this host's memory)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    return parser


def _command(args: argparse.Namespace) -> int:
    runtime = Runtime(args.model, args.backend, intra_op_threads=args.threads, max_batch=args.batch)
    note(args, "pgn-run", f"backend {runtime.backend_name}")
    for skipped in runtime.backend_notes:
        note(args, "pgn-run", f"  skipped {skipped}", verbose_only=True)
    options = AnnotateOptions(score=args.score, threshold=args.threshold, save_npy=args.save_npy,
                              layout=args.layout, min_area=args.min_area, force=args.force,
                              max_pixels=args.max_pixels)
    report = annotate(runtime, args.inputs, args.out, options, progress=show_progress(args))
    for failure in report.failed:
        print(f"pgn-run: skipped {failure['error']}", file=sys.stderr)
    emit(args, report)
    return EXIT_FAILED if report.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``pgn-run``: parse ``argv`` (default ``sys.argv[1:]``), run, return the exit status."""
    return run_cli(build_parser(), _command, argv)


if __name__ == "__main__":
    sys.exit(main())
