"""pgn-bench: latency, throughput and peak memory of a grafted model; grafted vs plain."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pgn_deploy.benchmark.bench import BenchConfig, benchmark_model, parse_maps
from pgn_deploy.benchmark.timing import CLOCKS
from pgn_deploy.cli.common import emit, make_parser, run_cli
from pgn_deploy.contract import parse_shape
from pgn_deploy.runtime.backends.base import backend_names


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pgn-bench``."""
    parser = make_parser("pgn-bench", "Time a grafted model (pgn-export) on one backend: latency "
                         "min/median/mean/p90/p99/max, throughput, peak memory; with --compare-plain "
                         "also the plain model derived from it, interleaved, and the grafted/plain ratio.")
    parser.add_argument("model", help="grafted model (.pgn.onnx) or TensorRT plan (.plan with its .json)")
    parser.add_argument("--backend", default="auto", choices=["auto", *backend_names()])
    parser.add_argument("--batch", type=int, default=1, help="images per inference call (default 1)")
    parser.add_argument("--shape", help="input HxW (default: the size in the metadata, else 512x1024)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls (rounds) first (default 5)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--iterations", type=int, help="timed calls (with --compare-plain: rounds, each one "
                        "untimed and one timed call per model)")
    budget.add_argument("--duration", type=float, help="seconds of timed calls (default 10)")
    parser.add_argument("--threads", type=int, default=0, help="CPU intra-op threads (0: the library's default)")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall",
                        help="wall: elapsed time (default); cpu: CPU time of this process, steadier on a "
                             "shared machine with --threads 1")
    parser.add_argument("--compare-plain", action="store_true",
                        help="also time the model without the PGN outputs, interleaved (each timed call right after an "
                             "untimed one of the same model), and report the ratio")
    parser.add_argument("--maps", default="all",
                        help="added outputs to keep: all, or NAME,... (e.g. pgn_uni_p0.5); the rest is pruned")
    return parser


def _command(args: argparse.Namespace) -> int:
    config = BenchConfig(
        backend=args.backend,
        batch=args.batch,
        shape=None if args.shape is None else parse_shape(args.shape, 2, "--shape"),
        warmup=args.warmup,
        iterations=args.iterations,
        duration_s=args.duration,
        threads=args.threads,
        compare_plain=args.compare_plain,
        maps=parse_maps(args.maps),
        clock=args.clock,
    )
    emit(args, benchmark_model(args.model, config))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``pgn-bench``: parse ``argv`` (default ``sys.argv[1:]``), run, return the exit status."""
    return run_cli(build_parser(), _command, argv)


if __name__ == "__main__":
    sys.exit(main())
