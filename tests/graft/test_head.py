"""Head detection and the graft's contract: hints, refusals, ops between the head and the
logits (Slice, Transpose, constant bias), metadata, names, and the input model left untouched."""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from pgn_deploy.contract import (
    BadInputError,
    InputInfo,
    PGNSpec,
    UnsupportedModelError,
    read_metadata,
)
from pgn_deploy.export.onnx_export import export_onnx
from pgn_deploy.graft.attach import find_head, graft
from tests.support.graft_checks import run
from tests.support.networks import TinySegNet, onnx_head_model


def _image(batch: int = 2, height: int = 24, width: int = 32) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((batch, 3, height, width)).astype(np.float32)


def _with_tail(model: onnx.ModelProto, tail: list[tuple[str, list[str], dict]],
               inits: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """``model`` whose output ``out`` is renamed and fed through ``tail`` ops (op, extra inputs,
    attributes) to a new rank-4 output ``out``."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for node in graph.node:
        node.output[:] = ["tail_0" if o == "out" else o for o in node.output]
    for i, (op, extra, attributes) in enumerate(tail):
        output = "out" if i == len(tail) - 1 else f"tail_{i + 1}"
        graph.node.append(helper.make_node(op, [f"tail_{i}", *extra], [output], name=f"tail_{op}_{i}", **attributes))
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in (inits or {}).items())
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [None] * 4))
    return model


@pytest.fixture(scope="module")
def head_model() -> onnx.ModelProto:
    return onnx_head_model(num_classes=4, channels=[6], strides=[2], relu=[True])


class TwoHeads(torch.nn.Module):
    """torchvision-style ``{"out", "aux"}``: two classifier heads on one backbone."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Conv2d(3, 8, 3, 2, 1)
        self.main = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, 1, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))
        self.aux = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        size = x.shape[-2:]
        return {
            "out": torch.nn.functional.interpolate(self.main(features), size=size, mode="bilinear"),
            "aux": torch.nn.functional.interpolate(self.aux(features), size=size, mode="bilinear"),
        }


@pytest.fixture(scope="module")
def two_heads() -> onnx.ModelProto:
    torch.manual_seed(0)
    return export_onnx(TwoHeads(), torch.randn(1, 3, 24, 32), exporter="torchscript")


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_classifier_network_is_refused_naming_the_ops_it_saw(exporter):
    torchvision = pytest.importorskip("torchvision")
    model = export_onnx(torchvision.models.resnet18(weights=None, num_classes=5), torch.randn(1, 3, 64, 64),
                        exporter=exporter)
    with pytest.raises(UnsupportedModelError, match=r"output 'out': rank 2 \(made by Gemm .*fed by .*\)") as info:
        graft(model, PGNSpec())
    assert "\n" not in str(info.value)


def test_the_main_output_wins_and_a_hint_picks_the_aux_head(two_heads):
    head = find_head(two_heads)
    assert head.logits_output == "out"
    aux_conv = next(n.name for n in two_heads.graph.node if n.op_type == "Conv" and "aux" in n.name)
    hinted = find_head(two_heads, head=aux_conv)
    assert hinted.logits_output == "aux" and hinted.conv_nodes == [aux_conv]
    outputs = run(graft(two_heads, PGNSpec(pred=True), head=aux_conv), {"input": _image()})
    np.testing.assert_array_equal(outputs["pred"], outputs["aux"].argmax(axis=1))


def test_a_bad_hint_is_a_clear_error(two_heads):
    with pytest.raises(BadInputError, match="no node of that name; Conv nodes: .*aux"):
        find_head(two_heads, head="nonexistent")
    backbone = next(n.name for n in two_heads.graph.node if n.op_type == "Conv" and "backbone" in n.name)
    with pytest.raises(UnsupportedModelError, match=f"does not contain node '{backbone}'"):
        find_head(two_heads, head=backbone)


def test_graft_leaves_its_input_untouched_and_refuses_a_second_graft(head_model):
    before = head_model.SerializeToString()
    grafted = graft(head_model, PGNSpec())
    assert head_model.SerializeToString() == before
    with pytest.raises(UnsupportedModelError, match="already grafted"):
        graft(grafted, PGNSpec())


def test_metadata_describes_the_graft(head_model):
    spec = PGNSpec(p=(0.5, 2), labels=("uni", "gt"), form="exact", pred=True, baselines=True)
    grafted = graft(head_model, spec, class_names=["road", "car", "person", "sky"])
    meta = read_metadata(grafted)
    # "auto" is recorded as what it chose: this head runs at stride 2, 256 rows at 512 x 512
    assert meta.spec == dataclasses.replace(spec, upsample="resize")
    assert meta.num_classes == 4 and meta.class_names == ["road", "car", "person", "sky"]
    assert meta.original_outputs == ["out"]
    assert meta.pgn_outputs == ["pgn_uni_p0.5", "pgn_uni_p2", "pgn_gt_p0.5", "pgn_gt_p2"]
    assert meta.pred == "pred" and meta.baselines == ["msp", "entropy"] and meta.gt_input == "pgn_gt"
    assert meta.head.conv_nodes == ["Conv_logits0"] and meta.head.features == ["psi0"]
    assert meta.head.head_logits == "logits0" and meta.head.logits == "out"
    assert (meta.head.resize, meta.head.align_corners, meta.head.feature_resize) == ("bilinear", False, ["none"])
    assert meta.input == InputInfo(name="input", size=None, dynamic_batch=True, dynamic_size=True)
    outputs = {o.name: o for o in grafted.graph.output}
    assert [d.dim_param or d.dim_value for d in outputs["pgn_gt_p2"].type.tensor_type.shape.dim] == ["N", 1, "H", "W"]
    assert outputs["pred"].type.tensor_type.elem_type == onnx.TensorProto.INT32
    gt_input = next(i for i in grafted.graph.input if i.name == "pgn_gt")
    assert gt_input.type.tensor_type.elem_type == onnx.TensorProto.INT64
    onnx.shape_inference.infer_shapes(grafted, strict_mode=True)


def test_bad_class_names_and_taken_names_are_refused(head_model):
    with pytest.raises(BadInputError, match="3 class names given for a model with 4 classes"):
        graft(head_model, PGNSpec(), class_names=["a", "b", "c"])
    renamed = _with_tail(head_model, [("Identity", [], {})])
    renamed.graph.node[-1].output[0] = "msp"
    renamed.graph.output[0].name = "msp"
    with pytest.raises(BadInputError, match="already has tensors named msp"):
        graft(renamed, PGNSpec(baselines=True))


def test_an_old_opset_is_refused():
    model = onnx_head_model(num_classes=3, channels=[4], strides=[2], relu=[True], opset=12)
    with pytest.raises(UnsupportedModelError, match="opset 12; grafting needs opset >= 13"):
        graft(model, PGNSpec())


def test_unnamed_classifier_convs_get_a_name(head_model):
    model = onnx.ModelProto.FromString(head_model.SerializeToString())
    for node in model.graph.node:
        node.name = ""
    grafted = graft(model, PGNSpec())
    conv_names = read_metadata(grafted).head.conv_nodes
    assert conv_names and all(conv_names)
    assert set(conv_names) <= {n.name for n in grafted.graph.node if n.op_type == "Conv"}


def test_a_spatial_slice_after_the_resize_is_mirrored(head_model):
    crop = {"starts": np.array([1, 2], np.int64), "ends": np.array([-1, -2], np.int64),
            "axes": np.array([2, 3], np.int64)}
    cropped = _with_tail(head_model, [("Slice", list(crop), {})], crop)
    # both models mirror the model's ops (a Resize-then-Slice chain has no MatMul form), so the
    # crop of the full maps is exact
    spec = PGNSpec(p=(0.5, 1.0), labels=("uni", "oh"), upsample="resize")
    x = _image(2, 21, 30)
    full, part = run(graft(head_model, spec), {"input": x}), run(graft(cropped, spec), {"input": x})
    for name in spec.map_names:
        np.testing.assert_array_equal(part[name], full[name][:, :, 1:-1, 2:-2])


def test_a_slice_over_the_classes_is_not_a_pixel_wise_op(head_model):
    drop_class = {"starts": np.array([1], np.int64), "ends": np.array([4], np.int64), "axes": np.array([1], np.int64)}
    model = _with_tail(head_model, [("Slice", list(drop_class), {})], drop_class)
    with pytest.raises(UnsupportedModelError, match="stopped at Slice 'tail_Slice_0'"):
        find_head(model)


def test_a_channels_last_output_keeps_the_nchw_logits(head_model):
    model = _with_tail(head_model, [("Transpose", [], {"perm": [0, 2, 3, 1]})])
    head = find_head(model)
    assert head.logits == "tail_0" and head.logits_output == "out"
    outputs = run(graft(model, PGNSpec(pred=True)), {"input": _image(3, 19, 27)})
    assert outputs["pgn_uni_p0.5"].shape == (3, 1, 19, 27)
    np.testing.assert_array_equal(outputs["pred"], outputs["out"].argmax(axis=-1))


def test_a_bias_add_after_a_bias_free_conv_is_part_of_the_head():
    """A classifier exported as Conv (no bias) + Add(constant) is one head."""
    torch.manual_seed(0)
    net = TinySegNet(channels=(6,), strides=(2,))
    net.classifiers[0].bias = None
    model = export_onnx(net, torch.randn(1, 3, 16, 16), exporter="torchscript")
    index, conv = next((i, n) for i, n in enumerate(model.graph.node)
                       if n.op_type == "Conv" and "classifiers" in n.input[1])
    for node in model.graph.node:
        node.input[:] = ["biased" if i == conv.output[0] else i for i in node.input]
    model.graph.node.insert(index + 1,
                            helper.make_node("Add", [conv.output[0], "const_bias"], ["biased"], name="bias_add"))
    model.graph.initializer.append(numpy_helper.from_array(np.ones((1, 5, 1, 1), np.float32), "const_bias"))
    head = find_head(model)
    assert head.head_logits == "biased" and head.conv_nodes == [conv.name] and head.resize == "bilinear"
    outputs = run(graft(model, PGNSpec(p=(1.0,))), {"input": _image(2, 16, 16)})
    assert outputs["pgn_uni_p1"].shape == (2, 1, 16, 16)
