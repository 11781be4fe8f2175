"""fp16/bf16 models whose PGN subgraph stays float32 (pgn_deploy.engines.precision), on the CPU."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from pgn_deploy.contract import ArtifactExistsError, BadInputError, read_metadata
from pgn_deploy.engines.precision import convert_graph, convert_model, convert_precision
from pgn_deploy.engines.subgraph import half_precision_in_pgn, split_nodes
from pgn_deploy.eval.checks.compare import compare_models
from pgn_deploy.runtime.preprocess import preprocess_image
from tests.support.engine_models import DEMO_CHECKPOINT, SIZE, grafted, images

FP16_MODELS = ["tiny", "bigpsi", "lraspp", "deeplabv3",
               pytest.param("demo", marks=pytest.mark.skipif(not DEMO_CHECKPOINT.is_file(),
                                                             reason="demo checkpoint not present"))]


def _run(path, batch: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": batch})))


def _batch(path) -> np.ndarray:
    meta = read_metadata(path)
    return np.stack([preprocess_image(image, "RGB", meta.input, np.float32) for image in images()])


def _casts(model: onnx.ModelProto) -> dict[str, tuple[str, int]]:
    """Cast output -> (its input, target type)."""
    return {node.output[0]: (node.input[0], node.attribute[0].i) for node in model.graph.node if node.op_type == "Cast"}


def _round_trips(model: onnx.ModelProto) -> list[str]:
    """Casts to float32 whose input is a cast to float16/bfloat16 (x -> half -> float32)."""
    casts = _casts(model)
    half = (TensorProto.FLOAT16, TensorProto.BFLOAT16)
    return [out for out, (src, to) in casts.items()
            if to == TensorProto.FLOAT and src in casts and casts[src][1] in half]


@pytest.mark.parametrize("name", FP16_MODELS)
def test_fp16_keeps_pred_and_pgn_within_tolerance(name):
    """ORT CPU, fp16 vs fp32: pred agreement >= 99.9 % and relative error <= 1e-2 on every map."""
    report = compare_models(grafted(name), grafted(name, "fp16"), synthetic=2, size=SIZE)
    rows = {row.name: row for row in report.outputs}
    meta = read_metadata(grafted(name))
    assert rows[meta.pred].value >= 99.9
    for pgn in meta.pgn_outputs:
        assert rows[pgn].value <= 1e-2, (pgn, rows[pgn].value)
    assert report.passed, report.to_json()


@pytest.mark.parametrize("name", ["tiny", "lraspp"])
def test_fp16_model_structure(name):
    """Network converted (fp16 weights), PGN subgraph and graph I/O float32, metadata says fp16."""
    model = onnx.load(grafted(name, "fp16"))
    meta = read_metadata(model)
    assert meta.precision == "fp16"
    assert half_precision_in_pgn(model, meta) == []
    network, pgn = split_nodes(model, meta)
    half_inits = [init for init in model.graph.initializer if init.data_type == TensorProto.FLOAT16]
    assert half_inits, "no fp16 weights: the network was not converted"
    io_types = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)}
    assert io_types["input"] == TensorProto.FLOAT
    assert all(io_types[n] == TensorProto.FLOAT for n in [*meta.score_outputs, *meta.original_outputs])
    assert io_types[meta.pred] == TensorProto.INT32
    assert _round_trips(model) == []
    onnx.checker.check_model(model, full_check=True)


def test_pgn_above_fp16_range_stays_finite_and_correct():
    """sum |psi|^2 far above 65504 (and PGN p0.5 maps above it too): finite, within 1e-2."""
    batch = _batch(grafted("bigpsi"))
    ref, half = _run(grafted("bigpsi"), batch), _run(grafted("bigpsi", "fp16"), batch)
    # PGN_p2 = ||g||_2 * ||psi||_2 with ||g||_2 < 1, so sum |psi|^2 > PGN_p2^2
    assert float(ref["pgn_uni_p2"].max()) ** 2 > 65504
    assert float(ref["pgn_uni_p0.5"].max()) > 65504
    for name in read_metadata(grafted("bigpsi")).pgn_outputs:
        assert np.isfinite(half[name]).all(), name
        rel = np.abs(ref[name].astype(np.float64) - half[name]).max() / np.abs(ref[name]).max()
        assert rel <= 1e-2, (name, rel)


def _shared_tensor_graph() -> onnx.ModelProto:
    """x -> Relu (converted) -> Exp "blk1" (kept) -> t; t -> Neg (converted), t -> Sqrt "blk2" (kept)."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Exp", ["a"], ["t"], name="blk1"),
        helper.make_node("Neg", ["t"], ["o1"], name="neg"),
        helper.make_node("Sqrt", ["t"], ["o2"], name="blk2"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("o1", TensorProto.FLOAT, [2, 3]),
                               helper.make_tensor_value_info("o2", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def test_kept_tensor_feeding_converted_and_kept_nodes_is_not_round_tripped():
    """onnxconverter-common and onnxruntime.transformers.float16 cast t to fp16 and back for blk2;
    the chosen converter must let blk2 read the float32 t and cast only for the converted Neg."""
    model = convert_graph(_shared_tensor_graph(), "fp16", ["blk1", "blk2"])
    nodes = {node.name: node for node in model.graph.node}
    casts = _casts(model)
    assert nodes["blk2"].input[0] == nodes["blk1"].output[0]  # read as is, no cast in between
    assert casts[nodes["neg"].input[0]] == (nodes["blk1"].output[0], TensorProto.FLOAT16)
    assert _round_trips(model) == []
    outputs = {v.name: v.type.tensor_type.elem_type for v in model.graph.output}
    assert outputs == {"o1": TensorProto.FLOAT, "o2": TensorProto.FLOAT}
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    o2 = ort.InferenceSession(model.SerializeToString()).run(["o2"], {"x": x})[0]
    expected = np.sqrt(np.exp(np.float16(np.maximum(x, 0)).astype(np.float32)))
    np.testing.assert_allclose(o2, expected, rtol=1e-6)  # a float16 round trip of t errs ~1e-3


def test_bf16_conversion_keeps_pgn_float32():
    """bf16: structure only (ONNX Runtime's CPU provider has no bf16 Conv)."""
    model = convert_model(onnx.load(grafted("tiny")), "bf16")
    meta = read_metadata(model)
    assert meta.precision == "bf16"
    assert half_precision_in_pgn(model, meta) == []
    assert any(init.data_type == TensorProto.BFLOAT16 for init in model.graph.initializer)
    onnx.checker.check_model(model)


def test_unknown_precision_and_double_conversion_are_refused(tmp_path):
    with pytest.raises(BadInputError, match="unknown precision"):
        convert_precision(grafted("tiny"), tmp_path / "x.onnx", "fp8")
    with pytest.raises(BadInputError, match="already fp16"):
        convert_model(onnx.load(grafted("tiny", "fp16")), "fp16")
    assert not (tmp_path / "x.onnx").exists()


def test_existing_output_is_kept_without_force(tmp_path):
    out = tmp_path / "m.fp16.onnx"
    out.write_bytes(b"keep")
    with pytest.raises(ArtifactExistsError):
        convert_precision(grafted("tiny"), out, "fp16")
    assert out.read_bytes() == b"keep"
    convert_precision(grafted("tiny"), out, "fp16", force=True)
    assert read_metadata(out).precision == "fp16"


def test_fp32_is_an_unchanged_copy():
    model = onnx.load(grafted("tiny"))
    assert convert_model(model, "fp32").SerializeToString() == model.SerializeToString()
