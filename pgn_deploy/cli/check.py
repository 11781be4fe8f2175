"""``pgn-check MODEL.pgn.onnx``: are the grafted outputs what they should be?

Exit status: 0 every check passed, 1 a check failed, 2 the check could not run (bad input).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from pgn_deploy.cli.common import EXIT_FAILED, emit, make_parser, run_cli
from pgn_deploy.cli.export import add_model_arguments
from pgn_deploy.contract import parse_shape
from pgn_deploy.runtime.limits import check_allocation


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pgn-check``."""
    parser = make_parser(
        "pgn-check",
        "Check a grafted model with ONNX Runtime: original outputs unchanged, PGN maps equal to the "
        "float64 reference (and to autograd for --form exact).",
    )
    parser.add_argument("model", help="the grafted model (.pgn.onnx)")
    add_model_arguments(parser, checkpoint_flag="--reference")
    parser.add_argument("--samples", type=int, default=2, help="random inputs to run (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    parser.add_argument("--input-shape", metavar="NxCxHxW",
                        help="shape of the random inputs (default: batch 2 at the exported size)")
    parser.add_argument("--pixels", type=int, default=16, help="autograd pixels per sample and map (default 16)")
    parser.add_argument("--against", metavar="OTHER",
                        help="instead: compare MODEL with another build of it (fp16 ONNX, TensorRT plan) "
                             "through Polygraphy; --samples noise images, or --images")
    parser.add_argument("--images", nargs="+", metavar="PATH", help="with --against: image files or folders")
    parser.add_argument("--dataset", action="append", metavar="KIND:DIR",
                        help="with --against: an OoD dataset (kinds as in pgn-eval); adds the change of each "
                             "map's AuPRC (within 1.0 point) and FPR95 (within 2.0 points); repeatable")
    parser.add_argument("--max-images", type=int, metavar="N", help="with --against: use at most N images")
    parser.add_argument("--pred-agreement", type=float,
                        help="with --against: min %% equal pred pixels (default 99.9; 99 for an int8/fp8 model)")
    parser.add_argument("--rtol", type=float,
                        help="with --against: max relative error of the maps (default 1e-2; for an int8/fp8 "
                             "model the max median pointwise error, 0.02, with Pearson >= 0.99)")
    return parser


def _input_shape(args: argparse.Namespace) -> tuple[int, ...] | None:
    """``--input-shape`` parsed, refused in one line when one sample could not be allocated."""
    if args.input_shape is None:
        return None
    shape = parse_shape(args.input_shape, 4, "--input-shape")
    check_allocation(shape, 8, "--input-shape")
    return shape


def _check(args: argparse.Namespace) -> int:
    from pgn_deploy.eval.checks.parity import check_parity

    report = check_parity(
        args.model,
        args.checkpoint,
        arch=args.arch,
        arch_kwargs=args.arch_kwargs,
        trust_pickle=args.trust_pickle,
        samples=args.samples,
        seed=args.seed,
        input_shape=_input_shape(args),
        pixels=args.pixels,
    )
    emit(args, report)
    return 0 if report.passed else EXIT_FAILED


def _against(args: argparse.Namespace) -> int:
    from pgn_deploy.eval.checks.compare import compare_models

    shape = _input_shape(args)
    size = shape[2:] if shape else None
    report = compare_models(args.model, args.against, images=args.images, max_images=args.max_images,
                            synthetic=args.samples, size=size, pred_agreement_min=args.pred_agreement,
                            rtol=args.rtol, datasets=args.dataset)
    emit(args, report)
    return 0 if report.passed else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """``pgn-check``: parse ``argv`` (default ``sys.argv[1:]``), run, return the exit status."""
    return run_cli(build_parser(), lambda args: _against(args) if args.against else _check(args), argv)


if __name__ == "__main__":
    raise SystemExit(main())
