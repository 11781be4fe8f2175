"""MetaSeg segment features, IoU targets and cross-validated meta models."""
from __future__ import annotations

import numpy as np
import pytest

from pgn_deploy.contract import BadInputError
from pgn_deploy.eval.metrics.metaseg import (
    METASEG,
    SegmentTable,
    meta_classification,
    meta_regression,
    segment_features,
)


def two_halves():
    """6 x 6 softmax: columns 0-2 predict class 0 (p = 0.8), columns 3-5 class 1 (p = 0.6)."""
    probs = np.zeros((2, 6, 6))
    probs[0, :, :3], probs[1, :, :3] = 0.8, 0.2
    probs[0, :, 3:], probs[1, :, 3:] = 0.4, 0.6
    return probs


def column(table: SegmentTable, name: str) -> list[float]:
    return table.features[:, table.names.index(name)].tolist()


def test_geometry_dispersion_and_map_features():
    pgn = np.arange(36, dtype=np.float64).reshape(6, 6)
    table = segment_features(two_halves(), maps={"pgn_uni_p0.5": pgn})
    assert table.cls.tolist() == [0, 1]
    # inner pixels: rows 1-4 of column 1 (left) and of column 4 (right)
    assert column(table, "S") == [18, 18] and column(table, "S_in") == [4, 4] and column(table, "S_bd") == [14, 14]
    assert column(table, "S_rel") == [18 / 14] * 2 and column(table, "S_in_rel") == [4 / 14] * 2
    assert column(table, "P_0") == pytest.approx([0.8, 0.4]) and column(table, "P_1") == pytest.approx([0.2, 0.6])
    entropy_left = -(0.8 * np.log(0.8) + 0.2 * np.log(0.2)) / np.log(2)
    assert column(table, "E")[0] == pytest.approx(entropy_left)
    assert column(table, "E_in_rel")[0] == pytest.approx(entropy_left * 4 / 14)
    assert column(table, "M") == pytest.approx([1 - 0.8 + 0.2, 1 - 0.6 + 0.4])
    left_inner = pgn[1:5, 1]
    assert column(table, "pgn_uni_p0.5_in")[0] == pytest.approx(left_inner.mean())
    assert column(table, "pgn_uni_p0.5_var_in")[0] == pytest.approx(left_inner.var())
    assert column(table, "pgn_uni_p0.5_var")[0] == pytest.approx(pgn[:, :3].var())
    assert column(table, "pgn_uni_p0.5_rel")[0] == pytest.approx(pgn[:, :3].mean() * 18 / 14)
    assert set(table.groups) == {METASEG, "pgn_uni_p0.5"} and len(table.groups["pgn_uni_p0.5"]) == 10
    assert len(table.groups[METASEG]) == 5 + 2 + 10


def test_metaseg_iou_counts_every_touched_ground_truth_component():
    gt = np.zeros((6, 6), np.int64)
    gt[:, 2:] = 1  # class 0 on columns 0-1, class 1 on columns 2-5
    iou = segment_features(two_halves(), gt).iou
    assert iou.tolist() == pytest.approx([12 / 18, 18 / 24])
    gt[:, :] = 1
    gt[0, 0] = 0
    gt[5, 5] = 0  # two class-0 components, the right one outside the left segment
    assert segment_features(two_halves(), gt).iou.tolist() == pytest.approx([1 / 18, 17 / 35])
    gt[:, :3] = 255
    assert np.isnan(segment_features(two_halves(), gt).iou[0])  # only void under the segment


def synthetic_table(seed: int, images: int = 30, per_image: int = 12) -> SegmentTable:
    """IoU with one informative feature (IoU + small noise) and one pure-noise feature."""
    rng = np.random.default_rng(seed)
    n = images * per_image
    iou = np.clip(rng.random(n) * 1.4 - 0.4, 0, 1)
    features = np.stack([iou + rng.normal(scale=0.05, size=n), rng.normal(size=n)], axis=1)
    return SegmentTable(names=("signal", "noise"), groups={"signal": ("signal",), "noise": ("noise",)},
                        features=features, iou=iou, image=np.repeat(np.arange(images), per_image),
                        cls=np.zeros(n, np.int64))


def test_meta_models_find_a_known_signal_and_not_noise():
    table = synthetic_table(0)
    auroc = meta_classification(table, ["signal"])
    assert auroc.value > 0.95 and auroc.k == 5 and auroc.seed == 0 and len(auroc.folds) == 5
    assert auroc.to_json() == {"AuROC": auroc.value, "AuROC_folds": list(auroc.folds), "k": 5, "seed": 0,
                               "segments": 360, "images": 30, "features": 1}
    assert 0.3 < meta_classification(table, ["noise"]).value < 0.7
    assert meta_regression(table).value > 0.9
    assert meta_regression(table, ["noise"]).value < 0.1


def test_cross_validation_never_splits_an_image():
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import KFold, cross_val_predict

    rng = np.random.default_rng(1)
    images, per_image = 20, 10
    image = np.repeat(np.arange(images), per_image)
    iou = rng.random(images)[image]  # the target depends on the image only
    one_hot = np.eye(images)[image]  # features that name the image
    table = SegmentTable(names=tuple(f"image_{i}" for i in range(images)), groups={}, features=one_hot,
                         iou=iou, image=image, cls=np.zeros(image.size, np.int64))
    leaked = cross_val_predict(LinearRegression(), one_hot, iou, cv=KFold(5, shuffle=True, random_state=0))
    assert 1 - np.sum((leaked - iou) ** 2) / np.sum((iou - iou.mean()) ** 2) > 0.9  # segment-wise folds leak
    assert meta_regression(table, k=5, seed=3).value < 0.1  # image-wise folds do not


def test_meta_model_errors():
    table = synthetic_table(2, images=3)
    with pytest.raises(BadInputError, match="at least 5 images"):
        meta_regression(table)
    with pytest.raises(BadInputError, match="unknown feature group"):
        meta_regression(synthetic_table(2), ["entropy"])
    one_class = synthetic_table(2)
    one_class = SegmentTable(one_class.names, one_class.groups, one_class.features,
                             np.full(len(one_class), 0.5), one_class.image, one_class.cls)
    with pytest.raises(BadInputError, match="IoU = 0 and with IoU > 0"):
        meta_classification(one_class)
    with pytest.raises(BadInputError, match="C x H x W"):
        segment_features(np.zeros((6, 6)))


def test_concat_joins_images():
    a = segment_features(two_halves(), image=0)
    b = segment_features(two_halves(), image=1)
    both = SegmentTable.concat([a, b])
    assert len(both) == 4 and both.image.tolist() == [0, 0, 1, 1]
    with pytest.raises(BadInputError, match="different features"):
        SegmentTable.concat([a, segment_features(two_halves(), maps={"m": np.zeros((6, 6))})])
