"""export_model on heads the exporters change: a BatchNorm folded into the classifier (trained
vs graph weights), a model only one exporter can export (fallback, --static-shape), a graft
that would not run or whose maps are not finite (nothing written), and ``--explain``."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pgn_deploy.cli.export import main as export_main
from pgn_deploy.contract import UnsupportedModelError, make_spec, read_metadata
from pgn_deploy.export.api import explain_head, export_model
from pgn_deploy.export.onnx_export import exporter_error
from tests.support.head_checks import check_graft_family, conv_oracle

NUM_CLASSES = 4


class BatchNormHead(nn.Module):
    """features -> 1x1 classifier -> BatchNorm2d over the classes (folded by the exporter)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 10, 3, 2, 1)
        self.classifier = nn.Conv2d(10, NUM_CLASSES, 1)
        self.norm = nn.BatchNorm2d(NUM_CLASSES)
        generator = torch.Generator().manual_seed(3)
        with torch.no_grad():
            self.classifier.weight.mul_(4.0)
            self.norm.weight.copy_(torch.rand(NUM_CLASSES, generator=generator) * 2 + 0.5)
            self.norm.bias.copy_(torch.randn(NUM_CLASSES, generator=generator))
            self.norm.running_mean.copy_(torch.randn(NUM_CLASSES, generator=generator))
            self.norm.running_var.copy_(torch.rand(NUM_CLASSES, generator=generator) * 3 + 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.norm(self.classifier(F.relu(self.stem(x)))), scale_factor=2, mode="bilinear")

    def factor(self) -> torch.Tensor:
        """The per-class factor the exporter folds into the classifier."""
        return (self.norm.weight / torch.sqrt(self.norm.running_var + self.norm.eps)).detach().double()


class OddPooling(nn.Module):
    """Adaptive pooling to 3 x 3: the TorchScript exporter cannot export it with dynamic sizes
    (input size not accessible); with a static 48 x 48 input (12 x 12 features) it can."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, 4, 1)
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.classifier = nn.Conv2d(12, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = F.relu(self.stem(x))
        context = F.interpolate(self.pool(features), size=features.shape[-2:], mode="bilinear")
        return self.classifier(torch.cat([features, context], dim=1))


class GroupedHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1)
        self.classifier = nn.Conv2d(8, NUM_CLASSES, 1, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.relu(self.stem(x)))


def _save(module: nn.Module, path) -> str:
    torch.manual_seed(0)
    torch.save(module.eval(), path)
    return str(path)


@pytest.fixture(scope="module")
def bn_checkpoint(tmp_path_factory) -> tuple[str, BatchNormHead]:
    torch.manual_seed(0)
    module = BatchNormHead().eval()
    return _save(module, tmp_path_factory.mktemp("bn") / "bn.pth"), module


def _images() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)


def test_a_folded_batchnorm_is_undone_the_maps_are_w_r_t_the_trained_weights(bn_checkpoint, tmp_path):
    path, module = bn_checkpoint
    result = export_model(path, tmp_path / "bn.pgn.onnx", trust_pickle=True, input_shape="1x3x32x32")
    head = result.metadata.head
    assert head.weights == "trained" and "folded" in head.weights_note and result.notes
    np.testing.assert_allclose(head.class_scale, module.factor().numpy(), rtol=1e-5)
    assert not head.affine  # the BatchNorm is not in the graph: the exporter folded it
    import onnx

    plain = onnx.load(str(tmp_path / "bn.pgn.onnx"))
    del plain.metadata_props[:]
    bn = module.norm
    after = lambda z: F.batch_norm(z, bn.running_mean.double(), bn.running_var.double(),  # noqa: E731
                                   bn.weight.detach().double(), bn.bias.detach().double(), eps=bn.eps)
    oracle = conv_oracle(module.classifier, after, module.factor())
    check_graft_family(_strip_pgn(plain), oracle, _images(),
                       graft_kwargs={"folded_scale": list(module.factor().numpy()), "weights": "trained"})


def test_weights_graph_is_the_gradient_w_r_t_the_folded_weights(bn_checkpoint, tmp_path):
    path, module = bn_checkpoint
    result = export_model(path, tmp_path / "graph.pgn.onnx", trust_pickle=True, input_shape="1x3x32x32",
                          weights="graph")
    head = result.metadata.head
    assert head.weights == "graph" and head.class_scale is None and "--weights graph" in head.weights_note


def test_an_onnx_checkpoint_says_that_a_fold_cannot_be_undone(bn_checkpoint, tmp_path):
    path, _ = bn_checkpoint
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(torch.load(path, weights_only=False), (torch.randn(1, 3, 32, 32),), str(plain), dynamo=False,
                      input_names=["input"], output_names=["out"])
    result = export_model(plain, tmp_path / "plain.pgn.onnx")
    assert result.metadata.head.weights == "graph"
    assert "cannot be undone" in result.metadata.head.weights_note


def _strip_pgn(grafted):
    """The plain model inside a grafted one: its original nodes, outputs and initializers."""
    import onnx

    meta = read_metadata(grafted) if grafted.metadata_props else None
    model = onnx.ModelProto()
    model.CopyFrom(grafted)
    del model.metadata_props[:]
    original = set(meta.original_outputs) if meta else {"out"}
    keep_outputs = [o for o in model.graph.output if o.name in original]
    del model.graph.output[:]
    model.graph.output.extend(keep_outputs)
    nodes = [n for n in model.graph.node if not n.name.startswith("pgn/")]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    inits = [i for i in model.graph.initializer if not i.name.startswith("pgn/")]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    return model


def test_a_map_that_is_not_finite_writes_nothing(bn_checkpoint, tmp_path):
    path, _ = bn_checkpoint
    output = tmp_path / "huge.pgn.onnx"
    with pytest.raises(UnsupportedModelError, match="not finite.*nothing was written"):
        export_model(path, output, spec=make_spec(p=1e9), trust_pickle=True, input_shape="1x3x32x32")
    assert not output.exists()


@pytest.mark.slow
def test_the_other_exporter_is_tried_and_static_shape_works(tmp_path):
    path = _save(OddPooling(), tmp_path / "odd.pth")
    result = export_model(path, tmp_path / "odd.pgn.onnx", trust_pickle=True, input_shape="1x3x48x48")
    assert result.exporter == "dynamo"
    assert "torchscript exporter failed" in result.notes[0] and "\n" not in result.notes[0]
    static = export_model(path, tmp_path / "static.pgn.onnx", trust_pickle=True, input_shape="1x3x48x48",
                          exporter="torchscript", static_shape=True)
    assert static.exporter == "torchscript" and not static.metadata.input.dynamic_size
    with pytest.raises(UnsupportedModelError, match="try --static-shape"):
        export_model(path, tmp_path / "no.pgn.onnx", trust_pickle=True, input_shape="1x3x48x48", exporter="torchscript")


def test_exporter_errors_are_one_line_without_colour_codes():
    try:
        try:
            raise ValueError("\x1b[31mbad op\x1b[0m adaptive_avg_pool2d [Caused by the value x]\nmore")
        except ValueError as inner:
            raise RuntimeError("Failed to export. This is step 1/3") from inner
    except RuntimeError as exc:
        assert exporter_error(exc) == "ValueError: bad op adaptive_avg_pool2d"


def test_explain_prints_the_head_or_the_rule_it_broke(bn_checkpoint, tmp_path, capsys):
    path, _ = bn_checkpoint
    report = explain_head(path, trust_pickle=True, input_shape="1x3x32x32")
    assert report.refusal is None and [op[0] for op in report.ops] == ["classifier", "spatial"]
    assert export_main([path, "--trust-pickle", "--input-shape", "1x3x32x32", "--explain"]) == 0
    assert "kernel 1x1" in capsys.readouterr().out
    grouped = _save(GroupedHead(), tmp_path / "grouped.pth")
    assert export_main([grouped, "--trust-pickle", "--input-shape", "1x3x32x32", "--explain", "--json"]) == 1
    refusal = json.loads(capsys.readouterr().out)["refusal"]
    assert "grouped (group=2)" in refusal
    assert not list(tmp_path.glob("*.onnx"))
