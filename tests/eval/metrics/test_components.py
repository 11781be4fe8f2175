"""Component-level metrics (sIoU, PPV, mean F1) on hand-built frames with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from pgn_deploy.contract import BadInputError
from pgn_deploy.eval.metrics.components import TAUS, ComponentAccumulator, Track, frame_components
from pgn_deploy.eval.metrics.ood import evaluate_ood
from pgn_deploy.eval.metrics.score_io import ArrayFrame

NO_LIMITS = Track("none", min_pred=1, min_gt=1)


def frame(shape=(20, 30)):
    return np.zeros(shape, np.float32), np.zeros(shape, np.uint8)


def test_thresholds_are_multiples_of_a_twentieth():
    assert TAUS.tolist() == [0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75]


def test_prediction_spanning_two_objects():
    scores, labels = frame()
    labels[5:10, 2:7] = 1
    labels[5:10, 10:15] = 1
    scores[5:10, 2:15] = 1  # 65 pixels: both objects and the 15-pixel gap between them
    result = frame_components(scores, labels, 0.5, NO_LIMITS)
    # sIoU = 25 / (65 - 25 pixels of the other object); plain IoU would be 25 / 65
    assert result.siou.tolist() == [25 / 40, 25 / 40]
    assert result.ppv.tolist() == [50 / 65]
    acc = ComponentAccumulator(NO_LIMITS)
    acc.add_frame(result)
    total = acc.result()
    assert total.f1 == (1.0,) * 8 + (0.0,) * 3  # sIoU 0.625 passes tau <= 0.60 only
    assert total.mean_f1 == pytest.approx(8 / 11)
    assert (total.siou, total.ppv) == (0.625, 50 / 65)


def test_diagonally_touching_objects_form_one_component():
    scores, labels = frame()
    labels[2:7, 2:7] = 1
    labels[7:12, 7:12] = 1  # touches the first square at one corner: 8-connected
    scores[2:7, 2:7] = 1
    scores[7:12, 7:12] = 0.5
    assert frame_components(scores, labels, 0.9, NO_LIMITS).siou.tolist() == [0.5]
    both = frame_components(scores, labels, 0.5, NO_LIMITS)
    assert both.siou.tolist() == [1.0] and both.ppv.tolist() == [1.0]  # one predicted component


def test_void_pixels_are_not_predicted_and_can_split_a_prediction():
    scores, labels = frame()
    labels[5:10, 5:10] = 1
    labels[5:10, 10:12] = 255
    scores[5:10, 3:12] = 1  # object 25 + road 10 + void 10
    result = frame_components(scores, labels, 0.5, NO_LIMITS)
    assert result.siou.tolist() == [25 / 35] and result.ppv.tolist() == [25 / 35]
    labels[:, 15] = 255
    scores[5:10, 12:20] = 1  # now a road blob on both sides of a void column
    split = frame_components(scores, labels, 0.5, NO_LIMITS)
    assert sorted(split.ppv.tolist()) == [0.0, 0.0, 25 / 35]


@pytest.mark.parametrize("p1_cols, expected_siou, expected_ppv", [
    (7, [0.0], [0.0, 0.0]),  # 7 x 7 = 49 < min_pred 50: dropped
    (8, [10 / 56], [10 / 56, 0.0, 0.0]),  # 7 x 8 = 56: kept
])
def test_size_limits_of_the_obstacle_track(p1_cols, expected_siou, expected_ppv):
    scores, labels = frame((40, 60))
    labels[2:4, 2:7] = 1  # 10 pixels = min_gt: kept
    labels[30:33, 2:5] = 1  # 9 pixels < min_gt: becomes void
    scores[0:7, 0:p1_cols] = 1  # over the kept object
    scores[28:36, 0:7] = 1  # 56 pixels over the small object: 47 left in the ROI, none anomalous
    scores[10:15, 20:30] = 1  # 50 pixels of road: kept, a false positive
    result = frame_components(scores, labels, 0.5, "obstacle")
    assert result.siou.tolist() == pytest.approx(expected_siou)
    assert sorted(result.ppv.tolist(), reverse=True) == pytest.approx(expected_ppv)


def test_empty_prediction_and_frame_without_anomalies():
    scores, labels = frame()
    labels[5:10, 5:10] = 1
    empty = frame_components(scores, labels, 0.5, NO_LIMITS)
    assert empty.siou.tolist() == [0.0] and empty.ppv.size == 0
    clean_scores, clean_labels = frame()
    clean_scores[0:3, 0:3] = 1
    clean = frame_components(clean_scores, clean_labels, 0.5, NO_LIMITS)
    assert clean.siou.size == 0 and clean.ppv.tolist() == [0.0]
    acc = ComponentAccumulator(NO_LIMITS)
    acc.add_frame(empty)
    acc.add_frame(clean)
    result = acc.result()
    assert result.f1 == (0.0,) * 11 and result.gt_components == 1 and result.pred_components == 1
    nothing = ComponentAccumulator(NO_LIMITS)
    nothing.add_frame(frame_components(*frame(), 0.5, NO_LIMITS))
    undefined = nothing.result()
    assert np.isnan(undefined.siou) and np.isnan(undefined.ppv) and np.isnan(undefined.mean_f1)


def test_anomaly_track_limits_and_unknown_track():
    scores, labels = frame((60, 60))
    labels[10:19, 10:19] = 1  # 81 < min_gt 100 on the anomaly track
    scores[10:30, 10:30] = 1  # 400 < min_pred 500
    result = frame_components(scores, labels, 0.5, "anomaly")
    assert result.siou.size == 0 and result.ppv.size == 0
    with pytest.raises(BadInputError, match="unknown track"):
        frame_components(scores, labels, 0.5, "road")


def test_evaluate_ood_uses_the_best_f1_threshold_and_parallel_equals_serial():
    rng = np.random.default_rng(0)
    frames = []
    for i in range(6):
        scores, labels = frame((48, 64))
        labels[:6] = 255
        y, x = rng.integers(8, 36), rng.integers(0, 48)
        labels[y:y + 8, x:x + 12] = 1
        scores += rng.random(scores.shape).astype(np.float32) * 0.6 + (labels == 1) * 0.5
        frames.append(ArrayFrame(f"f{i}", scores, labels))
    serial = evaluate_ood(frames, "obstacle", workers=1)
    parallel = evaluate_ood(frames, "obstacle", workers=3)
    assert serial.to_json() == parallel.to_json()
    assert serial.frames == 6 and serial.pixel.pixels == 6 * 42 * 64
    acc = ComponentAccumulator("obstacle")
    for f in frames:
        acc.add(f.scores, f.labels, serial.pixel.threshold)
    assert acc.result() == serial.components
    with pytest.raises(BadInputError, match="no frames"):
        evaluate_ood([], "obstacle")
