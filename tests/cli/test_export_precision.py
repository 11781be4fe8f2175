"""pgn-export --precision: one call gives a half-precision network with float32 PGN maps."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from pgn_deploy.cli.export import main as export_main
from pgn_deploy.contract import read_metadata
from tests.support.networks import TinySegNet


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = TinySegNet()
    path = tmp_path_factory.mktemp("prec") / "tiny.pth"
    torch.save({"arch": "tests.support.networks:TinySegNet", "arch_kwargs": {},
                "state_dict": model.state_dict(), "input": {"size": [32, 48]}}, path)
    return path


def test_fp16_export_keeps_pgn_float32_and_close_to_fp32(checkpoint, tmp_path):
    fp32, fp16 = tmp_path / "a.pgn.onnx", tmp_path / "b.pgn.onnx"
    assert export_main([str(checkpoint), "-o", str(fp32), "--pred"]) == 0
    assert export_main([str(checkpoint), "-o", str(fp16), "--pred", "--precision", "fp16"]) == 0
    assert read_metadata(fp16).precision == "fp16"
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 48)).astype(np.float32)
    names = ["pgn_uni_p0.5", "pred"]
    ref = ort.InferenceSession(str(fp32)).run(names, {"input": x})
    half = ort.InferenceSession(str(fp16)).run(names, {"input": x})
    assert half[0].dtype == np.float32
    assert np.abs(half[0] - ref[0]).max() <= 1e-2 * np.abs(ref[0]).max()
    assert (half[1] == ref[1]).mean() >= 0.99


def test_unknown_precision_writes_nothing(checkpoint, tmp_path, capsys):
    out = tmp_path / "c.pgn.onnx"
    with pytest.raises(SystemExit):
        export_main([str(checkpoint), "-o", str(out), "--precision", "int4"])
    assert not out.exists()
