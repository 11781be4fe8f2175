"""Penultimate maps of torchvision's DeepLabV3 and FCN heads and of the trained demo network.

Each model is exported by the default (TorchScript) exporter, which folds the head's
BatchNorm into its conv; ``export_model``'s path passes the factor
(:func:`pgn_deploy.export.bn_fold.batch_norm_folds`). The maps at the classifier's resolution
are checked against float64 per-pixel autograd to the trained conv kernel.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from pgn_deploy import reference as R
from pgn_deploy.contract import PGNSpec, parse_map_name, read_metadata
from pgn_deploy.export.bn_fold import batch_norm_folds
from pgn_deploy.export.load import load_model
from pgn_deploy.export.onnx_export import export_onnx
from pgn_deploy.graft.attach import graft
from tests.support.graft_checks import run, with_outputs

DEMO = Path(__file__).resolve().parents[2] / "export" / "models" / "demo_synthroad.pth"


def _torchvision(name: str) -> torch.nn.Module:
    import torchvision

    model = getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None, num_classes=5)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # BN statistics away from the identity, so a missing factor shows
        for module in model.classifier.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) * 2 + 0.2)
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
    return model.eval()


def _demo() -> torch.nn.Module:
    return load_model(DEMO).module.eval()


# name -> (builder, (penultimate conv, its BN, classifier) of the model, input size)
MODELS = {
    "deeplabv3_mobilenet_v3_large": (lambda: _torchvision("deeplabv3_mobilenet_v3_large"),
                                     lambda m: (m.classifier[1], m.classifier[2], m.classifier[4]), (65, 81)),
    "fcn_resnet50": (lambda: _torchvision("fcn_resnet50"),
                     lambda m: (m.classifier[0], m.classifier[1], m.classifier[4]), (49, 63)),
    "demo": (_demo, lambda m: (m.refine[0][0], m.refine[0][1], m.classifier), (64, 96)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_penultimate_maps_of_real_heads_equal_float64_autograd(name):
    build, parts, (height, width) = MODELS[name]
    model = build()
    onnx_model = export_onnx(model, torch.randn(1, 3, height, width), exporter="torchscript")
    spec = PGNSpec(p=(0.3, 1.0, 2.0), labels=("uni", "oh"), form="exact", layers=("penultimate",),
                   keep_feature_size=True)
    grafted = graft(onnx_model, spec, bn_folds=batch_norm_folds(model), weights="trained")
    meta = read_metadata(grafted)
    assert meta.penultimate["weights"] == "trained" and meta.penultimate["scale_from"] == "exporter"
    conv_node = next(n for n in grafted.graph.node if n.name == meta.penultimate["conv"])
    image = np.random.default_rng(0).standard_normal((2, 3, height, width)).astype(np.float32)
    outputs = run(with_outputs(grafted, [conv_node.input[0]]), {"input": image})
    psi2 = torch.from_numpy(outputs[conv_node.input[0]]).double()
    conv, batch_norm, classifier = (copy.deepcopy(m).double() for m in parts(model))
    size = outputs[meta.pgn_outputs[0]].shape[-2:]
    rng = np.random.default_rng(1)
    pixels = [(int(rng.integers(2)), int(rng.integers(size[0])), int(rng.integers(size[1]))) for _ in range(8)]
    # FCN's head conv has 9.4 M weights: one backward pass per pixel and map, so two maps there
    for output in meta.pgn_outputs if name != "fcn_resnet50" else ["pgn_oh_p0.3_penultimate", "pgn_uni_p2_penultimate"]:
        label, p, _ = parse_map_name(output)
        oracle = R.autograd_penultimate_pgn(psi2, conv, batch_norm, classifier, pixels, p, label)
        graph = torch.tensor([float(outputs[output][n, 0, y, x]) for n, y, x in pixels], dtype=torch.float64)
        err = ((graph - oracle).abs() / oracle.abs().clamp_min(1e-30)).max().item()
        assert err < 1e-5, (output, err)
