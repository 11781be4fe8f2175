"""pgn-eval: evaluate a grafted model on a benchmark dataset as it lies on disk; print the paper's tables."""
from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from pgn_deploy.cli.common import make_parser, print_json, run_cli, show_progress


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pgn-eval``."""
    from pgn_deploy.eval.metrics.pixel import BINNINGS
    from pgn_deploy.eval.paper.datasets import TRACKS
    from pgn_deploy.runtime.backends.base import backend_names

    parser = make_parser(
        "pgn-eval",
        "Run a grafted model over a benchmark dataset and report the paper's tables: OoD datasets "
        "(Tables 2/3: AuPRC, FPR95, sIoU, PPV, mean F1 with PR/ROC plots) or Cityscapes val "
        "(Table 1: ECE, AuSE; Figure 3: meta classification and regression), with MC dropout and "
        "deep-ensemble baselines from the same run.")
    parser.add_argument("model", help="grafted model (.pgn.onnx from pgn-export, or a TensorRT plan)")
    parser.add_argument("--dataset", required=True, metavar="KIND:DIR",
                        help=f"dataset kind and root folder; kinds: {', '.join(TRACKS)}")
    parser.add_argument("--scores", help="comma-separated maps to evaluate (default: every PGN map and "
                        "baseline output of the model, plus the enabled MC dropout / ensemble maps)")
    parser.add_argument("--checkpoint", help="the model's source checkpoint (needed for --mc-dropout; with "
                        "--paper-maps, the penultimate maps then use its trained kernel)")
    parser.add_argument("--paper-maps", action="store_true",
                        help="re-graft the model with the published code's twenty maps (last and penultimate "
                             "layer x labels uni, oh x p 0.1, 0.3, 0.5, 1, 2) and msp/entropy, and evaluate those")
    parser.add_argument("--mc-dropout", type=int, metavar="N", help="MC dropout baseline with N samples")
    parser.add_argument("--mc-rate", type=float, metavar="P",
                        help="dropout probability for MC dropout (default: the network's own)")
    parser.add_argument("--mc-batch", type=int, default=4, metavar="B",
                        help="MC dropout samples per inference call (default 4)")
    parser.add_argument("--ensemble", nargs="+", default=[], metavar="CKPT",
                        help="deep-ensemble baseline: the member checkpoints")
    parser.add_argument("--variant", action="append", default=[], metavar="TAG=MODEL",
                        help="another file of the same model (e.g. int8=model.int8.pgn.onnx): its PGN maps become "
                             "rows '<map> [TAG]' of the same tables (repeatable)")
    parser.add_argument("--tta", nargs="?", const="", metavar="SCALES[,flip]",
                        help="test-time augmentation of the grafted model: mean over scales and "
                        "horizontal flip (given alone: 0.5,1,2,flip, the paper's published inference)")
    parser.add_argument("--out", help="folder for the report, the plots and the map cache (resumable); "
                        "default: print only, temporary cache")
    parser.add_argument("--smiyc-out", metavar="DIR",
                        help="also write the maps in the SegmentMeIfYouCan submission layout under DIR")
    parser.add_argument("--binning", choices=BINNINGS, default="exact",
                        help="pixel-metric counting: exact (default) or the benchmark's 768 percentile bins")
    parser.add_argument("--folds", type=int, default=5, metavar="K",
                        help="cityscapes: K-fold cross validation of the meta models, grouped by image (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="cityscapes: seed of the fold assignment (default 0)")
    parser.add_argument("--backend", default="auto", choices=["auto", *backend_names()])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per inference (0: default)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing report or SMIYC files; recompute maps cached by another model")
    return parser


def _command(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from pgn_deploy.eval.paper.inference import TTA
    from pgn_deploy.eval.paper.pipeline import EvalConfig, evaluate

    config = EvalConfig(
        model=args.model, dataset=args.dataset,
        scores=args.scores.split(",") if args.scores is not None else None,
        checkpoint=args.checkpoint, mc_dropout=args.mc_dropout, mc_rate=args.mc_rate,
        mc_batch=args.mc_batch, ensemble=args.ensemble, tta=TTA.parse(args.tta), out=args.out,
        smiyc_out=args.smiyc_out, binning=args.binning, folds=args.folds, seed=args.seed,
        force=args.force, backend=args.backend,
        threads=args.threads, progress=show_progress(args),
        command=shlex.join(["pgn-eval", *argv]), paper_maps=args.paper_maps, variants=args.variant,
    )
    report = evaluate(config)
    if args.json:
        print_json(report.to_json())
    else:
        print(report.to_text(), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``pgn-eval``: parse ``argv`` (default ``sys.argv[1:]``), run, return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_cli(build_parser(), lambda args: _command(args, argv), argv)


if __name__ == "__main__":
    sys.exit(main())
