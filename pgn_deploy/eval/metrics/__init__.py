"""Public API of the evaluation metrics (definitions: ``docs/metrics.md``).

OoD segmentation (SegmentMeIfYouCan): :func:`evaluate_ood` (pixel AuPRC, AuROC, FPR95, t*,
then component sIoU, PPV, mean F1 at t*), its parts :class:`PixelAccumulator` and
:class:`ComponentAccumulator`, and :func:`evaluate_score_folders` for saved score maps.
In-distribution uncertainty: :class:`CalibrationAccumulator` (ECE) and
:class:`SparsificationAccumulator` (AuSE, ``ause_published``). Segment level:
:func:`segment_features`, :func:`meta_classification`, :func:`meta_regression`.
"""
from __future__ import annotations

from pgn_deploy.eval.metrics.calibration import (
    AuSEResult,
    CalibrationAccumulator,
    ECEResult,
    SparsificationAccumulator,
    brier_error,
)
from pgn_deploy.eval.metrics.components import (
    TAUS,
    TRACKS,
    ComponentAccumulator,
    ComponentResult,
    FrameComponents,
    Track,
    frame_components,
)
from pgn_deploy.eval.metrics.metaseg import (
    MetaResult,
    SegmentTable,
    meta_classification,
    meta_regression,
    segment_features,
)
from pgn_deploy.eval.metrics.ood import OODResult, evaluate_ood, evaluate_score_folders
from pgn_deploy.eval.metrics.pixel import BINNINGS, PixelAccumulator, PixelResult, pixel_metrics
from pgn_deploy.eval.metrics.score_io import (
    ArrayFrame,
    FilePair,
    check_frame,
    pair_directories,
    read_labels,
    read_scores,
)

__all__ = [
    "BINNINGS", "TAUS", "TRACKS",
    "ArrayFrame", "AuSEResult", "CalibrationAccumulator", "ComponentAccumulator", "ComponentResult",
    "ECEResult", "FilePair", "FrameComponents", "MetaResult", "OODResult", "PixelAccumulator",
    "PixelResult", "SegmentTable", "SparsificationAccumulator", "Track",
    "brier_error", "check_frame", "evaluate_ood", "evaluate_score_folders", "frame_components",
    "meta_classification", "meta_regression", "pair_directories", "pixel_metrics", "read_labels",
    "read_scores", "segment_features",
]
