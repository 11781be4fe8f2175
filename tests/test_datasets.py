"""Dataset readers on hand-made layouts: pairing, label mappings, the test-NoKnown filter."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pgn_deploy.contract import BadInputError
from pgn_deploy.eval import datasets as D


def write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (8, 12, 3), dtype=np.uint8)


def laf_root(tmp_path: Path, labels: dict[str, np.ndarray]) -> Path:
    root = tmp_path / "laf"
    for i, (fid, label) in enumerate(labels.items()):
        write(root / "leftImg8bit" / "test" / "02_scene" / f"{fid}_leftImg8bit.png", image(i))
        write(root / "gtCoarse" / "test" / "02_scene" / f"{fid}_gtCoarse_labelIds.png", label)
    return root


def test_smiyc_layouts_pair_images_and_labels(tmp_path):
    base = tmp_path / "ra" / "dataset_AnomalyTrack"
    label = np.zeros((8, 12), np.uint8)
    label[2:4, 3:6], label[0] = 1, 255
    for fid in ("b_frame", "a_frame"):
        write(base / "images" / f"{fid}.jpg", image(1))
        write(base / "labels_masks" / f"{fid}_labels_semantic.png", label)
    write(base / "images" / "test_only.jpg", image(2))  # unlabeled: not scored
    dataset = D.open_dataset(f"road_anomaly21:{tmp_path / 'ra'}")
    assert [f.id for f in dataset] == ["a_frame", "b_frame"]
    assert dataset.unlabeled == 1 and dataset.track == "anomaly"
    assert np.array_equal(dataset.frames[0].load_label(), label)
    assert dataset.frames[0].load_image().shape == (8, 12, 3)


def test_obstacle_track_reads_webp(tmp_path):
    base = tmp_path / "ro" / "dataset_ObstacleTrack"
    write(base / "images" / "x.webp", image(3))
    write(base / "labels_masks" / "x_labels_semantic.png", np.zeros((8, 12), np.uint8))
    dataset = D.open_dataset(f"road_obstacle21:{tmp_path / 'ro'}")
    assert len(dataset) == 1 and dataset.track == "obstacle"


def test_lost_and_found_mapping_and_noknown_filter(tmp_path):
    ids = np.array([[0, 1, 2, 200], [201, 255, 1, 1]], np.uint8)
    plain = ids.copy()
    with_kid = ids.copy()
    with_kid[0, 0] = D.LAF_KID_DUMMY
    with_bike = ids.copy()
    with_bike[0, 0] = D.LAF_BICYCLE
    empty = np.where(ids >= 2, 1, ids).astype(np.uint8)  # free space only, no obstacle
    root = laf_root(tmp_path, {"f1": plain, "f2": with_kid, "f3": with_bike, "f4": empty})
    full = D.open_dataset(f"lost_and_found:{root}")
    assert [f.id for f in full] == ["f1", "f2", "f3", "f4"]
    assert full.frames[0].load_label().tolist() == [[255, 0, 1, 1], [255, 255, 0, 0]]
    noknown = D.open_dataset(f"laf_noknown:{root}")
    assert [f.id for f in noknown] == ["f1"]


def test_fishyscapes_labels_pair_with_laf_images(tmp_path):
    root = laf_root(tmp_path, {"f1": np.ones((8, 12), np.uint8), "f2": np.ones((8, 12), np.uint8)})
    fs_label = np.zeros((8, 12), np.uint8)
    fs_label[1, 1] = 1
    write(root / "fishyscapes" / "f2_labels.png", fs_label)
    dataset = D.open_dataset(f"fishyscapes_laf:{root}")
    assert [f.id for f in dataset] == ["f2"]
    assert dataset.frames[0].image.name == "f2_leftImg8bit.png"
    assert np.array_equal(dataset.frames[0].load_label(), fs_label)


def test_cityscapes_train_ids_or_mapped_label_ids(tmp_path):
    root = tmp_path / "cs"
    label_ids = np.array([[7, 8, 26, 0], [33, 1, 24, 23]], np.uint8)
    write(root / "leftImg8bit" / "val" / "city" / "c_1_leftImg8bit.png", image(4))
    write(root / "gtFine" / "val" / "city" / "c_1_gtFine_labelIds.png", label_ids)
    mapped = D.open_dataset(f"cityscapes:{root}")
    assert mapped.frames[0].load_label().tolist() == [[0, 1, 13, 255], [18, 255, 11, 10]]
    train_ids = np.full((2, 4), 5, np.uint8)
    write(root / "gtFine" / "val" / "city" / "c_1_gtFine_labelTrainIds.png", train_ids)
    assert np.array_equal(D.open_dataset(f"cityscapes:{root}").frames[0].load_label(), train_ids)
    assert D.open_dataset(f"cityscapes:{root}").track is None


@pytest.mark.parametrize(
    "spec,message",
    [
        ("road_anomaly21", "expected KIND:DIR"),
        ("mars_rover:/tmp", "unknown dataset kind"),
        ("cityscapes:/definitely/missing", "no such dataset folder"),
    ],
)
def test_bad_dataset_specs(spec, message):
    with pytest.raises(BadInputError, match=message):
        D.open_dataset(spec)


def test_empty_or_wrong_folders_are_named(tmp_path):
    with pytest.raises(BadInputError, match="dataset_AnomalyTrack/images"):
        D.open_dataset(f"road_anomaly21:{tmp_path}")
    (tmp_path / "dataset_AnomalyTrack" / "images").mkdir(parents=True)
    with pytest.raises(BadInputError, match="no labelled frames"):
        D.open_dataset(f"road_anomaly21:{tmp_path}")
    write(tmp_path / "dataset_AnomalyTrack" / "labels_masks" / "lonely_labels_semantic.png",
          np.zeros((2, 2), np.uint8))
    with pytest.raises(BadInputError, match="lonely_labels_semantic.png: label without an image"):
        D.open_dataset(f"road_anomaly21:{tmp_path}")
