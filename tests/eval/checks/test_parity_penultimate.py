"""``pgn-check`` compares penultimate-layer maps with the float64 closed form (the ``self`` check)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from pgn_deploy.contract import PGNSpec, read_metadata, write_metadata
from pgn_deploy.eval.checks.parity import check_parity
from pgn_deploy.export.bn_fold import batch_norm_folds
from pgn_deploy.graft.attach import graft
from tests.support.penultimate_nets import PenultimateNet, export

SPEC = PGNSpec(p=(0.3, 1.0, 2.0), labels=("uni", "oh", "gt"), form="exact", layers=("last", "penultimate"))


def _grafted(tmp_path, bn: str, activation: str = "relu", spec: PGNSpec = SPEC) -> tuple[str, onnx.ModelProto]:
    net = PenultimateNet(3, 2, True, activation, seed=6)
    model = graft(export(net, bn), spec, bn_folds=batch_norm_folds(net) if bn == "folded" else (), weights="trained")
    path = tmp_path / f"{bn}.pgn.onnx"
    onnx.save(model, path)
    return str(path), model


def _penultimate_self(report) -> list:
    return [r for r in report.results if r.check == "self" and r.output.endswith("_penultimate")]


@pytest.mark.parametrize("bn,activation", [("kept", "relu"), ("folded", "relu"), ("folded", "leaky_relu"),
                                           ("kept", "relu6")])
def test_penultimate_maps_pass_the_self_check(tmp_path, bn, activation):
    path, _ = _grafted(tmp_path, bn, activation)
    report = check_parity(path, input_shape="2x3x19x25")
    rows = _penultimate_self(report)
    assert len(rows) == 9 and all(r.status == "pass" and r.compared > 0 for r in rows), report.to_text()
    assert report.verdict == "pass"


def test_a_wrong_penultimate_factor_fails_the_self_check(tmp_path):
    """The check compares something: scaling the graph's ``scale * K^T`` constant by 1.001 fails."""
    _, model = _grafted(tmp_path, "folded", spec=PGNSpec(p=(1.0,), labels=("uni",), layers=("penultimate",)))
    meta = read_metadata(model)
    channels, classes = len(meta.penultimate["scale"]), meta.num_classes
    target = next(t for t in model.graph.initializer if tuple(t.dims) == (channels, classes))
    target.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(target) * np.float32(1.001), target.name))
    path = tmp_path / "tampered.pgn.onnx"
    onnx.save(model, path)
    report = check_parity(str(path), input_shape="1x3x19x25")
    assert [r.status for r in _penultimate_self(report)] == ["fail"]
    assert report.verdict == "fail"


def test_metadata_without_the_penultimate_tensors_skips_with_the_reason(tmp_path):
    _, model = _grafted(tmp_path, "kept", spec=PGNSpec(p=(1.0,), labels=("uni",), layers=("last", "penultimate")))
    meta = read_metadata(model)
    meta.penultimate = {k: v for k, v in meta.penultimate.items() if k not in ("inputs", "pre_activation")}
    write_metadata(model, meta)
    path = tmp_path / "old.pgn.onnx"
    onnx.save(model, path)
    report = check_parity(str(path), input_shape="1x3x19x25")
    [row] = _penultimate_self(report)
    assert row.status == "skip" and "re-export" in row.note
    assert report.verdict == "pass"  # the last layer's map was compared


@pytest.mark.parametrize("bn", ["kept", "folded"])
def test_penultimate_maps_pass_the_reference_check_against_pytorch(tmp_path, bn):
    """The reference check reads psi2 from the PyTorch model (the Conv2d whose weights are the
    graph's penultimate kernel, up to the folded BatchNorm factor) and compares to 1e-4 / p."""
    net = PenultimateNet(3, 2, True, "relu", seed=6)
    checkpoint = tmp_path / "net.pt"
    torch.save({"arch": "tests.support.penultimate_nets:PenultimateNet",
                "arch_kwargs": {"kernel": 3, "dilation": 2, "bias": True, "activation": "relu", "seed": 6},
                "state_dict": net.state_dict()}, checkpoint)
    path, _ = _grafted(tmp_path, bn)
    report = check_parity(path, checkpoint, input_shape="2x3x19x25", samples=1)
    rows = [r for r in report.results if r.check == "reference" and r.output.endswith("_penultimate")]
    assert len(rows) == 9 and all(r.status == "pass" and r.compared > 0 for r in rows), report.to_text()
