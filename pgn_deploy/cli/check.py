"""``pgn-check MODEL.pgn.onnx``: are the grafted outputs what they should be?

Exit status: 0 every check passed, 1 a check failed, 2 the check could not run (bad input).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from pgn_deploy.cli.common import EXIT_FAILED, make_parser, print_json, run_cli
from pgn_deploy.cli.export import add_model_arguments
from pgn_deploy.contract import parse_shape


def build_parser() -> argparse.ArgumentParser:
    """The ``pgn-check`` argument parser."""
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
    parser.add_argument("--pred-agreement", type=float, default=99.9, help="with --against: min %% equal pred pixels")
    parser.add_argument("--rtol", type=float, default=1e-2, help="with --against: max relative error of the maps")
    return parser


def _format(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


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
        input_shape=args.input_shape,
        pixels=args.pixels,
    )
    if args.json:
        print_json(report.to_json())
    else:
        shape = "x".join(map(str, report.input_shape))
        print(f"{report.model}: {report.samples} random input(s) of {shape}, seed {report.seed}"
              + (f", reference {report.reference}" if report.reference else ""))
        rows = [("check", "output", "max abs", "max rel", "tol", "result", "note")]
        rows += [
            (r.check, r.output, _format(r.max_abs), _format(r.max_rel), _format(r.tolerance), r.status.upper(), r.note)
            for r in report.results
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(6)]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[6])
        skipped = " (no map was compared with a reference)" if report.verdict == "skip" else ""
        print(report.verdict.upper() + skipped)
    return 0 if report.passed else EXIT_FAILED


def _against(args: argparse.Namespace) -> int:
    from pgn_deploy.eval.checks.compare import compare_models

    size = parse_shape(args.input_shape, 4, "--input-shape")[2:] if args.input_shape else None
    report = compare_models(args.model, args.against, images=args.images, synthetic=args.samples, size=size,
                            pred_agreement_min=args.pred_agreement, rtol=args.rtol)
    if args.json:
        print_json(report.to_json())
    else:
        print(f"{report.runner_a} vs {report.runner_b}: {report.images} input(s)")
        for row in report.outputs:
            relation = ">=" if row.metric == "agreement_%" else "<="
            print(f"  {row.name:24s} {row.metric:15s} {row.value:<10.4g} {relation} {row.tolerance:<8g} "
                  f"{'PASS' if row.passed else 'FAIL'}")
        print("PASS" if report.passed else "FAIL")
    return 0 if report.passed else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pgn-check``; returns the exit status."""
    return run_cli(build_parser(), lambda args: _against(args) if args.against else _check(args), argv)


if __name__ == "__main__":
    raise SystemExit(main())
