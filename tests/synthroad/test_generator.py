"""SynthRoad: determinism, OoD labels that cover exactly the inserted objects, the on-disk
layouts (written, read back, never overwritten), and the pgn-synthroad CLI."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pgn_deploy.cli.synthroad import main as synthroad_main
from pgn_deploy.contract import ArtifactExistsError, BadInputError
from pgn_deploy.synthroad.generator import (
    IGNORE,
    ROAD,
    SPLITS,
    USED_CLASSES,
    generate_frame,
    label_ids,
    ood_labels,
)
from pgn_deploy.synthroad.layouts import (
    LAF_KNOWN_IDS,
    LAF_OBSTACLE_IDS,
    LAYOUTS,
    laf_label_ids,
    write_synthroad,
)

SIZE = (128, 256)


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image.ndim == 3 else image


@pytest.mark.parametrize("split", SPLITS)
def test_frames_are_a_pure_function_of_seed_index_split(split):
    order_a = [generate_frame(3, i, split, SIZE) for i in (0, 1, 2)]
    order_b = {i: generate_frame(3, i, split, SIZE) for i in (2, 0, 1)}
    for i, frame in enumerate(order_a):
        other = order_b[i]
        assert np.array_equal(frame.image, other.image)
        assert np.array_equal(frame.train_ids, other.train_ids)
        assert np.array_equal(frame.ood_instances, other.ood_instances)
    assert frame.image.shape == (*SIZE, 3) and frame.image.dtype == np.uint8
    assert not np.array_equal(order_a[0].image, order_a[1].image)
    assert not np.array_equal(order_a[0].image, generate_frame(4, 0, split, SIZE).image)


@pytest.mark.parametrize("split", ["train", "val"])
def test_in_distribution_frames_use_only_the_drawn_classes(split):
    seen = set()
    for i in range(6):
        frame = generate_frame(0, i, split, SIZE)
        assert not frame.ood_mask.any()
        seen |= set(np.unique(frame.train_ids).tolist())
    assert seen <= set(USED_CLASSES)
    assert {ROAD, 10, 13} <= seen  # road, sky and cars appear in every few frames


@pytest.mark.parametrize("split,track", [("obstacle", "obstacle"), ("anomaly", "anomaly"),
                                         ("lostandfound", "obstacle")])
def test_ood_labels_cover_exactly_the_inserted_objects(split, track):
    for i in range(8):
        frame = generate_frame(1, i, split, SIZE)
        labels = ood_labels(frame, track)
        assert frame.num_ood_objects >= 1
        assert np.array_equal(labels == 1, frame.ood_mask)
        assert np.array_equal(frame.train_ids == IGNORE, frame.ood_mask)
        known = ~frame.ood_mask
        if track == "obstacle":  # RoadObstacle21: the region of interest is the road
            assert np.array_equal(labels[known] == 0, frame.train_ids[known] == ROAD)
            assert set(np.unique(labels[known])) <= {0, IGNORE}
        else:
            assert (labels[known] == 0).all()


def test_label_ids_are_cityscapes_ids():
    frame = generate_frame(0, 0, "val", SIZE)
    ids = label_ids(frame.train_ids)
    assert set(np.unique(ids)) <= {7, 8, 11, 17, 20, 21, 22, 23, 24, 26}
    assert np.array_equal(ids == 7, frame.train_ids == ROAD)


def test_lostandfound_ids_mark_known_and_unlabelled_frames():
    for i in range(10):
        frame = generate_frame(0, i, "lostandfound", SIZE)
        ids = laf_label_ids(frame)
        present = set(np.unique(ids).tolist())
        if i == 7:
            assert present == {0}
            continue
        assert np.array_equal(ids == 1, frame.train_ids == ROAD)
        assert np.array_equal(ids >= 2, frame.ood_mask)
        objects = present - {0, 1}
        assert objects <= set(LAF_OBSTACLE_IDS) | set(LAF_KNOWN_IDS)
        assert bool(objects & set(LAF_KNOWN_IDS)) == (i % 5 == 3)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthroad")
    summary = write_synthroad(out, frames=4, seed=5, size=SIZE, progress=False)
    return out, summary


def test_every_layout_is_written_and_reads_back(written):
    out, summary = written
    assert set(summary) == set(LAYOUTS)
    city = out / "cityscapes"
    stems = sorted(p.name[: -len("_leftImg8bit.png")] for p in city.glob("leftImg8bit/val/*/*_leftImg8bit.png"))
    assert len(stems) == 4
    for i, stem in enumerate(sorted(stems, key=lambda s: int(s.split("_")[1]))):
        frame = generate_frame(5, i, "val", SIZE)
        folder = stem.split("_")[0]
        assert np.array_equal(_read(city / "leftImg8bit/val" / folder / f"{stem}_leftImg8bit.png"), frame.image)
        gt = city / "gtFine/val" / folder
        assert np.array_equal(_read(gt / f"{stem}_gtFine_labelTrainIds.png"), frame.train_ids)
        assert np.array_equal(_read(gt / f"{stem}_gtFine_labelIds.png"), label_ids(frame.train_ids))
    for folder, ext, split, track in (("dataset_AnomalyTrack", "jpg", "anomaly", "anomaly"),
                                      ("dataset_ObstacleTrack", "webp", "obstacle", "obstacle")):
        for i in range(4):
            frame = generate_frame(5, i, split, SIZE)
            image = _read(out / folder / "images" / f"synthroad_{i:04d}.{ext}")
            assert image.shape == frame.image.shape
            assert np.abs(image.astype(int) - frame.image).mean() < 8  # lossy formats
            label = _read(out / folder / "labels_masks" / f"synthroad_{i:04d}_labels_semantic.png")
            assert np.array_equal(label, ood_labels(frame, track))
    laf = out / "dataset_LostAndFound"
    labels = sorted(laf.glob("gtCoarse/test/*/*_gtCoarse_labelIds.png"))
    assert len(labels) == 4 and len(list(laf.glob("leftImg8bit/test/*/*_leftImg8bit.png"))) == 4
    fishy = sorted(laf.glob("fishyscapes/*_labels.png"))
    assert len(fishy) == 3  # frame 3 carries a known class
    for path in fishy:
        assert set(np.unique(_read(path))) == {0, 1}
        fid = path.name[: -len("_labels.png")]
        assert len(list(laf.glob(f"leftImg8bit/test/*/{fid}_leftImg8bit.png"))) == 1
    runs = json.loads((out / "synthroad.json").read_text())["runs"]
    assert runs[0]["seed"] == 5 and runs[0]["frames"] == 4


def test_existing_files_are_never_overwritten(written):
    out, _ = written
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ArtifactExistsError):
        write_synthroad(out, frames=5, seed=5, size=SIZE, progress=False)
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in out.rglob(".*.tmp")]


def test_bad_arguments_raise_one_clear_error(tmp_path):
    for kwargs in ({"frames": 0}, {"frames": 2, "seed": -1}, {"frames": 2, "layouts": ["kitti"]},
                   {"frames": 2, "size": (8, 8)}):
        with pytest.raises(BadInputError):
            write_synthroad(tmp_path / "x", progress=False, **kwargs)
    assert not (tmp_path / "x").exists()


def test_cli_writes_a_layout(tmp_path, capsys):
    rc = synthroad_main(["--out", str(tmp_path / "o"), "--frames", "2", "--layout", "roadanomaly21",
                         "--size", "128x256", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["roadanomaly21"]["frames"] == 2
    assert len(list((tmp_path / "o/dataset_AnomalyTrack/images").glob("*.jpg"))) == 2


@pytest.mark.parametrize("argv", [
    ["--frames", "0"],
    ["--frames", "2", "--size", "12x12"],
    ["--frames", "2", "--seed", "-3"],
    ["--frames", "1", "OUT_IS_A_FILE"],
])
def test_cli_bad_input_gives_one_line_and_nonzero_exit(tmp_path, capsys, argv):
    target = tmp_path / "out"
    if argv[-1] == "OUT_IS_A_FILE":
        argv = argv[:-1]
        target.write_text("not a folder")
    rc = synthroad_main(["--out", str(target), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert len(err) == 1 and err[0].startswith("pgn-synthroad: error:")
    assert "Traceback" not in err[0]
