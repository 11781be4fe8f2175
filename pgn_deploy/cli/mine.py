"""pgn-mine: rank the frames of images, folders, videos and path lists by OoD evidence."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pgn_deploy.cli.common import make_parser, print_json, run_cli
from pgn_deploy.mining import ENGINES, MineOptions, mine
from pgn_deploy.runtime.backends.base import backend_names


def build_parser() -> argparse.ArgumentParser:
    """The pgn-mine argument parser."""
    parser = make_parser("pgn-mine", "Run a grafted model over many frames, find the out-of-distribution "
                         "instances and rank the frames by them: Parquet tables, overlays and an HTML gallery "
                         "of the top frames. Resumable: a second run skips the frames already in --out.")
    parser.add_argument("model", help="grafted model (.pgn.onnx) or TensorRT plan (.plan with its .json)")
    parser.add_argument("sources", nargs="+", help="image files, folders (recursive), videos, or .parquet/.csv "
                        "lists with a column 'path' (and optionally 'frame')")
    parser.add_argument("--out", required=True, help="output folder (created if missing; resumed if it holds "
                        "results of the same model and rule)")
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="local: decode threads + one runtime (default); ray: Ray Data actors")
    parser.add_argument("--ray-address", help="Ray cluster to join, e.g. ray://head:10001 or auto "
                        "(default: start a local Ray)")
    parser.add_argument("--score", help="score map for instances (default: the first PGN map)")
    parser.add_argument("--threshold", type=float, help="OoD threshold (default: the calibrated q0.99)")
    parser.add_argument("--min-area", type=int, default=50, help="smallest instance counted (pixels; default 50)")
    parser.add_argument("--top", type=int, default=50, help="frames in the overlays and gallery (default 50)")
    parser.add_argument("--every", type=int, default=1, help="take every N-th video frame (default 1)")
    parser.add_argument("--batch", type=int, default=8, help="frames per inference call (default 8)")
    parser.add_argument("--workers", type=int, default=2,
                        help="decode threads (local) or Ray actors (ray) (default 2)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads per inference (0: backend default; ray: at least 1 per actor)")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per Ray actor (e.g. 1, or 0.5 to share)")
    parser.add_argument("--backend", default="auto", choices=["auto", *backend_names()])
    parser.add_argument("--force", action="store_true",
                        help="start over in a folder mined with another model or rule (deletes its results)")
    return parser


def _command(args: argparse.Namespace) -> int:
    options = MineOptions(engine=args.engine, ray_address=args.ray_address, score=args.score,
                          threshold=args.threshold, min_area=args.min_area, top=args.top, every=args.every,
                          batch=args.batch, workers=args.workers, threads=args.threads, num_gpus=args.num_gpus,
                          backend=args.backend, force=args.force)
    report = mine(args.model, args.sources, args.out, options, progress=sys.stderr.isatty())
    if args.json:
        print_json(report.to_json())
    else:
        print(report.to_text())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run pgn-mine; the exit status (0, or 2 for a refused input)."""
    return run_cli(build_parser(), _command, argv)


if __name__ == "__main__":
    sys.exit(main())
