"""Dataset readers: pairing, label mappings and the test-NoKnown filter, on hand-made layouts and on
SynthRoad written in every layout."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pgn_deploy.contract import BadInputError
from pgn_deploy.eval.paper import datasets as D
from pgn_deploy.synthroad.generator import generate_frame, ood_labels
from pgn_deploy.synthroad.layouts import LAYOUT_DIRS, fishyscapes_labels, laf_label_ids, write_synthroad

SIZE = (64, 128)
FRAMES = 10
SEED = 3


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
    frames = {"f1": ids}
    for fid, known in (("f2", D.LAF_KID_DUMMY), ("f3", D.LAF_BICYCLE), ("f4", 42)):
        frames[fid] = ids.copy()
        frames[fid][0, 0] = known
    frames["f5"] = np.where(ids >= 2, 1, ids).astype(np.uint8)  # free space only, no obstacle
    frames["f6"] = np.zeros_like(ids)  # not labelled: skipped by both kinds
    frames["15_Rechbergstr_Deckenpfronn_000000_000010"] = ids  # a sequence with children
    root = laf_root(tmp_path, frames)
    full = D.open_dataset(f"lost_and_found:{root}")
    assert [f.id for f in full] == ["15_Rechbergstr_Deckenpfronn_000000_000010", "f1", "f2", "f3", "f4", "f5"]
    assert full.unlabeled == 1
    assert full.frames[1].load_label().tolist() == [[255, 0, 1, 1], [255, 255, 0, 0]]
    noknown = D.open_dataset(f"laf_noknown:{root}")
    assert [f.id for f in noknown] == ["f1"]
    assert noknown.smiyc_name(noknown.frames[0]) == "LostAndFound-test"


def test_fishyscapes_labels_pair_with_laf_images(tmp_path):
    root = laf_root(tmp_path, {"f1": np.ones((8, 12), np.uint8), "f2": np.ones((8, 12), np.uint8)})
    fs_label = np.zeros((8, 12), np.uint8)
    fs_label[1, 1] = 1
    write(root / "fishyscapes" / "f2_labels.png", fs_label)
    dataset = D.open_dataset(f"fishyscapes_laf:{root}")
    assert [f.id for f in dataset] == ["f2"]
    assert dataset.frames[0].image.name == "f2_leftImg8bit.png"
    assert np.array_equal(dataset.frames[0].load_label(), fs_label)


def test_fishyscapes_zip_layout_numbered_labels_any_split(tmp_path):
    """The released fishyscapes_lostandfound/<n>_<id>_labels.png, images from either LAF split."""
    root = tmp_path / "laf"
    fid = "04_Maurener_Weg_8_000000_000030"
    write(root / "leftImg8bit" / "train" / "04_Maurener_Weg_8" / f"{fid}_leftImg8bit.png", image(5))
    label = np.full((8, 12), 255, np.uint8)
    label[2:5, 2:5] = 0
    label[3, 3] = 1
    write(root / "fishyscapes_lostandfound" / f"0007_{fid}_labels.png", label)
    dataset = D.open_dataset(f"fishyscapes_laf:{root}")
    assert [f.id for f in dataset] == [fid]
    assert dataset.smiyc_name(dataset.frames[0]) == "LostAndFound-train"
    assert np.array_equal(dataset.frames[0].load_label(), label)


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


# --------------------------------------------------------------------------- SynthRoad layouts
@pytest.fixture(scope="module")
def synthroad(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthroad")
    write_synthroad(out, frames=FRAMES, seed=SEED, size=SIZE, progress=False)
    return out


def _closest(image_bgr: np.ndarray, generated: list) -> int:
    """Index of the generated frame whose RGB image is closest to ``image_bgr``."""
    rgb = image_bgr[..., ::-1].astype(np.float32)
    return int(np.argmin([np.abs(rgb - frame.image).mean() for frame in generated]))


@pytest.mark.parametrize("kind,split,track", [("road_anomaly21", "anomaly", "anomaly"),
                                              ("road_obstacle21", "obstacle", "obstacle")])
def test_synthroad_smiyc_tracks_pair_images_and_labels(synthroad, kind, split, track):
    dataset = D.open_dataset(f"{kind}:{synthroad}")
    assert len(dataset) == FRAMES and dataset.track == track
    generated = [generate_frame(SEED, i, split, SIZE) for i in range(FRAMES)]
    for i, frame in enumerate(dataset):
        assert _closest(frame.load_image(), generated) == i  # jpg/webp: lossy, so the nearest image
        assert np.array_equal(frame.load_label(), ood_labels(generated[i], track))
    sub = LAYOUT_DIRS["roadanomaly21" if kind == "road_anomaly21" else "roadobstacle21"]
    assert [f.id for f in D.open_dataset(f"{kind}:{synthroad / sub}")] == [f.id for f in dataset]


def _laf_index(frame: D.Frame) -> int:
    return int(frame.id.rsplit("_", 1)[1])


def test_synthroad_lost_and_found_mapping_and_noknown(synthroad):
    root = synthroad / LAYOUT_DIRS["lostandfound"]
    full = D.open_dataset(f"lost_and_found:{root}")
    assert sorted(_laf_index(f) for f in full) == [i for i in range(FRAMES) if i % 10 != 7]
    for frame in full:
        generated = generate_frame(SEED, _laf_index(frame), "lostandfound", SIZE)
        assert np.array_equal(frame.load_image()[..., ::-1], generated.image)  # png: lossless
        ids = laf_label_ids(generated)
        expected = np.full(ids.shape, 255, np.uint8)
        expected[ids == 1] = 0
        expected[ids >= 2] = 1
        assert np.array_equal(frame.load_label(), expected)
    noknown = D.open_dataset(f"laf_noknown:{root}")
    assert sorted(_laf_index(f) for f in noknown) == [i for i in range(FRAMES) if i % 10 != 7 and i % 5 != 3]


def test_synthroad_fishyscapes_pairs_with_laf_images(synthroad):
    root = synthroad / LAYOUT_DIRS["fishyscapes_laf"]
    dataset = D.open_dataset(f"fishyscapes_laf:{root}")
    noknown = D.open_dataset(f"laf_noknown:{synthroad / LAYOUT_DIRS['lostandfound']}")
    assert [f.id for f in dataset] == [f.id for f in noknown]
    for frame in dataset:
        generated = generate_frame(SEED, _laf_index(frame), "lostandfound", SIZE)
        assert np.array_equal(frame.load_image()[..., ::-1], generated.image)
        assert np.array_equal(frame.load_label(), fishyscapes_labels(generated))


def test_synthroad_cityscapes_train_ids_and_mapped_label_ids(synthroad, tmp_path):
    root = synthroad / LAYOUT_DIRS["cityscapes"]
    dataset = D.open_dataset(f"cityscapes:{root}")
    assert len(dataset) == FRAMES and not dataset.is_ood
    by_index = {int(f.id.split("_")[1]): f for f in dataset}
    for i, frame in by_index.items():
        generated = generate_frame(SEED, i, "val", SIZE)
        assert np.array_equal(frame.load_image()[..., ::-1], generated.image)
        assert np.array_equal(frame.load_label(), generated.train_ids)
    only_label_ids = tmp_path / "cs"  # the same frames without the *_labelTrainIds.png files
    for path in root.rglob("*.png"):
        if not path.name.endswith("_labelTrainIds.png"):
            target = only_label_ids / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    mapped = D.open_dataset(f"cityscapes:{only_label_ids}")
    for frame, original in zip(mapped, dataset, strict=True):
        assert frame.label.name.endswith("_gtFine_labelIds.png")
        assert np.array_equal(frame.load_label(), original.load_label())
