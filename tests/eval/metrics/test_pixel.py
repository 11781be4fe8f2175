"""Pixel-level OoD metrics: exact counts, agreement with scikit-learn and brute force, streaming."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from pgn_deploy.contract import BadInputError
from pgn_deploy.eval.metrics.counts import Float32Counts, sortable_keys, values_of_keys
from pgn_deploy.eval.metrics.pixel import PixelAccumulator, curve_metrics, pixel_metrics, smiyc_frame_bins


def split(seed: int, frames: int = 5, shape: tuple[int, int] = (40, 60), levels: int | None = 500):
    """Frames with tied, negative and void-covered scores; anomalies score higher on average."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(frames):
        labels = (rng.random(shape) < 0.15).astype(np.uint8)
        labels[rng.random(shape) < 0.1] = 255
        scores = rng.normal(size=shape) + 1.2 * (labels == 1)
        if levels:
            scores = np.round(scores * levels / 8) / (levels / 8)
        out.append((scores.astype(np.float32), labels))
    return out


def pooled(frames):
    scores = np.concatenate([frame_scores.ravel() for frame_scores, _ in frames])
    labels = np.concatenate([frame_labels.ravel() for _, frame_labels in frames])
    roi = labels != 255
    return scores[roi], labels[roi]


def brute_force(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """FPR95, best F1 and its threshold by checking every distinct score as a threshold."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    best_f1, best_t, fpr95 = -1.0, None, np.inf
    for t in np.unique(scores)[::-1]:
        tp, fp = np.count_nonzero(pos >= t), np.count_nonzero(neg >= t)
        tpr, fpr = tp / pos.size, fp / neg.size
        if tpr >= 0.95:
            fpr95 = min(fpr95, fpr)
        f1 = 2 * tp / (2 * tp + fp + pos.size - tp)
        if f1 > best_f1:
            best_f1, best_t = f1, t
    return fpr95, best_f1, float(best_t)


@pytest.mark.parametrize("levels", [None, 40])
def test_auprc_and_auroc_equal_sklearn(levels):
    frames = split(0, levels=levels)
    acc = PixelAccumulator()
    for frame_scores, frame_labels in frames:
        acc.add(frame_scores, frame_labels)
    result = acc.result()
    scores, labels = pooled(frames)
    assert result.auprc == pytest.approx(average_precision_score(labels, scores), abs=1e-9)
    assert result.auroc == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert result.positives == np.count_nonzero(labels == 1)
    assert result.negatives == np.count_nonzero(labels == 0)
    assert result.thresholds == np.unique(scores).size


def test_fpr95_and_best_f1_equal_brute_force():
    frames = split(1, levels=60)
    result = pixel_metrics(*map(np.concatenate, zip(*[(frame_scores.ravel(), frame_labels.ravel())
                                                      for frame_scores, frame_labels in frames])))
    fpr95, best_f1, threshold = brute_force(*pooled(frames))
    assert result.fpr95 == fpr95
    assert result.best_f1 == pytest.approx(best_f1, abs=1e-12)
    assert result.threshold == threshold


def test_streaming_equals_in_memory_and_chunking_does_not_matter():
    frames = split(2, frames=7, levels=None) + [(np.float32([[-0.0, 0.0, 3.5]]), np.uint8([[1, 0, 1]]))]
    acc = PixelAccumulator()
    for frame_scores, frame_labels in frames:
        acc.add(frame_scores, frame_labels)
    streamed = acc.result()
    scores, labels = pooled(frames)
    in_memory = pixel_metrics(scores, labels)
    assert streamed == in_memory
    values, sums = acc._counts.result()
    values, sums = values[::-1], sums[::-1]
    chunks = [(values[i:i + 97], sums[i:i + 97, 1], sums[i:i + 97, 0]) for i in range(0, values.size, 97)]
    chunked = curve_metrics(chunks, sums[:, 1].sum(), sums[:, 0].sum(), "exact")
    for field in ("auprc", "auroc", "fpr95", "threshold", "best_f1"):
        assert getattr(chunked, field) == pytest.approx(getattr(streamed, field), abs=1e-12)


def test_float32_counts_match_unique_for_dense_and_sparse_values():
    rng = np.random.default_rng(3)
    dense = (1 + rng.integers(0, 300, 20000) * 2.0**-23).astype(np.float32)  # neighbouring float32s
    sparse = (rng.standard_normal(3000) * 10.0 ** rng.integers(-30, 30, 3000)).astype(np.float32)
    values = np.concatenate([dense, sparse, np.float32([0.0, -0.0, np.finfo(np.float32).max])])
    rng.shuffle(values)
    column = rng.integers(0, 3, values.size)
    counts = Float32Counts(3)
    for part in np.array_split(np.arange(values.size), 37):
        counts.add(values[part], column[part])
    assert counts._slots > 0 and counts._runs, "both the dense and the sparse part must be used"
    got_values, got_sums = counts.result()
    want_values = np.unique(values)
    assert np.array_equal(got_values, want_values)
    assert got_values.dtype == np.float32
    index = np.searchsorted(want_values, values)
    for c in range(3):
        assert np.array_equal(got_sums[:, c], np.bincount(index[column == c], minlength=want_values.size))


def test_float32_counts_promote_slots_filled_over_many_additions():
    rng = np.random.default_rng(7)
    base = np.float32(3.0).view(np.uint32)
    counts, added = Float32Counts(1), []
    for _ in range(150):  # 3 keys of one 256-key block per addition: never crowded at once
        values = np.concatenate([(base + rng.integers(0, 256, 3).astype(np.uint32)).view(np.float32),
                                 rng.normal(size=2).astype(np.float32)])
        counts.add(values)
        added.append(values)
    assert counts._slots >= 1
    values = np.concatenate(added)
    got_values, got_sums = counts.result()
    want_values, want_counts = np.unique(values, return_counts=True)
    assert np.array_equal(got_values, want_values) and np.array_equal(got_sums[:, 0], want_counts)
    assert counts.totals.tolist() == [values.size]


def test_float32_counts_sum_weights():
    values = np.float32([2.0, 1.0, 2.0, -1.0])
    weights = np.array([[1.0, 0.5], [1.0, 0.25], [1.0, 2.0], [1.0, 0.0]])
    counts = Float32Counts(2)
    counts.add(values[:2], weights=weights[:2])
    counts.add(values[2:], weights=weights[2:])
    got_values, sums = counts.result()
    assert got_values.tolist() == [-1.0, 1.0, 2.0]
    assert sums.tolist() == [[1.0, 0.0], [1.0, 0.25], [2.0, 2.5]]


def test_sortable_keys_order_and_round_trip():
    values = np.float32([-np.inf, -3.0, -1e-30, -0.0, 0.0, 1e-45, 1.0, 7.5, np.inf])
    keys = sortable_keys(values)
    assert np.all(np.diff(keys.astype(np.int64)) >= 0)
    assert keys[3] == keys[4]
    assert np.array_equal(values_of_keys(keys)[[0, 1, 2, 5, 6, 7, 8]], values[[0, 1, 2, 5, 6, 7, 8]])


def test_smiyc_bins_follow_the_benchmark_rules():
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.3])
    edges, pos, neg = smiyc_frame_bins(scores, np.array([True, True, False, False, False]))
    assert edges.tolist() == [0.0, 0.1, 0.2, 0.3, 0.8, 0.9]  # lower edges; 1.0 closes the last bin
    assert pos.tolist() == [0, 0, 0, 0, 1, 1]
    assert neg.tolist() == [0, 1, 1, 1, 0, 0]
    many = np.random.default_rng(4).random(5000)
    edges, pos, neg = smiyc_frame_bins(many, many > 0.7)
    assert edges.size <= 768 + 1
    assert pos.sum() + neg.sum() == many.size


def test_smiyc_is_close_to_exact_but_not_equal_on_continuous_scores():
    frames = split(5, frames=3, shape=(60, 80), levels=None)
    frames = [(1 / (1 + np.exp(-frame_scores)), frame_labels)  # scores in (0, 1)
              for frame_scores, frame_labels in frames]
    exact, binned = PixelAccumulator("exact"), PixelAccumulator("smiyc")
    for frame_scores, frame_labels in frames:
        exact.add(frame_scores, frame_labels)
        binned.add(frame_scores, frame_labels)
    e, b = exact.result(), binned.result()
    assert b.binning == "smiyc" and b.thresholds < e.thresholds
    assert b.auprc == pytest.approx(e.auprc, abs=5e-3) and b.auprc != e.auprc
    assert b.auroc == pytest.approx(e.auroc, abs=5e-3)


def test_plot_curve_is_small_and_spans_the_range():
    result = pixel_metrics(*pooled(split(6, levels=None)))
    curve = result.curve
    assert curve["recall"].size <= 3000
    assert curve["recall"][-1] == 1.0 and curve["fpr"][-1] == 1.0
    assert np.all(np.diff(curve["recall"]) >= 0)


@pytest.mark.parametrize("labels, message", [
    (np.zeros((2, 3), np.uint8), "no anomaly pixels"),
    (np.ones((2, 3), np.uint8), "no in-distribution pixels"),
    (np.full((2, 3), 255, np.uint8), "no anomaly pixels"),
])
def test_undefined_metrics_are_reported(labels, message):
    with pytest.raises(BadInputError, match=message):
        pixel_metrics(np.zeros((2, 3), np.float32), labels)


@pytest.mark.parametrize("scores, labels, message", [
    (np.zeros((2, 3)), np.zeros((3, 2), np.uint8), "scores are 2x3 but labels are 3x2"),
    (np.zeros((2, 3)), np.full((2, 3), 7, np.uint8), "found 7"),
    (np.full((2, 3), np.nan), np.zeros((2, 3), np.uint8), "NaN or infinite"),
    (np.full((2, 3), np.inf), np.zeros((2, 3), np.uint8), "NaN or infinite"),
])
def test_bad_frames_are_rejected(scores, labels, message):
    with pytest.raises(BadInputError, match=message):
        PixelAccumulator().add(scores, labels)


def test_unknown_binning_is_rejected():
    with pytest.raises(BadInputError, match="unknown binning"):
        PixelAccumulator("coarse")
