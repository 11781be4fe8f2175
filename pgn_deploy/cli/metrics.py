"""pgn-metrics: SegmentMeIfYouCan pixel and component metrics of saved score maps.

    pgn-metrics --scores out/pgn_uni_p0.5 --labels dataset/labels_masks --track obstacle
    pgn-metrics --scores a --scores b --name PGN --name entropy --labels L --plots plots/
    pgn-metrics --scores run_out --map pgn_uni_p0.5 --scores run_out --map entropy --labels L

Prints the paper's table row (AuPRC, FPR95, sIoU, PPV, mean F1, in percent) per method;
``--json`` prints the metrics as fractions instead. File pairing and definitions:
``docs/metrics.md``.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from pgn_deploy.cli.common import emit, make_parser, run_cli, show_progress, whole_number
from pgn_deploy.eval.metrics.components import TRACKS
from pgn_deploy.eval.metrics.ood import OODTable, evaluate_score_folders
from pgn_deploy.eval.metrics.pixel import BINNINGS

PROG = "pgn-metrics"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pgn-metrics``."""
    parser = make_parser(PROG, "SegmentMeIfYouCan pixel (AuPRC, AuROC, FPR95) and component (sIoU, PPV, "
                               "mean F1) metrics of saved score maps against OoD labels.")
    parser.add_argument("--scores", action="append", required=True, metavar="DIR",
                        help="folder of score maps (.npy float or 16-bit .png); repeat to compare methods")
    parser.add_argument("--labels", required=True, metavar="DIR",
                        help="folder of label PNGs (0 = in-distribution, 1 = anomaly, 255 = void)")
    parser.add_argument("--map", action="append", metavar="NAME",
                        help="use only the files <stem>.NAME.npy/.png of the folder (a pgn-run --save-npy "
                             "folder holds several maps); once for all --scores or once per --scores")
    parser.add_argument("--name", action="append", metavar="METHOD",
                        help="method name per --scores, in the same order (default: the map name, else "
                             "the folder name)")
    parser.add_argument("--track", choices=tuple(TRACKS), default="obstacle",
                        help="component size limits: obstacle (min_pred 50, min_gt 10) or anomaly "
                             "(min_pred 500, min_gt 100); default obstacle")
    parser.add_argument("--binning", choices=BINNINGS, default="exact",
                        help="exact (default): exact counts of the float32 scores; smiyc: the public "
                             "benchmark's 768 percentile bins per frame")
    parser.add_argument("--plots", metavar="DIR", help="write pr_curve.png and roc_curve.png into DIR")
    parser.add_argument("--workers", type=whole_number(1), default=None, metavar="N",
                        help="threads reading and reducing frames (default: CPU count, at most 4)")
    parser.add_argument("--force", action="store_true", help="overwrite existing plot files")
    return parser


def command(args: argparse.Namespace) -> int:
    """Evaluate the score folders and print the table."""
    results = evaluate_score_folders(args.scores, args.labels, names=args.name, maps=args.map,
                                     track=args.track, binning=args.binning, plots=args.plots,
                                     force=args.force, workers=args.workers, progress=show_progress(args))
    emit(args, OODTable(results))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``pgn-metrics``: parse ``argv`` (default ``sys.argv[1:]``), run, return the exit status."""
    return run_cli(build_parser(), command, argv)
