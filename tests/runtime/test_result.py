"""Result helpers (OoD mask, instances), statistics and pictures, on hand-made maps."""
from __future__ import annotations

import numpy as np
import pytest

from pgn_deploy.contract import BadInputError
from pgn_deploy.runtime import Instance, Result
from pgn_deploy.runtime.result import resize_labels, resize_score
from pgn_deploy.runtime.stats import QUANTILES, default_threshold, display_range, map_statistics
from pgn_deploy.runtime.visualize import CITYSCAPES_RGB, colorize, heatmap, overlay, palette


def make_result(score: np.ndarray, calibration=None) -> Result:
    return Result(pred=np.zeros(score.shape, np.int32), scores={"pgn_uni_p0.5": score, "msp": -score},
                  timings={}, default_score="pgn_uni_p0.5", calibration=calibration)


@pytest.fixture()
def blobs() -> np.ndarray:
    """Three regions above 1.0: a 2x3 block, an L of 3 pixels touching a 2x2 block only at a
    corner (one 8-connected component of 7 pixels), and a single pixel."""
    score = np.zeros((8, 10), np.float32)
    score[1:3, 1:4] = 2.0  # block A, 6 px, box (1, 1, 3, 2)
    score[5, 0], score[6, 0], score[6, 1] = 3.0, 3.0, 3.0  # L
    score[7, 2:4] = 5.0  # touches the L diagonally at (6,1)-(7,2)
    score[0, 9] = 1.5  # single pixel
    return score


def test_ood_mask_is_score_at_least_threshold(blobs):
    result = make_result(blobs)
    mask = result.ood_mask(threshold=2.0)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    np.testing.assert_array_equal(mask, (blobs >= 2.0).astype(np.uint8))
    np.testing.assert_array_equal(result.ood_mask(threshold=0.0, score="msp"), (-blobs >= 0).astype(np.uint8))


def test_ood_mask_compares_in_float32_and_never_passes_nan():
    score = np.array([[np.float32(0.1), np.nan, np.inf]], np.float32)
    # 0.1 rounded to float32 is above the float64 0.1: equal in float32, so it passes
    assert make_result(score).ood_mask(threshold=0.1).tolist() == [[1, 0, 1]]


def test_instances_on_hand_made_masks(blobs):
    instances = make_result(blobs).instances(threshold=1.0, min_area=1)
    assert instances == [  # numbered in raster order of each component's first pixel
        Instance(label_id=1, area=1, box=(9, 0, 1, 1), mean_score=1.5),
        Instance(label_id=2, area=6, box=(1, 1, 3, 2), mean_score=2.0),
        Instance(label_id=3, area=5, box=(0, 5, 4, 3), mean_score=(3 * 3.0 + 2 * 5.0) / 5),
    ]
    kept = make_result(blobs).instances(threshold=1.0, min_area=5)
    assert [(i.label_id, i.area) for i in kept] == [(2, 6), (3, 5)]
    assert make_result(blobs).instances(threshold=10.0) == []


def test_instances_use_eight_connectivity():
    score = np.zeros((4, 4), np.float32)
    score[0, 0] = score[1, 1] = score[2, 2] = 1.0  # a diagonal: one component, not three
    (instance,) = make_result(score).instances(threshold=0.5)
    assert instance.area == 3 and instance.box == (0, 0, 3, 3)
    (everything,) = make_result(np.ones((3, 5), np.float32)).instances(threshold=0.5)
    assert everything == Instance(1, 15, (0, 0, 5, 3), 1.0)


def test_thresholds_come_from_calibration_or_must_be_given(blobs):
    calibration = {"pgn_uni_p0.5": map_statistics([np.arange(1001, dtype=np.float32) / 1000 * 4], 1)}
    result = make_result(blobs, calibration)
    assert calibration["pgn_uni_p0.5"]["q"]["0.995"] == pytest.approx(3.98)
    np.testing.assert_array_equal(result.ood_mask(), (blobs >= np.float32(3.98)).astype(np.uint8))
    legacy = {"pgn_uni_p0.5": {k: v for k, v in calibration["pgn_uni_p0.5"].items() if k != "threshold"}}
    assert make_result(blobs, legacy).threshold() == calibration["pgn_uni_p0.5"]["q"]["0.99"]
    with pytest.raises(BadInputError, match="pass a threshold or run pgn-calibrate"):
        result.ood_mask(score="msp")
    with pytest.raises(BadInputError, match="pass a threshold or run pgn-calibrate"):
        make_result(blobs).instances()
    with pytest.raises(BadInputError, match="no score map 'pgn_oh_p1'"):
        result.ood_mask(1.0, score="pgn_oh_p1")
    with pytest.raises(BadInputError, match="min_area"):
        result.instances(1.0, min_area=-1)


def test_map_statistics_and_ranges():
    values = np.array([[1.0, 2.0, np.nan], [3.0, 4.0, 5.0]], np.float32)
    stats = map_statistics([values, np.array([6.0], np.float32)], n_images=2)
    finite = np.array([1, 2, 3, 4, 5, 6], np.float64)
    assert stats["q"] == {format(q, "g"): float(np.quantile(finite, q)) for q in QUANTILES}
    assert "0.995" in stats["q"] and stats["threshold"] == stats["q"]["0.995"]
    assert (stats["min"], stats["max"], stats["mean"]) == (1.0, 6.0, 3.5)
    assert (stats["n_images"], stats["n_pixels"], stats["n_nonfinite"]) == (2, 6, 1)
    assert default_threshold({"a": stats}, "a") == stats["q"]["0.995"] and default_threshold(None, "a") is None
    calibrated = display_range(values, {"a": stats}, "a")
    assert (calibrated["lo"], calibrated["hi"]) == (1.0, stats["q"]["0.999"]) and calibrated["calibrated"]
    own = display_range(values, None, "a")
    assert own["lo"] == pytest.approx(np.percentile([1, 2, 3, 4, 5], 1)) and not own["calibrated"]
    with pytest.raises(BadInputError, match="no finite"):
        map_statistics([np.full(3, np.nan, np.float32)], 1)


def test_resizing_back_to_the_image():
    labels = np.array([[0, 1], [2, 3]], np.int32)
    np.testing.assert_array_equal(resize_labels(labels, (4, 4)), np.kron(labels, np.ones((2, 2), np.int32)))
    score = np.array([[0.0, 1.0]], np.float32)
    up = resize_score(score, (1, 4))
    assert up.dtype == np.float32 and up.tolist() == [[0.0, 0.25, 0.75, 1.0]]
    assert resize_score(score, (1, 2)) is not None and resize_score(score, (1, 2)).tolist() == score.tolist()


def test_palettes_are_cityscapes_or_generated_and_deterministic():
    city = palette(19)
    assert city.shape == (19, 3) and tuple(city[0][::-1]) == CITYSCAPES_RGB[0]
    generated = palette(7)
    np.testing.assert_array_equal(generated, palette(7))
    assert len({tuple(c) for c in generated}) == 7
    colored = colorize(np.array([[0, 6, 255, -1]], np.int32), generated)
    assert colored[0, 0].tolist() == generated[0].tolist() and colored[0, 2:].tolist() == [[0, 0, 0], [0, 0, 0]]
    with pytest.raises(BadInputError):
        palette(0)


def test_heatmap_and_overlay_layouts():
    score = np.array([[0.0, 5.0, 10.0, np.nan]], np.float32)
    heat = heatmap(score, 0.0, 10.0)
    assert heat.shape == (1, 4, 3) and heat.dtype == np.uint8
    assert heat[0, 0].tolist() == heat[0, 3].tolist() != heat[0, 2].tolist()  # NaN shows as lo
    assert heatmap(score, 1.0, 1.0).tolist() == heatmap(np.zeros_like(score), 0.0, 1.0).tolist()
    image = np.zeros((6, 8, 3), np.uint8)
    assert overlay(image, image, image, "stack").shape == (12, 8, 3)
    assert overlay(image, image, image, "side", label="x").shape == (6, 16, 3)
    with pytest.raises(BadInputError, match="layout"):
        overlay(image, image, image, "grid")
