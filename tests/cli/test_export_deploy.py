"""pgn-export's deployment flags end to end on an ONNX checkpoint (no PyTorch needed):
--calib, --normalize, --input-format, --mean/--std, --outputs."""
from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest

from pgn_deploy.cli.export import main
from pgn_deploy.contract import read_metadata
from pgn_deploy.runtime import Runtime
from pgn_deploy.runtime.stats import percentile_rank
from tests.support.runtime_models import plain_model


@pytest.fixture()
def plain(tmp_path):
    path = tmp_path / "plain.onnx"
    onnx.save(plain_model(), str(path))
    return path


@pytest.fixture()
def frames(tmp_path):
    folder = tmp_path / "id_frames"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    return folder


def test_calibrated_normalized_uint8_model_with_chosen_outputs(plain, frames, tmp_path, capsys):
    out = tmp_path / "deploy.pgn.onnx"
    code = main([str(plain), "-o", str(out), "--pred", "--calib", str(frames), "--normalize",
                 "--input-format", "uint8-nhwc-bgr", "--mean", "0.5", "0.5", "0.5", "--std", "0.25", "0.25", "0.25",
                 "--outputs", "pred", "pgn_uni_p0.5", "pgn_uni_p0.5_norm", "ood_mask", "--json"])
    assert code == 0
    meta = read_metadata(out)
    assert json.loads(capsys.readouterr().out)["metadata"]["input"]["format"] == "uint8-nhwc-bgr"
    assert (meta.input.mean, meta.input.std, meta.input.assumed_normalization) == ((0.5,) * 3, (0.25,) * 3, False)
    entry = meta.calibration["pgn_uni_p0.5"]
    assert entry["n_images"] == 3 and entry["threshold_rule"] == "q0.995"
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["pgn_uni_p0.5", "pred", "pgn_uni_p0.5_norm",
                                                                 "ood_mask"]
    image = cv2.imread(str(frames / "1.png"))
    result = Runtime(out, "ort-cpu").run(image, color="BGR")
    np.testing.assert_array_equal(result.ood_mask(), result.scores["pgn_uni_p0.5"] >= np.float32(entry["threshold"]))
    assert percentile_rank(result.scores["pgn_uni_p0.5"], entry).max() <= 1.0


def test_normalize_without_calib_and_bad_formats_are_refused_before_work(plain, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    assert main([str(plain), "-o", str(out), "--normalize"]) == 2
    assert "--normalize needs --calib" in capsys.readouterr().err
    assert main([str(plain), "-o", str(out), "--mean", "0.5", "0.5", "0.5"]) == 2
    assert "--mean and --std together" in capsys.readouterr().err
    assert main([str(plain), "-o", str(out), "--outputs", "nothing"]) == 2
    assert "lacks" in capsys.readouterr().err
    assert not out.exists()
