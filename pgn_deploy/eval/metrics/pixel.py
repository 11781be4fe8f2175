"""Pixel-level OoD metrics over all region-of-interest pixels of a split: AuPRC, AuROC, FPR95, t*.

Definitions (``docs/metrics.md``): anomaly (label 1) is the positive class, void (255) is
left out, predicted positive means ``score >= t``. Every distinct score is a threshold.

Two ways to collect the counts, chosen by ``binning``:

* ``"exact"`` (default): every frame's scores are reduced to exact per-value counts of
  positives and negatives, keyed by the float32 bit pattern, and summed over frames in a
  :class:`~pgn_deploy.eval.metrics.counts.Float32Counts` table. The metrics are those of the
  float32 scores exactly (``average_precision_score`` on the same float32 pixels agrees to
  rounding); nothing is sorted beyond one frame at a time.
* ``"smiyc"``: the approximation of the public SegmentMeIfYouCan benchmark code. Per frame the
  bin edges are {0, 1} plus ``min(384, n)`` evenly spaced quantiles (linear interpolation) of
  the positive and of the negative scores, deduplicated; the pixels are histogrammed into
  those bins and each bin stands for the threshold at its lower edge. The bins of all frames
  are merged by threshold value and the curve is built on the merged thresholds. (The
  benchmark also sorts repeated thresholds in an unstable order and keeps one partial point
  at the top; that order-dependent artefact is not reproduced.)
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np

from pgn_deploy.contract import BadInputError
from pgn_deploy.eval.metrics.counts import Float32Counts, summarize_values
from pgn_deploy.eval.metrics.score_io import VOID, check_frame

BINNINGS = ("exact", "smiyc")
SMIYC_BINS = 768
TPR_LEVEL = 0.95
PLOT_POINTS = 1000


@dataclasses.dataclass(frozen=True)
class PixelResult:
    """Pixel-level metrics of one method on one split (all fractions in [0, 1]).

    ``threshold`` is t*, the score maximising pixel F1 (``best_f1``); ``positives`` /
    ``negatives`` count ROI pixels labelled 1 / 0; ``thresholds`` is the number of distinct
    thresholds; ``counts_bytes`` the memory the accumulated counts held; ``curve`` holds a few
    thousand points of the PR and ROC curves (``recall``, ``precision``, ``fpr``, ``tpr``) for
    plots.
    """

    auprc: float
    auroc: float
    fpr95: float
    threshold: float
    best_f1: float
    positives: int
    negatives: int
    thresholds: int
    binning: str
    counts_bytes: int = dataclasses.field(compare=False)
    curve: dict[str, np.ndarray] = dataclasses.field(repr=False, compare=False)

    @property
    def pixels(self) -> int:
        """ROI pixels counted: ``positives + negatives`` (void pixels excluded)."""
        return self.positives + self.negatives

    @property
    def method(self) -> str:
        """How the counts were collected, in words (for tables and JSON)."""
        if self.binning == "exact":
            return "exact: per-value counts of the float32 scores"
        return f"smiyc: {SMIYC_BINS} percentile bins per frame, merged over frames"


def curve_metrics(chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], total_pos: float,
                  total_neg: float, binning: str, counts_bytes: int = 0) -> PixelResult:
    """Metrics from per-threshold counts, thresholds descending, given in consecutive chunks.

    Each chunk is ``(thresholds, positives, negatives)``: ``positives[i]`` / ``negatives[i]``
    count the pixels labelled 1 / 0 whose score falls at ``thresholds[i]`` (for binning: in
    that bin); ``total_pos`` / ``total_neg`` are their totals over all chunks. Predicting
    ``score >= thresholds[i]`` gives TP_i / FP_i = the cumulative sums. A point with no
    prediction yet has precision 1. AP = sum over points of (recall_i - recall_{i-1}) *
    precision_i with recall_0 = 0; AuROC: trapezoids from (0, 0); FPR95: FPR at the first point
    with TPR >= 0.95 (FPR only grows, so it is the smallest); t*: first point of maximal
    F1 = 2TP / (2TP + FP + FN). Chunks keep every temporary array chunk-sized.
    """
    total_pos, total_neg = float(total_pos), float(total_neg)
    if total_pos == 0:
        raise BadInputError("the split has no anomaly pixels (label 1): pixel metrics are undefined")
    if total_neg == 0:
        raise BadInputError("the split has no in-distribution pixels (label 0): pixel metrics are undefined")
    tp0 = fp0 = recall0 = fpr0 = auprc = auroc = 0.0
    fpr95, best_f1, threshold, count = float("nan"), -1.0, float("nan"), 0
    grid = np.linspace(0.0, 1.0, PLOT_POINTS + 1)
    points: list[np.ndarray] = []
    for thresholds, positives, negatives in chunks:
        count += thresholds.size
        tp = tp0 + np.cumsum(positives, dtype=np.float64)
        fp = fp0 + np.cumsum(negatives, dtype=np.float64)
        predicted = tp + fp
        precision = np.divide(tp, predicted, out=np.ones_like(tp), where=predicted > 0)
        recall, fpr = tp / total_pos, fp / total_neg
        recall_before = np.concatenate(([recall0], recall[:-1]))
        fpr_before = np.concatenate(([fpr0], fpr[:-1]))
        auprc += float(np.dot(recall - recall_before, precision))
        auroc += float(np.dot(fpr - fpr_before, recall + recall_before)) / 2
        if fpr95 != fpr95 and recall[-1] >= TPR_LEVEL:
            fpr95 = float(fpr[np.argmax(recall >= TPR_LEVEL)])
        f1 = 2 * tp / (predicted + total_pos)
        i = int(np.argmax(f1))
        if f1[i] > best_f1:
            best_f1, threshold = float(f1[i]), float(thresholds[i])
        index = np.unique(np.concatenate((np.searchsorted(recall, grid), np.searchsorted(fpr, grid), [0])))
        index = index[index < tp.size]
        points.append(np.stack([recall[index], precision[index], fpr[index]]))
        tp0, fp0, recall0, fpr0 = float(tp[-1]), float(fp[-1]), float(recall[-1]), float(fpr[-1])
    curve = np.concatenate(points, axis=1)
    return PixelResult(
        auprc=auprc, auroc=auroc, fpr95=fpr95, threshold=threshold,
        best_f1=best_f1, positives=int(total_pos), negatives=int(total_neg),
        thresholds=count, binning=binning, counts_bytes=counts_bytes,
        curve={"recall": curve[0], "precision": curve[1], "fpr": curve[2], "tpr": curve[0]},
    )


def _roi(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    roi = labels != VOID
    return scores[roi], labels[roi]


def smiyc_frame_bins(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame's SMIYC histogram: ``(lower_edges, positives, negatives)`` per bin (module doc)."""
    pos, neg = scores[positive].astype(np.float64), scores[~positive].astype(np.float64)
    edges = [np.array([0.0, 1.0])]
    for part in (pos, neg):
        if part.size:
            edges.append(np.quantile(part, np.linspace(0.0, 1.0, min(SMIYC_BINS // 2, part.size))))
    bins = np.unique(np.concatenate(edges))
    tp_bins, _ = np.histogram(pos, bins=bins)
    fp_bins, _ = np.histogram(neg, bins=bins)
    return bins[:-1], tp_bins.astype(np.float64), fp_bins.astype(np.float64)


class PixelAccumulator:
    """Streams frames into the pixel-level counts; :meth:`result` gives the :class:`PixelResult`.

    ``add(scores, labels)`` checks and adds one frame. For parallel use, :meth:`summarize`
    (pure, thread-safe, the expensive part) and :meth:`add_summary` (cheap, not thread-safe)
    split that in two.
    """

    def __init__(self, binning: str = "exact") -> None:
        if binning not in BINNINGS:
            raise BadInputError(f"unknown binning {binning!r}; choose from {', '.join(BINNINGS)}")
        self.binning = binning
        self.frames = 0
        self._counts = Float32Counts(2) if binning == "exact" else None
        self._bins: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def summarize(self, scores: np.ndarray, labels: np.ndarray, where: str = "frame") -> Any:
        """The frame reduced to what :meth:`add_summary` needs (checks the frame first)."""
        scores, labels = _roi(*check_frame(scores, labels, where))
        if self.binning == "exact":
            return summarize_values(scores, labels, 2)
        return smiyc_frame_bins(scores, labels == 1)

    def add_summary(self, summary: Any) -> None:
        """Add a :meth:`summarize` result (cheap; not thread-safe); counts one frame."""
        self.frames += 1
        if self._counts is not None:
            self._counts.add_summary(summary)
        else:
            self._bins.append(summary)

    def add(self, scores: np.ndarray, labels: np.ndarray, where: str = "frame") -> None:
        """Add one frame: ``scores`` float H x W, ``labels`` H x W in {0, 1, 255}."""
        self.add_summary(self.summarize(scores, labels, where))

    @property
    def nbytes(self) -> int:
        """Memory held by the accumulated counts, in bytes."""
        if self._counts is not None:
            return self._counts.nbytes
        return sum(a.nbytes for bins in self._bins for a in bins)

    def result(self) -> PixelResult:
        """The metrics of everything added so far (t* included)."""
        if self.frames == 0:
            raise BadInputError("no frames were added: pixel metrics are undefined")
        if self._counts is not None:
            chunks = ((values, sums[:, 1], sums[:, 0]) for values, sums in self._counts.chunks(descending=True))
            negatives, positives = self._counts.totals
            return curve_metrics(chunks, positives, negatives, self.binning, self.nbytes)
        edges = np.concatenate([b[0] for b in self._bins])
        unique, inverse = np.unique(edges, return_inverse=True)
        positives = np.bincount(inverse, np.concatenate([b[1] for b in self._bins]))[::-1]
        negatives = np.bincount(inverse, np.concatenate([b[2] for b in self._bins]))[::-1]
        return curve_metrics([(unique[::-1], positives, negatives)], positives.sum(), negatives.sum(),
                             self.binning, self.nbytes)


def pixel_metrics(scores: np.ndarray, labels: np.ndarray, binning: str = "exact") -> PixelResult:
    """Pixel metrics of arrays held in memory, treated as one frame (any shape, same for both)."""
    accumulator = PixelAccumulator(binning)
    accumulator.add(np.asarray(scores).reshape(1, -1), np.asarray(labels).reshape(1, -1), "arrays")
    return accumulator.result()
