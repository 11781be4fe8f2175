"""pgn-synthroad: write SynthRoad street scenes and OoD benchmarks in the public datasets' layouts."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from pgn_deploy.cli.common import make_parser, print_json, run_cli, show_progress
from pgn_deploy.contract import BadInputError, parse_shape


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pgn-synthroad``."""
    from pgn_deploy.synthroad.generator import DEFAULT_SIZE
    from pgn_deploy.synthroad.layouts import LAYOUTS

    parser = make_parser(
        "pgn-synthroad",
        "Generate SynthRoad frames (deterministic for a seed) and write them in the Cityscapes, "
        "RoadAnomaly21, RoadObstacle21, LostAndFound and Fishyscapes LostAndFound layouts.",
    )
    parser.add_argument("--out", required=True, help="output folder (created; an existing one is written into)")
    parser.add_argument("--frames", required=True, type=int, help="frames per layout")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--layout", nargs="+", choices=LAYOUTS, metavar="LAYOUT",
                        help=f"layouts to write (default all: {', '.join(LAYOUTS)})")
    parser.add_argument("--size", default="x".join(map(str, DEFAULT_SIZE)), metavar="HxW",
                        help=f"image size (default {DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]})")
    parser.add_argument("--force", action="store_true", help="overwrite files that exist")
    return parser


def _command(args: argparse.Namespace) -> int:
    from pgn_deploy.synthroad.layouts import write_synthroad

    if args.frames < 1:
        raise BadInputError(f"--frames must be at least 1, got {args.frames}")
    summary = write_synthroad(args.out, args.frames, args.seed, args.layout, parse_shape(args.size, 2, "--size"),
                              force=args.force, progress=show_progress(args))
    if args.json:
        print_json(summary)
    else:
        for layout, info in summary.items():
            print(f"{layout:<16s} {info['frames']:>5d} frames {info['files']:>6d} files  {info['root']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``pgn-synthroad``: parse ``argv`` (default ``sys.argv[1:]``), run, return the exit status."""
    return run_cli(build_parser(), _command, argv)
