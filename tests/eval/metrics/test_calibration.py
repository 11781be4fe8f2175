"""ECE and AuSE on constructed cases, against brute force, streamed and at once."""
from __future__ import annotations

import numpy as np
import pytest

from pgn_deploy.contract import BadInputError
from pgn_deploy.eval.metrics.calibration import CalibrationAccumulator, SparsificationAccumulator, brier_error


def ece_case():
    """100 pixels at confidence 0.95 (90 correct), 100 at 0.25 (50 correct), 50 at 1.0 (all correct)."""
    confidence = np.concatenate([np.full(100, 0.95), np.full(100, 0.25), np.full(50, 1.0)]).astype(np.float32)
    gt = np.zeros(250, np.int64)
    pred = np.ones(250, np.int64)
    pred[:90] = 0
    pred[100:150] = 0
    pred[200:] = 0
    return confidence, pred, gt


def test_ece_of_a_constructed_case_keeps_confidence_one_in_the_last_bin():
    confidence, pred, gt = ece_case()
    acc = CalibrationAccumulator(normalize="none")
    acc.add(confidence, pred, gt)
    result = acc.result()
    # bin 9 holds 0.95 and 1.0: accuracy 140/150, mean confidence (95 + 50) / 150
    expected = 150 / 250 * abs(140 / 150 - 145 / 150) + 100 / 250 * abs(0.5 - 0.25)
    assert result.ece == pytest.approx(expected, abs=1e-7)
    assert result.bin_counts.tolist() == [0, 0, 100, 0, 0, 0, 0, 0, 0, 150]
    assert result.pixels == 250
    assert result.to_json() == {"ECE": result.ece, "bins": 10, "pixels": 250, "normalize": "none",
                                "score_min": 0.25, "score_max": 1.0}


def test_ece_min_max_and_max_normalisation_of_uncertainty_scores():
    rng = np.random.default_rng(0)
    scores = rng.uniform(2, 10, 5000).astype(np.float32)
    gt = np.zeros(5000, np.int64)
    pred = (rng.random(5000) < scores / 12).astype(np.int64)  # more uncertain -> more often wrong
    s = scores.astype(np.float64)
    for normalize, confidence in (("minmax", 1 - (s - s.min()) / (s.max() - s.min())), ("max", 1 - s / s.max())):
        bins = np.minimum((confidence * 10).astype(int), 9)
        correct = pred == gt
        expected = sum(np.mean(bins == b) * abs(correct[bins == b].mean() - confidence[bins == b].mean())
                       for b in range(10) if np.any(bins == b))
        acc = CalibrationAccumulator(normalize=normalize)
        for part in np.array_split(np.arange(5000), 7):
            acc.add(scores[part], pred[part], gt[part])
        assert acc.result().ece == pytest.approx(expected, abs=1e-9)


def test_ece_leaves_void_out_and_rejects_bad_input():
    confidence, pred, gt = ece_case()
    gt = gt.copy()
    gt[100:200] = 255
    acc = CalibrationAccumulator(normalize="none")
    acc.add(confidence, pred, gt)
    assert acc.result().pixels == 150
    with pytest.raises(BadInputError, match="min-max normalization is undefined"):
        constant = CalibrationAccumulator()
        constant.add(np.ones(4, np.float32), np.zeros(4), np.zeros(4))
        constant.result()
    with pytest.raises(BadInputError, match=r"confidences must lie in \[0, 1\]"):
        wrong = CalibrationAccumulator(normalize="none")
        wrong.add(np.float32([1.5, 0.2]), np.zeros(2), np.zeros(2))
        wrong.result()
    with pytest.raises(BadInputError, match="NaN"):
        CalibrationAccumulator().add(np.float32([np.nan]), np.zeros(1), np.zeros(1))


def test_brier_error():
    probs = np.zeros((3, 1, 3))
    probs[0, 0, 0] = probs[1, 0, 1] = 1.0
    probs[:, 0, 2] = 1 / 3
    gt = np.array([[0, 0, 2]])
    assert brier_error(probs, gt).tolist() == pytest.approx([0.0, 2.0, 2 / 3])
    with pytest.raises(BadInputError, match="classes must be in 0..2"):
        brier_error(probs, np.array([[0, 3, 1]]))


def sparsification_brute_force(uncertainty, error, values_for_curve):
    """Curves by sorting all pixels: mean of ``values_for_curve`` / error of the kept pixels."""
    n = error.size
    by_uncertainty = np.argsort(-uncertainty, kind="stable")
    by_error = np.argsort(-error, kind="stable")
    curve, oracle = [], []
    for i in range(100):
        removed = (i * n) // 100
        curve.append(values_for_curve[by_uncertainty[removed:]].mean())
        oracle.append(error[by_error[removed:]].mean())
    curve, oracle = np.array(curve) / curve[0], np.array(oracle) / oracle[0]
    return np.trapezoid(curve - oracle, np.arange(100) / 100)


def softmax_frame(seed: int, shape=(30, 40), classes: int = 4):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(classes, *shape)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(axis=0)
    gt = rng.integers(0, classes, shape)
    return probs, gt


def test_ause_is_zero_for_a_perfect_ranking_and_matches_brute_force():
    probs, gt = softmax_frame(0)
    error = brier_error(probs, gt)
    perfect = SparsificationAccumulator()
    perfect.add(error.reshape(gt.shape).astype(np.float32), probs, gt)
    assert perfect.result().ause == pytest.approx(0.0, abs=1e-6)

    uncertainty = (1 - probs.max(axis=0)).astype(np.float32)
    acc = SparsificationAccumulator()
    for rows in (slice(0, 10), slice(10, 30)):
        acc.add(uncertainty[rows], probs[:, rows], gt[rows])
    result = acc.result()
    flat_unc = uncertainty.ravel().astype(np.float64)
    assert result.ause == pytest.approx(sparsification_brute_force(flat_unc, error, error), abs=1e-5)
    assert result.ause_published == pytest.approx(sparsification_brute_force(flat_unc, error, flat_unc), abs=1e-5)
    assert result.fractions.size == result.curve.size == result.oracle.size == 100
    assert result.curve[0] == pytest.approx(1.0) and result.oracle[0] == pytest.approx(1.0)
    assert np.all(np.diff(result.oracle) <= 1e-12)
    assert result.to_json() == {"AuSE": result.ause, "AuSE_published": result.ause_published,
                                "pixels": 30 * 40, "steps": 100}


def test_ause_ties_count_with_their_group_mean_and_void_is_left_out():
    probs, gt = softmax_frame(1)
    gt[:5] = 255
    acc = SparsificationAccumulator()
    acc.add(np.zeros(gt.shape, np.float32), probs, gt)
    result = acc.result()
    assert result.pixels == 25 * 40
    assert np.allclose(result.curve, 1.0)  # a constant uncertainty removes an average pixel
    assert result.ause == pytest.approx(np.trapezoid(1.0 - result.oracle, result.fractions))
