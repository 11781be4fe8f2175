"""pgn-metrics end to end: file pairing, score formats, output, plots and bad input."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from pgn_deploy.cli.metrics import main
from pgn_deploy.contract import BadInputError
from pgn_deploy.eval.metrics.score_io import load_npy, pair_directories, read_scores

SHAPE = (48, 64)


def make_frame(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.zeros(SHAPE, np.uint8)
    labels[:6] = 255
    y, x = rng.integers(10, 36), rng.integers(0, 48)
    labels[y:y + 9, x:x + 14] = 1
    scores = (rng.random(SHAPE) * 0.6 + (labels == 1) * 0.35).astype(np.float32)
    return scores, labels


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    """Scores saved as pgn-run names them (<stem>.<map>.npy), SMIYC-style labels with colour previews."""
    scores, labels = tmp_path / "pgn", tmp_path / "labels"
    scores.mkdir()
    labels.mkdir()
    for i in range(4):
        score_map, label_map = make_frame(i)
        np.save(scores / f"frame.{i:02d}.pgn_uni_p0.5.npy", score_map)
        cv2.imwrite(str(labels / f"frame.{i:02d}_labels_semantic.png"), label_map)
        cv2.imwrite(str(labels / f"frame.{i:02d}_labels_semantic_color.png"), np.dstack([label_map] * 3))
    return scores, labels


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_table_row_and_json(dataset, capsys):
    scores, labels = dataset
    code, out, err = run(["--scores", str(scores), "--labels", str(labels)], capsys)
    assert code == 0 and err == ""
    header, row, note = out.strip().splitlines()
    assert header.split()[:6] == ["method", "AuPRC", "FPR95", "sIoU", "PPV", "mean"]
    assert row.split()[0] == "pgn" and "obstacle track" in note and "float32" in note
    code, out, _ = run(["--scores", str(scores), "--labels", str(labels), "--json"], capsys)
    data = json.loads(out)
    assert {"AuPRC", "AuROC", "FPR95", "threshold", "sIoU", "PPV", "mean_F1", "frames", "pixels"} <= set(data)
    assert data["frames"] == 4 and data["pixels"] == 4 * 42 * 64
    assert all(0 <= data[k] <= 1 for k in ("AuPRC", "AuROC", "FPR95", "sIoU", "PPV", "mean_F1"))
    assert float(row.split()[1]) == pytest.approx(100 * data["AuPRC"], abs=0.05)


def test_two_methods_one_table_one_plot_and_16_bit_png(dataset, tmp_path, capsys):
    scores, labels = dataset
    png = tmp_path / "png"
    png.mkdir()
    for path in scores.iterdir():
        value = np.round(np.load(path) * 65535).astype(np.uint16)
        cv2.imwrite(str(png / (path.name.split(".pgn")[0] + ".png")), value)
    plots = tmp_path / "plots"
    argv = ["--scores", str(scores), "--scores", str(png), "--name", "npy", "--name", "png",
            "--labels", str(labels), "--plots", str(plots), "--json", "--binning", "smiyc"]
    code, out, _ = run(argv, capsys)
    rows = json.loads(out)
    assert code == 0 and [r["method"] for r in rows] == ["npy", "png"]
    assert rows[0]["binning"] == "smiyc"
    assert rows[1]["AuPRC"] == pytest.approx(rows[0]["AuPRC"], abs=1e-3)
    assert sorted(p.name for p in plots.iterdir()) == ["pr_curve.png", "roc_curve.png"]
    assert cv2.imread(str(plots / "pr_curve.png")) is not None
    code, _, err = run(argv, capsys)
    assert code == 2 and "exists; pass --force" in err
    assert run(argv + ["--force"], capsys)[0] == 0


def test_a_pgn_run_folder_with_several_maps_and_images(tmp_path, capsys):
    run_out, labels = tmp_path / "run", tmp_path / "labels"
    run_out.mkdir()
    labels.mkdir()
    for i in range(3):
        score_map, label_map = make_frame(i)
        np.save(run_out / f"img{i}.pgn_uni_p0.5.npy", score_map)
        np.save(run_out / f"img{i}.entropy.npy", 1 - score_map)
        cv2.imwrite(str(run_out / f"img{i}.seg.png"), np.dstack([label_map * 100] * 3))
        cv2.imwrite(str(labels / f"img{i}.png"), label_map)
    code, _, err = run(["--scores", str(run_out), "--labels", str(labels)], capsys)
    assert code == 2 and "choose one map with --map" in err
    code, out, _ = run(["--scores", str(run_out), "--map", "pgn_uni_p0.5", "--scores", str(run_out),
                        "--map", "entropy", "--labels", str(labels), "--json"], capsys)
    rows = json.loads(out)
    assert code == 0 and [r["method"] for r in rows] == ["pgn_uni_p0.5", "entropy"]
    assert rows[0]["AuPRC"] > 0.5 > rows[1]["AuPRC"]  # the second map is the reversed score
    code, _, err = run(["--scores", str(run_out), "--map", "msp", "--labels", str(labels)], capsys)
    assert code == 2 and "no score files (<stem>.msp.npy or .png)" in err


def test_png_score_means_value_over_65535(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.array([[0, 65535, 13107]], np.uint16))
    assert read_scores(tmp_path / "a.png").tolist() == [[0.0, 1.0, pytest.approx(0.2)]]


def test_pairing_prefers_the_longest_stem(tmp_path):
    scores, labels = tmp_path / "s", tmp_path / "l"
    scores.mkdir()
    labels.mkdir()
    for name in ("a.b.png", "a.png"):
        cv2.imwrite(str(labels / name), np.zeros((2, 2), np.uint8))
    np.save(scores / "a.b.npy", np.zeros((2, 2), np.float32))
    np.save(scores / "a.entropy.npy", np.zeros((2, 2), np.float32))
    pairs = pair_directories(scores, labels)
    assert [(p.stem, p.scores_path.name, p.labels_path.name) for p in pairs] == [
        ("a", "a.entropy.npy", "a.png"), ("a.b", "a.b.npy", "a.b.png")]


def write_pair(tmp_path: Path, scores: np.ndarray, labels: np.ndarray, score_name: str = "x.npy"):
    score_dir, label_dir = tmp_path / "s", tmp_path / "l"
    score_dir.mkdir(exist_ok=True)
    label_dir.mkdir(exist_ok=True)
    if score_name.endswith(".npy"):
        np.save(score_dir / score_name, scores)
    else:
        cv2.imwrite(str(score_dir / score_name), scores)
    cv2.imwrite(str(label_dir / "x.png"), labels)
    return score_dir, label_dir


GOOD_LABELS = np.array([[0, 1], [255, 0]], np.uint8)


@pytest.mark.parametrize("scores, labels, score_name, message", [
    (np.zeros((2, 3), np.float32), GOOD_LABELS, "x.npy", "scores are 2x3 but labels are 2x2"),
    (np.zeros((2, 2), np.float32), np.array([[0, 2], [1, 0]], np.uint8), "x.npy",
     "label values must be 0, 1 or 255, found 2"),
    (np.array([[0, np.nan], [0, 1]], np.float32), GOOD_LABELS, "x.npy", "1 score(s) are NaN or infinite"),
    (np.array([[0, np.inf], [0, 1]], np.float32), GOOD_LABELS, "x.npy", "NaN or infinite"),
    (np.zeros((2, 2), np.int32), GOOD_LABELS, "x.npy", "must be a float array"),
    (np.zeros((2, 2), np.uint8), GOOD_LABELS, "x.png", "must be single-channel 16-bit"),
    (np.zeros((2, 2), np.float32), GOOD_LABELS, "y.npy", "y.npy has no label"),
])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, capsys, scores, labels, score_name, message):
    score_dir, label_dir = write_pair(tmp_path, scores, labels, score_name)
    code, out, err = run(["--scores", str(score_dir), "--labels", str(label_dir)], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("pgn-metrics: error: ")
    assert message in err and score_name in err and "Traceback" not in err


def test_folder_errors(tmp_path, capsys):
    score_dir, label_dir = write_pair(tmp_path, np.zeros((2, 2), np.float32), GOOD_LABELS)
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["--scores", str(empty), "--labels", str(label_dir)], "no score files"),
        (["--scores", str(score_dir), "--labels", str(tmp_path / "missing")], "labels folder does not exist"),
        (["--scores", str(score_dir), "--labels", str(label_dir), "--name", "a", "--name", "b"],
         "2 name(s) for 1 scores folder"),
    ]
    cv2.imwrite(str(label_dir / "z.png"), GOOD_LABELS)
    cases.append((["--scores", str(score_dir), "--labels", str(label_dir)], "z.png has no scores file"))
    for argv, message in cases:
        code, _, err = run(argv, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    (label_dir / "z.png").unlink()
    np.save(score_dir / "x.entropy.npy", np.zeros((2, 2), np.float32))
    code, _, err = run(["--scores", str(score_dir), "--labels", str(label_dir)], capsys)
    assert code == 2 and "both pair with label x.png" in err


def test_a_split_without_anomalies_is_reported(tmp_path, capsys):
    score_dir, label_dir = write_pair(tmp_path, np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8))
    code, _, err = run(["--scores", str(score_dir), "--labels", str(label_dir)], capsys)
    assert code == 2 and "no anomaly pixels" in err
    with pytest.raises(BadInputError):
        main(["--scores", str(score_dir), "--labels", str(label_dir), "--debug"])


def test_npy_files_load_from_many_threads_as_plain_arrays(tmp_path):
    """The readers' threads load .npy files at once (their headers are parsed one at a time:
    CPython 3.11's AST parser is not safe from threads); each result is an in-memory copy."""
    arrays = [np.random.default_rng(k).random((3 + k % 5, 7), dtype=np.float32) for k in range(64)]
    for k, array in enumerate(arrays):
        np.save(tmp_path / f"{k}.npy", array)
    with ThreadPoolExecutor(8) as pool:
        loaded = list(pool.map(lambda k: load_npy(tmp_path / f"{k}.npy"), range(len(arrays))))
    for got, want in zip(loaded, arrays):
        assert type(got) is np.ndarray and got.flags.writeable
        np.testing.assert_array_equal(got, want)
