"""Plain PyTorch -> ONNX export (``export_onnx``): output conventions, dynamic axes, files."""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
import torch

from pgn_deploy.contract import ArtifactExistsError, BadInputError, UnsupportedModelError
from pgn_deploy.export.onnx_export import export_onnx
from tests.support.graft_checks import run
from tests.support.networks import TinySegNet


class DictOutputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = TinySegNet(channels=(4,), strides=(2,))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(x)
        return {"out": out, "aux": out * 2, "ignored": out.mean()}


@dataclasses.dataclass
class SegmenterOutput:
    logits: torch.Tensor


class LogitsObject(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = TinySegNet(channels=(4,), strides=(4,), mode="none")

    def forward(self, x: torch.Tensor) -> SegmenterOutput:
        return SegmenterOutput(self.net(x))


def _outputs(model: onnx.ModelProto) -> list[str]:
    return [o.name for o in model.graph.output]


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_tensor_output_is_named_out_and_every_axis_but_channels_is_dynamic(exporter):
    torch.manual_seed(0)
    net = TinySegNet(channels=(6,), strides=(2,))
    model = export_onnx(net, torch.randn(1, 3, 32, 32), exporter=exporter)
    assert [i.name for i in model.graph.input] == ["input"] and _outputs(model) == ["out"]
    x = np.random.default_rng(0).standard_normal((3, 3, 25, 41)).astype(np.float32)
    out = run(model, {"input": x})["out"]
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_dict_outputs_keep_out_and_aux():
    model = export_onnx(DictOutputs(), torch.randn(1, 3, 16, 16), exporter="torchscript")
    assert _outputs(model) == ["out", "aux"]


def test_an_object_with_logits_gives_the_logits_output():
    model = export_onnx(LogitsObject(), torch.randn(1, 3, 16, 16), exporter="torchscript")
    assert _outputs(model) == ["logits"]
    assert run(model, {"input": np.zeros((2, 3, 20, 12), np.float32)})["logits"].shape == (2, 5, 5, 3)


def test_the_model_is_saved_atomically_and_never_over_an_existing_file(tmp_path):
    path = tmp_path / "plain.onnx"
    model = export_onnx(TinySegNet(), torch.randn(1, 3, 16, 16), path, exporter="torchscript")
    assert onnx.load(str(path)) == model
    with pytest.raises(ArtifactExistsError):
        export_onnx(TinySegNet(), torch.randn(1, 3, 16, 16), path, exporter="torchscript")
    export_onnx(TinySegNet(), torch.randn(1, 3, 16, 16), path, exporter="torchscript", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.onnx"]


def test_bad_arguments_are_clear_errors():
    with pytest.raises(BadInputError, match="unknown exporter 'tf'"):
        export_onnx(TinySegNet(), torch.randn(1, 3, 16, 16), exporter="tf")
    with pytest.raises(BadInputError, match="N x C x H x W"):
        export_onnx(TinySegNet(), torch.randn(3, 16, 16))

    class Scalar(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            return [x.mean()]

    with pytest.raises(UnsupportedModelError, match="returns list; expected a tensor"):
        export_onnx(Scalar(), torch.randn(1, 3, 16, 16))


def test_a_static_export_keeps_the_example_shape():
    model = export_onnx(TinySegNet(), torch.randn(2, 3, 16, 24), exporter="torchscript", dynamic=False)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 16, 24]


def test_a_torchscript_module_is_exported_as_it_is(tmp_path):
    torch.manual_seed(0)
    net = TinySegNet().eval()
    torch.jit.save(torch.jit.trace(net, torch.randn(1, 3, 16, 16)), tmp_path / "tiny.pt")
    model = export_onnx(torch.jit.load(tmp_path / "tiny.pt"), torch.randn(1, 3, 16, 16), exporter="dynamo")
    assert _outputs(model) == ["out"]
    x = np.random.default_rng(0).standard_normal((2, 3, 20, 28)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run(model, {"input": x})["out"], expected, rtol=1e-4, atol=1e-5)
