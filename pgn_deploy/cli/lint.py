"""pgn-lint: TensorRT/ONNX Runtime readiness and float16 range of a grafted model, on the CPU."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from pgn_deploy.cli.common import EXIT_FAILED, emit, make_parser, run_cli


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pgn-lint``."""
    parser = make_parser(
        "pgn-lint",
        "Check a grafted model against the TensorRT ONNX parser's op table (or ONNX Runtime), "
        "its shapes and types, that the PGN subgraph is float32, and with --calib the float16 "
        "overflow margin of every network tensor. Exit 1 when an error is found.",
    )
    parser.add_argument("model", help="grafted ONNX model (fp32, fp16 or bf16)")
    parser.add_argument("--target", choices=("trt", "ort"), default="trt", help="runtime to check for (default trt)")
    parser.add_argument("--calib", nargs="+", metavar="IMAGES", help="calibration images (files or folders)")
    parser.add_argument("--max-images", type=int, metavar="N", help="use at most N calibration images")
    parser.add_argument("--warn-margin", type=float, default=4.0, metavar="X",
                        help="warn when a tensor comes within X times of the float16 limit (default 4)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``pgn-lint``: parse ``argv`` (default ``sys.argv[1:]``), run, return the exit status."""
    parser = build_parser()

    def command(args: argparse.Namespace) -> int:
        from pgn_deploy.engines.lint import lint_model

        report = lint_model(args.model, target=args.target, calib=args.calib,
                            max_images=args.max_images, warn_margin=args.warn_margin)
        emit(args, report)
        return EXIT_FAILED if report.errors else 0

    return run_cli(parser, command, argv)


if __name__ == "__main__":
    raise SystemExit(main())
