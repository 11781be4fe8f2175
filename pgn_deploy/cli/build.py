"""pgn-build: build a grafted ONNX model into a TensorRT plan (needs tensorrt and a GPU)."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from pgn_deploy.cli.common import emit, make_parser, run_cli


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pgn-build``."""
    parser = make_parser(
        "pgn-build",
        "Build MODEL.pgn.onnx into a strongly typed TensorRT plan (precision = what the ONNX "
        "says; make an fp16 model first for an fp16 plan) plus a NAME.plan.json sidecar.",
    )
    parser.add_argument("model", help="grafted ONNX model (from pgn-export)")
    parser.add_argument("--shapes", action="append", default=[], metavar="NAME:MIN/OPT/MAX",
                        help="optimization profile of a dynamic input, e.g. "
                             "input:1x3x256x256/1x3x512x512/4x3x1024x1024 (repeatable); default: "
                             "batch 1/1/8 and the export size from the metadata")
    for flag, role in (("--minShapes", "smallest"), ("--optShapes", "tuned-for"), ("--maxShapes", "largest")):
        parser.add_argument(flag, metavar="NAME:SHAPE[,...]", help=f"trtexec style: the {role} shape of each "
                            "dynamic input (all three flags together; instead of --shapes)")
    parser.add_argument("--workspace", type=int, metavar="MiB", help="builder workspace limit in MiB")
    parser.add_argument("--timing-cache", metavar="FILE",
                        help="tactic timing cache: read if present, updated after the build")
    parser.add_argument("--no-tf32", action="store_true", help="forbid TF32 in float32 layers")
    parser.add_argument("-o", "--output", metavar="PLAN", help="plan path (default engines/NAME.plan)")
    parser.add_argument("--force", action="store_true", help="replace an existing plan")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``pgn-build``: parse ``argv`` (default ``sys.argv[1:]``), run, return the exit status."""
    parser = build_parser()

    def command(args: argparse.Namespace) -> int:
        from pgn_deploy.engines.tensorrt_build import build_plan, trtexec_shape_specs

        shapes = [*args.shapes, *trtexec_shape_specs(args.minShapes, args.optShapes, args.maxShapes)]
        report = build_plan(args.model, out=args.output, shapes=shapes,
                            workspace_mib=args.workspace, timing_cache=args.timing_cache,
                            tf32=not args.no_tf32, force=args.force)
        emit(args, report)
        return 0

    return run_cli(parser, command, argv)


if __name__ == "__main__":
    raise SystemExit(main())
