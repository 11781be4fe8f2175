"""pgn-triton: write a Triton Inference Server model repository for a grafted model."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from pgn_deploy.cli.common import emit, make_parser, run_cli


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pgn-triton``."""
    parser = make_parser(
        "pgn-triton",
        "Write REPO/NAME/{config.pbtxt,1/model.onnx|model.plan} for a grafted model, with dynamic "
        "batching, instance groups and the pgn_deploy metadata as a config parameter.",
    )
    parser.add_argument("model", help="grafted ONNX model (from pgn-export)")
    parser.add_argument("--repo", required=True, metavar="DIR", help="model repository folder (created if missing)")
    parser.add_argument("--triton-backend", choices=("onnxruntime", "tensorrt"), default="onnxruntime",
                        help="Triton backend (tensorrt serves the plan pgn-build made from MODEL)")
    parser.add_argument("--plan", metavar="PLAN", help="plan for --triton-backend tensorrt (default engines/NAME.plan)")
    parser.add_argument("--name", help="model name in the repository (default: MODEL's file name)")
    parser.add_argument("--max-batch", type=int, metavar="N",
                        help="Triton max_batch_size (default 8; 0: no batching, which also declares the "
                        "optional ood_threshold input of a --normalize model)")
    parser.add_argument("--instances", type=int, default=1, metavar="N", help="model instances (per GPU for tensorrt)")
    parser.add_argument("--force", action="store_true", help="replace an existing model folder")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``pgn-triton``: parse ``argv`` (default ``sys.argv[1:]``), run, return the exit status."""
    parser = build_parser()

    def command(args: argparse.Namespace) -> int:
        from pgn_deploy.engines.triton import write_triton_repository

        report = write_triton_repository(args.model, args.repo, backend=args.triton_backend, plan=args.plan,
                                         name=args.name, max_batch=args.max_batch,
                                         instances=args.instances, force=args.force)
        emit(args, report)
        return 0

    return run_cli(parser, command, argv)


if __name__ == "__main__":
    raise SystemExit(main())
