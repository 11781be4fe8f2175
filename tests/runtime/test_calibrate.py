"""Calibration: statistics measured on images, stored atomically in the model's metadata."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pgn_deploy import contract as C
from pgn_deploy.cli.calibrate import main as calibrate_main
from pgn_deploy.runtime import Runtime, calibrate
from tests.support.runtime_models import build_model


def images(count: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (24 + 4 * i, 32, 3), dtype=np.uint8) for i in range(count)]


@pytest.fixture()
def model(tmp_path):
    return build_model(tmp_path / "m.pgn.onnx")


def test_calibrate_rewrites_the_model_with_statistics_of_every_map(model):
    runtime = Runtime(model, "ort-cpu")
    expected = {}
    results = [runtime.run(img) for img in images()]
    for name in runtime.score_names:
        values = np.concatenate([r.scores[name].ravel() for r in results]).astype(np.float64)
        expected[name] = (np.quantile(values, 0.99), values.max(), values.size)
    report = calibrate(model, images(), in_place=True, backend="ort-cpu")
    assert report.path == model and report.n_images == 3
    stored = C.read_metadata(model).calibration
    assert stored == report.calibration and set(stored) == set(runtime.score_names)
    for name, (q99, top, count) in expected.items():
        assert stored[name]["q"]["0.99"] == pytest.approx(q99, rel=1e-6)
        assert stored[name]["max"] == pytest.approx(top, rel=1e-6)
        assert stored[name]["n_pixels"] == count
    calibrated = Runtime(model, "ort-cpu").run(images()[0])
    assert stored["pgn_uni_p0.5"]["threshold"] == stored["pgn_uni_p0.5"]["q"]["0.995"]
    assert stored["pgn_uni_p0.5"]["threshold_rule"] == "q0.995"
    limit = np.float32(stored["pgn_uni_p0.5"]["q"]["0.995"])
    np.testing.assert_array_equal(calibrated.ood_mask(), calibrated.scores["pgn_uni_p0.5"] >= limit)
    assert not list(model.parent.glob(".*.tmp"))


def test_subsampling_caps_the_pixels_per_image(model):
    report = calibrate(model, images(2), in_place=True, max_pixels_per_image=100, backend="ort-cpu")
    # 24 x 32 = 768 pixels -> every 8th = 96; 28 x 32 = 896 -> every 9th = 100
    assert report.calibration["msp"]["n_pixels"] == 96 + 100


def test_calibrate_to_a_new_file_and_refuse_overwrites(model, tmp_path):
    out = tmp_path / "calibrated.pgn.onnx"
    calibrate(model, images(1), out, backend="ort-cpu")
    assert C.read_metadata(model).calibration is None
    assert C.read_metadata(out).calibration is not None
    with pytest.raises(C.ArtifactExistsError, match="--force"):
        calibrate(model, images(1), out, backend="ort-cpu")
    calibrate(model, images(2), out, force=True, backend="ort-cpu")
    assert C.read_metadata(out).calibration["msp"]["n_images"] == 2


def test_calibrate_refuses_bad_image_lists(model, tmp_path):
    with pytest.raises(C.BadInputError, match="at least one"):
        calibrate(model, [], in_place=True, backend="ort-cpu")
    with pytest.raises(C.BadInputError, match="not both"):
        calibrate(model, [images(1)[0], tmp_path], in_place=True, backend="ort-cpu")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"broken")
    with pytest.raises(C.BadInputError, match="bad.png: not a readable image"):
        calibrate(model, [bad], in_place=True, backend="ort-cpu")


def test_calibrate_needs_an_output_file_or_in_place(model, tmp_path, capsys):
    before = model.read_bytes()
    with pytest.raises(C.BadInputError, match="-o OUT.onnx .* --in-place"):
        calibrate(model, images(1), backend="ort-cpu")
    with pytest.raises(C.BadInputError, match="contradict"):
        calibrate(model, images(1), tmp_path / "x.onnx", in_place=True, backend="ort-cpu")
    assert calibrate_main([str(model), str(tmp_path)]) == 2
    assert "pgn-calibrate: error: say where the calibrated model goes" in capsys.readouterr().err
    assert model.read_bytes() == before and not (tmp_path / "x.onnx").exists()


def test_pgn_calibrate_reads_folders_and_prints_json(model, tmp_path, capsys):
    folder = tmp_path / "id"
    (folder / "sub").mkdir(parents=True)
    for i, img in enumerate(images()):
        cv2.imwrite(str(folder / ("sub" if i else "") / f"{i}.png"), img)
    assert calibrate_main([str(model), str(folder), "--in-place", "--json", "--backend", "ort-cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_images"] == 3 and "pgn_uni_p0.5" in report["calibration"]
    assert calibrate_main([str(model), str(tmp_path / "nothing"), "--in-place"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
