"""In-distribution pixel uncertainty: expected calibration error (ECE) and AuSE, streamed.

Scores and uncertainties are taken as float32. Both accumulate exact per-value sums
(:class:`~pgn_deploy.eval.metrics.counts.Float32Counts`) frame by frame, so a split of 10^9
pixels needs no sort of all pixels. Void pixels (ground truth 255) are left out.

**ECE** (:class:`CalibrationAccumulator`): a score becomes a confidence in [0, 1] by
``normalize``: ``"minmax"`` (default, as the published code) 1 - (s - min) / (max - min),
``"max"`` (the paper's wording) 1 - s / max, ``"none"`` the score already is a confidence.
min and max are taken over all evaluated pixels. ``n_bins`` (10) equal-width bins
[b/n, (b+1)/n), confidence 1.0 in the last bin; ECE = sum_b n_b / n * |acc_b - conf_b|,
accuracy = predicted class equals the ground truth.

**AuSE** (:class:`SparsificationAccumulator`): per-pixel error = Brier score
sum_c (p_c - [c = gt])^2. For removed fractions f = 0, 0.01, ..., 0.99 the pixels with the
highest uncertainty are removed (floor(f * n) of them) and the mean error of the rest is taken,
normalised by its value at f = 0 (the sparsification curve); the oracle removes the pixels with
the highest error. AuSE = trapezoid area of (curve - oracle) over f. ``ause_published``
replaces the curve by the mean *uncertainty* of the remaining pixels (what the published
evaluation code averages), with the same oracle. Pixels tied at the cut count with their
group's mean (the expected value over orders of the ties); the oracle orders by the float32
value of the error and sums the float64 errors.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from pgn_deploy.contract import BadInputError
from pgn_deploy.eval.metrics.counts import Float32Counts, summarize_values
from pgn_deploy.eval.metrics.score_io import VOID

NORMALIZATIONS = ("minmax", "max", "none")
ECE_BINS = 10
SPARSIFICATION_STEPS = 100


def _valid_pixels(scores: np.ndarray, gt: np.ndarray, where: str) -> np.ndarray:
    """Mask of non-void pixels after checking shapes and finiteness."""
    scores, gt = np.asarray(scores), np.asarray(gt)
    if scores.shape != gt.shape:
        raise BadInputError(f"{where}: scores are {scores.shape} but the ground truth is {gt.shape}")
    if not np.isfinite(scores).all():
        raise BadInputError(f"{where}: scores hold NaN or infinite values")
    return gt != VOID


@dataclasses.dataclass(frozen=True)
class ECEResult:
    """ECE and its reliability diagram (per bin: pixel count, accuracy, mean confidence)."""

    ece: float
    bin_counts: np.ndarray
    bin_accuracy: np.ndarray
    bin_confidence: np.ndarray
    pixels: int
    normalize: str
    score_min: float
    score_max: float

    def to_json(self) -> dict[str, Any]:
        """``ECE``, the bin count, pixels, the normalization and the score range, as a JSON-ready dict."""
        return {"ECE": self.ece, "bins": int(self.bin_counts.size), "pixels": self.pixels,
                "normalize": self.normalize, "score_min": self.score_min, "score_max": self.score_max}


class CalibrationAccumulator:
    """Streams (scores, prediction, ground truth) frames into the ECE (module doc)."""

    def __init__(self, normalize: str = "minmax", n_bins: int = ECE_BINS) -> None:
        if normalize not in NORMALIZATIONS:
            raise BadInputError(f"unknown normalization {normalize!r}; choose from {', '.join(NORMALIZATIONS)}")
        if n_bins < 1:
            raise BadInputError("n_bins must be >= 1")
        self.normalize, self.n_bins = normalize, n_bins
        self._counts = Float32Counts(2)  # columns: wrong, correct

    def summarize(self, scores: np.ndarray, pred: np.ndarray, gt: np.ndarray, where: str = "frame") -> Any:
        """One frame reduced to per-score counts of (wrong, correct) non-void pixels, for :meth:`add_summary`.

        Pure and thread-safe. Raises BadInputError (naming ``where``) for shapes that differ or scores that
        are NaN or infinite.
        """
        valid = _valid_pixels(scores, gt, where)
        if np.shape(pred) != np.shape(gt):
            raise BadInputError(f"{where}: prediction is {np.shape(pred)} but the ground truth is {np.shape(gt)}")
        correct = (np.asarray(pred) == np.asarray(gt))[valid]
        return summarize_values(np.asarray(scores, np.float32)[valid], correct, 2)

    def add_summary(self, summary: Any) -> None:
        """Add a :meth:`summarize` result (cheap; not thread-safe)."""
        self._counts.add_summary(summary)

    def add(self, scores: np.ndarray, pred: np.ndarray, gt: np.ndarray, where: str = "frame") -> None:
        """Add one frame: per-pixel ``scores``, predicted and ground-truth class maps (same shape)."""
        self.add_summary(self.summarize(scores, pred, gt, where))

    def _confidence(self, values: np.ndarray) -> np.ndarray:
        values = values.astype(np.float64)
        low, high = values[0], values[-1]
        if self.normalize == "none":
            if low < 0 or high > 1:
                raise BadInputError(f"confidences must lie in [0, 1], got [{low:g}, {high:g}]")
            return values
        if self.normalize == "max":
            if low < 0 or high <= 0:
                raise BadInputError(f"normalize='max' needs scores >= 0 with a positive maximum, "
                                    f"got [{low:g}, {high:g}]")
            return 1.0 - values / high
        if high == low:
            raise BadInputError(f"all scores equal {low:g}: min-max normalization is undefined")
        return 1.0 - (values - low) / (high - low)

    def result(self) -> ECEResult:
        """The ECE and reliability diagram of every frame added; raises BadInputError when no non-void pixel was."""
        values, sums = self._counts.result()
        if values.size == 0:
            raise BadInputError("no non-void pixels were added: ECE is undefined")
        confidence = self._confidence(values)
        counts = sums.sum(axis=1)
        bins = np.minimum((confidence * self.n_bins).astype(np.int64), self.n_bins - 1)
        n_b = np.bincount(bins, counts, minlength=self.n_bins)
        correct_b = np.bincount(bins, sums[:, 1], minlength=self.n_bins)
        confidence_b = np.bincount(bins, confidence * counts, minlength=self.n_bins)
        filled = n_b > 0
        accuracy = np.divide(correct_b, n_b, out=np.full(self.n_bins, np.nan), where=filled)
        mean_conf = np.divide(confidence_b, n_b, out=np.full(self.n_bins, np.nan), where=filled)
        total = counts.sum()
        ece = float(np.sum(n_b[filled] / total * np.abs(accuracy[filled] - mean_conf[filled])))
        return ECEResult(ece=ece, bin_counts=n_b, bin_accuracy=accuracy, bin_confidence=mean_conf,
                         pixels=int(total), normalize=self.normalize,
                         score_min=float(values[0]), score_max=float(values[-1]))


def brier_error(probs: np.ndarray, gt: np.ndarray, where: str = "frame") -> np.ndarray:
    """Per-pixel Brier score of softmax ``probs`` (C x H x W) against ``gt`` (H x W) at non-void pixels.

    Returns a 1-D float64 array in the order of ``gt[gt != 255]``.
    """
    probs, gt = np.asarray(probs), np.asarray(gt)
    if probs.ndim != gt.ndim + 1 or probs.shape[1:] != gt.shape:
        raise BadInputError(f"{where}: probabilities are {probs.shape}, expected C x {' x '.join(map(str, gt.shape))}")
    valid = gt != VOID
    classes = gt[valid].astype(np.int64)
    if classes.size and (classes.min() < 0 or classes.max() >= probs.shape[0]):
        raise BadInputError(f"{where}: ground-truth classes must be in 0..{probs.shape[0] - 1} or 255")
    p = probs[:, valid].astype(np.float64)
    return (p * p).sum(axis=0) - 2.0 * p[classes, np.arange(classes.size)] + 1.0


@dataclasses.dataclass(frozen=True)
class AuSEResult:
    """AuSE (standard, Brier error), ``ause_published`` and the curves over ``fractions``."""

    ause: float
    ause_published: float
    fractions: np.ndarray
    curve: np.ndarray
    curve_published: np.ndarray
    oracle: np.ndarray
    pixels: int

    def to_json(self) -> dict[str, Any]:
        """``AuSE``, ``AuSE_published``, pixels and the number of curve steps, as a JSON-ready dict."""
        return {"AuSE": self.ause, "AuSE_published": self.ause_published, "pixels": self.pixels,
                "steps": int(self.fractions.size)}


def _smallest_sums(counts: np.ndarray, sums: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Sum of ``sums`` over the ``m`` lowest-valued samples (rows ascending; ties share evenly)."""
    cum_counts, cum_sums = np.cumsum(counts), np.cumsum(sums)
    group = np.searchsorted(cum_counts, m, side="left")
    before_counts = np.where(group > 0, cum_counts[group - 1], 0.0)
    before_sums = np.where(group > 0, cum_sums[group - 1], 0.0)
    return before_sums + (m - before_counts) * sums[group] / counts[group]


class SparsificationAccumulator:
    """Streams (uncertainty, softmax, ground truth) frames into the AuSE (module doc)."""

    def __init__(self, steps: int = SPARSIFICATION_STEPS) -> None:
        self.steps = steps
        self._by_uncertainty = Float32Counts(2)  # columns: pixels, error sum
        self._by_error = Float32Counts(2)

    def summarize(self, uncertainty: np.ndarray, probs: np.ndarray, gt: np.ndarray, where: str = "frame") -> Any:
        """One frame reduced to (counts by uncertainty, counts by Brier error), for :meth:`add_summary`.

        Pure and thread-safe. Raises BadInputError (naming ``where``) for shapes that differ, NaN or infinite
        uncertainties or ground-truth classes outside 0..C-1 and 255.
        """
        valid = _valid_pixels(uncertainty, gt, where)
        error = brier_error(probs, gt, where)
        weights = np.stack([np.ones_like(error), error], axis=1)
        return (summarize_values(np.asarray(uncertainty, np.float32)[valid], 0, 2, weights),
                summarize_values(error.astype(np.float32), 0, 2, weights))

    def add_summary(self, summary: Any) -> None:
        """Add a :meth:`summarize` result (cheap; not thread-safe)."""
        self._by_uncertainty.add_summary(summary[0])
        self._by_error.add_summary(summary[1])

    def add(self, uncertainty: np.ndarray, probs: np.ndarray, gt: np.ndarray, where: str = "frame") -> None:
        """Add one frame: ``uncertainty`` H x W (higher = less certain), ``probs`` C x H x W, ``gt`` H x W."""
        self.add_summary(self.summarize(uncertainty, probs, gt, where))

    def result(self) -> AuSEResult:
        """The AuSE and the curves over every frame added; raises BadInputError when no non-void pixel was."""
        values, by_unc = self._by_uncertainty.result()
        _, by_err = self._by_error.result()
        if values.size == 0:
            raise BadInputError("no non-void pixels were added: AuSE is undefined")
        n = int(by_unc[:, 0].sum())
        fractions = np.arange(self.steps) / self.steps
        remaining = (n - (np.arange(self.steps) * n) // self.steps).astype(np.float64)
        error_sum = _smallest_sums(by_unc[:, 0], by_unc[:, 1], remaining)
        total_error = error_sum[0]
        if total_error <= 0:
            raise BadInputError("every pixel has zero Brier error: AuSE is undefined")
        curve = (error_sum / remaining) / (total_error / n)
        oracle = (_smallest_sums(by_err[:, 0], by_err[:, 1], remaining) / remaining) / (total_error / n)
        uncertainty_sum = _smallest_sums(by_unc[:, 0], values.astype(np.float64) * by_unc[:, 0], remaining)
        mean_uncertainty = uncertainty_sum[0] / n
        curve_published = ((uncertainty_sum / remaining) / mean_uncertainty if mean_uncertainty != 0
                           else np.full(self.steps, np.nan))
        return AuSEResult(
            ause=float(np.trapezoid(curve - oracle, fractions)),
            ause_published=float(np.trapezoid(curve_published - oracle, fractions)),
            fractions=fractions, curve=curve, curve_published=curve_published, oracle=oracle, pixels=n,
        )
