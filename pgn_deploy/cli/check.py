"""``pgn-check MODEL.pgn.onnx``: are the grafted outputs what they should be?

Exit status: 0 every check passed, 1 a check failed, 2 the check could not run (bad input).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from pgn_deploy.cli.common import EXIT_FAILED, make_parser, print_json, run_cli
from pgn_deploy.cli.export import add_model_arguments


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        "pgn-check",
        "Check a grafted model with ONNX Runtime: original outputs unchanged, PGN maps equal to the "
        "float64 reference (and to autograd for --form exact).",
    )
    parser.add_argument("model", help="the grafted model (.pgn.onnx)")
    add_model_arguments(parser, checkpoint_flag="--reference")
    parser.add_argument("--samples", type=int, default=2, help="random inputs to run (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    parser.add_argument("--input-shape", metavar="NxCxHxW", help="shape of the random inputs (default 2 x C x exported size)")
    parser.add_argument("--pixels", type=int, default=16, help="autograd pixels per sample and map (default 16)")
    return parser


def _format(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _check(args: argparse.Namespace) -> int:
    from pgn_deploy.eval.parity import check_parity

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
        print("PASS" if report.passed else "FAIL")
    return 0 if report.passed else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), _check, argv)


if __name__ == "__main__":
    raise SystemExit(main())
