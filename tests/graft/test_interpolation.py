"""The MatMul form of a linear Resize equals ONNX Runtime's Resize for every coordinate mode,
up- and downsampling, one-sample axes, sizes given at run time and constant scales."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from pgn_deploy.graft.graph_builder import GraphBuilder
from pgn_deploy.graft.interpolation import COORDINATE_MODES, matmul_resizer


def _resize_model(mode: str, scales: tuple[float, float] | None, **attributes) -> onnx.ModelProto:
    """x (N x K x h x w, dynamic) -> Resize(linear, ``mode``) -> y; the sizes are a graph input
    unless constant ``scales`` are given."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "k", "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inputs, initializers = [x], [numpy_helper.from_array(np.zeros(0, np.float32), "roi")]
    if scales is None:
        inputs.append(helper.make_tensor_value_info("sizes", TensorProto.INT64, [4]))
        resize_inputs = ["x", "roi", "", "sizes"]
    else:
        initializers.append(numpy_helper.from_array(np.array([1, 1, *scales], np.float32), "scales"))
        resize_inputs = ["x", "roi", "scales"]
    node = helper.make_node("Resize", resize_inputs, ["y"], name="resize", mode="linear",
                            coordinate_transformation_mode=mode, **attributes)
    graph = helper.make_graph([node], "resize", inputs, [y], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _with_matmul_twin(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """``model`` plus output ``z``: x resized by :func:`matmul_resizer` (False: not offered)."""
    irmodel = ir.serde.deserialize_model(model)
    graph = irmodel.graph
    node = next(n for n in graph if n.op_type == "Resize")
    resize = matmul_resizer(GraphBuilder(graph), [node], graph.inputs[0], node.outputs[0])
    if resize is None:
        return model, False
    z = resize(graph.inputs[0])
    z.name = "z"
    graph.outputs.append(z)
    return ir.serde.serialize_model(irmodel), True


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


@pytest.mark.parametrize("mode", COORDINATE_MODES)
@pytest.mark.parametrize("size_in,size_out", [((5, 7), (17, 30)), ((17, 30), (5, 7)), ((4, 6), (1, 9)),
                                              ((1, 6), (3, 1)), ((8, 16), (8, 16))])
def test_equals_resize_for_sizes_given_at_run_time(mode, size_in, size_out):
    model, offered = _with_matmul_twin(_resize_model(mode, None))
    assert offered
    x = np.random.default_rng(0).standard_normal((2, 3, *size_in)).astype(np.float32)
    out = _run(model, {"x": x, "sizes": np.array([2, 3, *size_out], np.int64)})
    assert out["z"].shape == out["y"].shape == (2, 3, *size_out)
    np.testing.assert_allclose(out["z"], out["y"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", COORDINATE_MODES)
@pytest.mark.parametrize("scales", [(2.0, 16.0), (2.5, 0.5), (1.7, 3.3)])
def test_equals_resize_for_constant_scales(mode, scales):
    """A non-integer scale moves the source coordinates away from ``out / in``: the node's own
    scale has to be used."""
    model, offered = _with_matmul_twin(_resize_model(mode, scales))
    assert offered
    x = np.random.default_rng(1).standard_normal((1, 2, 13, 9)).astype(np.float32)
    out = _run(model, {"x": x})
    assert out["z"].shape == out["y"].shape
    np.testing.assert_allclose(out["z"], out["y"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attributes", [{"antialias": 1}, {"axes": [2, 3]}])
def test_resizes_it_does_not_reproduce_are_left_to_the_model_ops(attributes):
    model, offered = _with_matmul_twin(_resize_model("half_pixel", None, **attributes))
    assert not offered
    model, offered = _with_matmul_twin(_resize_model("tf_crop_and_resize", None))
    assert not offered
