"""Penultimate-layer maps of the grafted graph against float64 autograd and the closed form.

The networks are ``stem -> Conv_k -> BN -> act -> Dropout -> 1x1 classifier -> bilinear resize``
exported by PyTorch with the BN kept (no constant folding) or folded into the conv (the
TorchScript exporter; the factor then comes from :func:`pgn_deploy.export.bn_fold.batch_norm_folds`).
"""
from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pgn_deploy import reference as R
from pgn_deploy.contract import PGNSpec, UnsupportedModelError, parse_map_name, read_metadata
from pgn_deploy.export.bn_fold import batch_norm_folds
from pgn_deploy.graft.attach import graft
from tests.support.graft_checks import run, with_outputs
from tests.support.penultimate_nets import SIZE, PenultimateNet, export

P_VALUES = (0.1, 0.3, 0.5, 1.0, 2.0)


def _graph_tensors(grafted: onnx.ModelProto, image: np.ndarray, gt: np.ndarray | None) -> tuple[dict, np.ndarray]:
    """Outputs of ``grafted`` plus psi2 (the penultimate conv's input)."""
    meta = read_metadata(grafted)
    conv = next(n for n in grafted.graph.node if n.name == meta.penultimate["conv"])
    feeds = {"input": image} | ({"pgn_gt": gt} if gt is not None else {})
    outputs = run(with_outputs(grafted, [conv.input[0]]), feeds)
    return outputs, outputs[conv.input[0]]


def _pixels(shape: tuple[int, ...], count: int = 40, seed: int = 0) -> list[tuple[int, int, int]]:
    rng = np.random.default_rng(seed)
    return [tuple(int(rng.integers(size)) for size in shape[:3]) for _ in range(count)]


def _head64(net: PenultimateNet) -> tuple[nn.Conv2d, nn.BatchNorm2d, nn.Conv2d]:
    net64 = copy.deepcopy(net).double()
    return net64.conv, net64.bn, net64.cls


@pytest.mark.parametrize("kernel,dilation,bias,bn", [
    (1, 1, False, "kept"),
    (3, 2, True, "kept"),
    (1, 1, True, "folded"),
    (3, 2, False, "folded"),
])
def test_exact_penultimate_maps_equal_float64_autograd(kernel, dilation, bias, bn):
    net = PenultimateNet(kernel, dilation, bias)
    spec = PGNSpec(p=P_VALUES, labels=("uni", "oh", "gt"), form="exact", layers=("last", "penultimate"),
                   keep_feature_size=True)
    grafted = graft(export(net, bn), spec, bn_folds=batch_norm_folds(net), weights="trained")
    meta = read_metadata(grafted)
    assert meta.penultimate["weights"] == "trained"
    assert meta.penultimate["batch_norm"] == bn
    assert meta.penultimate["scale_from"] == {"kept": "graph", "folded": "exporter"}[bn]
    rng = np.random.default_rng(1)
    image = rng.standard_normal(SIZE).astype(np.float32)
    gt = rng.integers(0, 5, (SIZE[0], *SIZE[2:])).astype(np.int64)
    outputs, psi2 = _graph_tensors(grafted, image, gt)
    conv, batch_norm, classifier = _head64(net)
    psi2 = torch.from_numpy(psi2).double()
    size = outputs["pgn_uni_p1_penultimate"].shape[-2:]
    gt_here = F.interpolate(torch.from_numpy(gt)[:, None].double(), size=size, mode="nearest")[:, 0].long()
    pixels = _pixels((SIZE[0], *size), 16)
    names = [n for n in meta.pgn_outputs if parse_map_name(n)[2] == "penultimate"]
    assert len(names) == 15
    for name in names:
        label, p, _ = parse_map_name(name)
        oracle = R.autograd_penultimate_pgn(psi2, conv, batch_norm, classifier, pixels, p, label, gt=gt_here)
        graph = torch.tensor([float(outputs[name][n, 0, y, x]) for n, y, x in pixels], dtype=torch.float64)
        err = ((graph - oracle).abs() / oracle.abs().clamp_min(1e-30)).max().item()
        assert err < 1e-5, (name, err)


@pytest.mark.parametrize("activation", ["leaky_relu", "relu6", "identity"])
def test_paper_penultimate_maps_equal_closed_form_resized(activation):
    """Paper form with the default resize to the input size, other activations, BN folded."""
    net = PenultimateNet(3, 1, False, activation, seed=2)
    spec = PGNSpec(p=(0.3, 0.5, 2.0), labels=("uni", "oh"), layers=("penultimate",))
    grafted = graft(export(net, "folded"), spec, bn_folds=batch_norm_folds(net), weights="trained")
    meta = read_metadata(grafted)
    assert meta.pgn_outputs == spec.map_names and all(n.endswith("_penultimate") for n in meta.pgn_outputs)
    image = np.random.default_rng(3).standard_normal(SIZE).astype(np.float32)
    outputs, psi2 = _graph_tensors(grafted, image, None)
    conv, batch_norm, classifier = _head64(net)
    for name in meta.pgn_outputs:
        label, p, _ = parse_map_name(name)
        with torch.no_grad():
            closed = R.penultimate_pgn_module(torch.from_numpy(psi2).double(), conv, batch_norm, classifier, p, label,
                                              "paper", activation=activation, negative_slope=0.1)
        expected = F.interpolate(closed[:, None], size=SIZE[2:], mode="bilinear", align_corners=False)[:, 0].numpy()
        # every pixel of the resized map, not a sample: the worst of 950 pixels (float32 conv, BN,
        # classifier and bilinear weights against float64) reaches 1.03e-5 at p = 0.3
        np.testing.assert_allclose(outputs[name][:, 0], expected, rtol=2e-5, atol=1e-30, err_msg=name)


def test_folded_bn_without_the_exporters_factor_is_the_graph_kernel():
    """An ONNX file with the BN folded and no PyTorch module: gradient w.r.t. the folded kernel,
    and the metadata says so."""
    net = PenultimateNet(3, 2, True, seed=4)
    grafted = graft(export(net, "folded"), PGNSpec(p=(1.0,), labels=("oh",), form="exact", layers=("penultimate",),
                                                   keep_feature_size=True))
    assert read_metadata(grafted).penultimate["weights"] == "graph"
    image = np.random.default_rng(5).standard_normal(SIZE).astype(np.float32)
    outputs, psi2 = _graph_tensors(grafted, image, None)
    conv, batch_norm, classifier = _head64(net)
    pixels = _pixels((SIZE[0], *outputs["pgn_oh_p1_penultimate"].shape[-2:]), 10)
    oracle = R.autograd_penultimate_pgn(torch.from_numpy(psi2).double(), conv, batch_norm, classifier, pixels, 1.0,
                                        "oh", weights="graph")
    graph = torch.tensor([float(outputs["pgn_oh_p1_penultimate"][n, 0, y, x]) for n, y, x in pixels]).double()
    assert ((graph - oracle).abs() / oracle).max().item() < 1e-5


def test_multi_branch_head_is_refused_with_the_reason():
    from tests.support.networks import onnx_head_model

    model = onnx_head_model(4, [6, 5], [1, 2], [True, True])
    with pytest.raises(UnsupportedModelError, match="one classifier conv"):
        graft(model, PGNSpec(layers=("penultimate",)))
