"""Component-level OoD metrics (SegmentMeIfYouCan sIoU, PPV, mean F1) per frame and per split.

Per frame, at a score threshold t (t* of the pixel level):

1. predicted mask = ``score >= t`` inside the ROI (label != 255); 8-connected components
   (OpenCV); components with fewer than ``min_pred`` pixels are dropped;
2. ground truth: 8-connected components of label 1; those with fewer than ``min_gt`` pixels
   become void and leave the ROI;
3. all sizes below are counted inside that final ROI (a predicted component left with no
   pixel there is not counted at all, as in the benchmark code);
4. sIoU(k) = |k ∩ P(k)| / (|k ∪ P(k)| - pixels of P(k) in other GT components), P(k) the
   predicted components touching k (0 when none);  PPV(j) = |j ∩ GT| / |j|.

Over a split (:class:`ComponentAccumulator`): for tau = 0.25, 0.30, ..., 0.75 (computed as
k/20), TP = #GT components with sIoU >= tau, FN = the rest, FP = #predicted components with
PPV < tau, summed over frames; F1(tau) = 2TP / (2TP + FN + FP); mean F1 = mean over the 11
tau; sIoU and PPV = means over all components of the split (NaN when there are none).
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from pgn_deploy.contract import BadInputError
from pgn_deploy.eval.metrics.score_io import VOID, check_frame

TAUS = np.arange(5, 16) / 20.0


@dataclasses.dataclass(frozen=True)
class Track:
    """Component size limits of a SegmentMeIfYouCan track (pixels)."""

    name: str
    min_pred: int
    min_gt: int


TRACKS = {
    "obstacle": Track("obstacle", min_pred=50, min_gt=10),  # RoadObstacle21, LostAndFound
    "anomaly": Track("anomaly", min_pred=500, min_gt=100),  # RoadAnomaly21, Fishyscapes L&F
}


def get_track(track: str | Track) -> Track:
    """A :class:`Track` from its name (``obstacle`` / ``anomaly``) or as given."""
    if isinstance(track, Track):
        return track
    if track not in TRACKS:
        raise BadInputError(f"unknown track {track!r}; choose from {', '.join(TRACKS)}")
    return TRACKS[track]


@dataclasses.dataclass(frozen=True)
class FrameComponents:
    """One frame's components: ``siou`` per GT component, ``ppv`` per predicted component."""

    siou: np.ndarray
    ppv: np.ndarray


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components: label map (int32, 0 = background) and sizes (index = label)."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8,
                                                               ltype=cv2.CV_32S)
    return labels, stats[:, cv2.CC_STAT_AREA].astype(np.int64)


def frame_components(scores: np.ndarray, labels: np.ndarray, threshold: float, track: str | Track,
                     where: str = "frame") -> FrameComponents:
    """sIoU and PPV of every component of one frame (module doc); checks the frame first."""
    scores, labels = check_frame(scores, labels, where)
    track = get_track(track)
    roi = labels != VOID
    pred, pred_size = _components((scores >= np.float64(threshold)) & roi)
    gt, gt_size = _components(labels == 1)
    small_gt = gt_size < track.min_gt
    small_gt[0] = False
    kept_pred = pred_size >= track.min_pred
    kept_pred[0] = False
    # sizes inside the final ROI: small GT components turned void take their pixels away
    size_j = np.where(kept_pred, pred_size, 0)
    if small_gt.any():
        in_small = small_gt[gt]
        size_j -= np.bincount(pred[in_small], minlength=pred_size.size) * kept_pred
    # overlaps: only GT pixels can overlap, and there are few of them
    at = np.flatnonzero(gt)
    gt_at, pred_at = gt.ravel()[at], pred.ravel()[at]
    keep = kept_pred[pred_at] & ~small_gt[gt_at]
    n_pred, n_gt = pred_size.size, gt_size.size
    pairs, inter = np.unique(gt_at[keep].astype(np.int64) * n_pred + pred_at[keep], return_counts=True)
    pair_gt, pair_pred = np.divmod(pairs, n_pred)
    gt_in_j = np.bincount(pair_pred, inter, minlength=n_pred)
    outside_gt_j = size_j - gt_in_j
    intersection_k = np.bincount(pair_gt, inter, minlength=n_gt)
    extra_k = np.bincount(pair_gt, outside_gt_j[pair_pred], minlength=n_gt)
    gt_ids = np.flatnonzero(~small_gt)[1:]
    siou = intersection_k[gt_ids] / (gt_size[gt_ids] + extra_k[gt_ids])
    pred_ids = np.flatnonzero(size_j > 0)
    ppv = gt_in_j[pred_ids] / size_j[pred_ids]
    return FrameComponents(siou=siou.astype(np.float64), ppv=ppv.astype(np.float64))


@dataclasses.dataclass(frozen=True)
class ComponentResult:
    """Component metrics of a split; ``f1`` per tau in :data:`TAUS`; means are NaN when undefined."""

    siou: float
    ppv: float
    mean_f1: float
    f1: tuple[float, ...]
    gt_components: int
    pred_components: int
    track: Track


class ComponentAccumulator:
    """Collects :class:`FrameComponents` of a split; :meth:`result` reduces them."""

    def __init__(self, track: str | Track = "obstacle") -> None:
        self.track = get_track(track)
        self.frames = 0
        self._siou: list[np.ndarray] = []
        self._ppv: list[np.ndarray] = []

    def add(self, scores: np.ndarray, labels: np.ndarray, threshold: float, where: str = "frame") -> None:
        """Add one frame thresholded at ``threshold`` (see :func:`frame_components`)."""
        self.add_frame(frame_components(scores, labels, threshold, self.track, where))

    def add_frame(self, frame: FrameComponents) -> None:
        """Add one frame's per-component sIoU and PPV (already computed)."""
        self.frames += 1
        self._siou.append(frame.siou)
        self._ppv.append(frame.ppv)

    def result(self) -> ComponentResult:
        """Mean sIoU, mean PPV and F1 per tau of every component added (NaN where there is none)."""
        siou = np.concatenate(self._siou) if self._siou else np.zeros(0)
        ppv = np.concatenate(self._ppv) if self._ppv else np.zeros(0)
        f1 = []
        for tau in TAUS:
            tp = np.count_nonzero(siou >= tau)
            fn = siou.size - tp
            fp = np.count_nonzero(ppv < tau)
            f1.append(2 * tp / (2 * tp + fn + fp) if tp + fn + fp else float("nan"))
        return ComponentResult(
            siou=float(siou.mean()) if siou.size else float("nan"),
            ppv=float(ppv.mean()) if ppv.size else float("nan"),
            mean_f1=float(np.mean(f1)), f1=tuple(float(v) for v in f1),
            gt_components=int(siou.size), pred_components=int(ppv.size), track=self.track,
        )
