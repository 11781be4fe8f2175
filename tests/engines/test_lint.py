"""pgn-lint on the CPU: TensorRT op table, shapes, dtypes, PGN float32, fp16 overflow margin."""
from __future__ import annotations

import json

import cv2
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pgn_deploy.cli import lint as lint_cli
from pgn_deploy.contract import save_onnx
from pgn_deploy.engines import trt_ops
from pgn_deploy.engines.lint import lint_model
from pgn_deploy.engines.precision import convert_graph
from tests.support.engine_models import DEMO_CHECKPOINT, grafted, images

MODELS = ["tiny", "bigpsi", "lraspp", "deeplabv3",
          pytest.param("demo", marks=pytest.mark.skipif(not DEMO_CHECKPOINT.is_file(),
                                                        reason="demo checkpoint not present"))]


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calib")
    for i, image in enumerate(images()):
        cv2.imwrite(str(folder / f"{i}.png"), image[..., ::-1])
    return folder


def _errors(report) -> list[str]:
    return [f"[{f.check}] {f.message}" for f in report.errors]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", MODELS)
def test_lint_passes_on_grafted_models(name, precision, calib):
    path = grafted(name, precision)
    for target in ("trt", "ort"):
        report = lint_model(path, target=target, calib=[calib] if target == "trt" else None)
        assert report.ok, _errors(report)
    assert report.findings and all(f.severity in ("error", "warning", "info") for f in report.findings)


def _with_node(tmp_path, node: onnx.NodeProto, initializers=(), output=None, domain=None):
    model = onnx.load(grafted("tiny"))
    model.graph.node.append(node)
    model.graph.initializer.extend(initializers)
    if output is not None:
        model.graph.output.append(output)
    if domain:
        model.opset_import.append(helper.make_opsetid(domain, 1))
    return save_onnx(model, tmp_path / "bad.pgn.onnx")


def test_op_tensorrt_lacks_is_an_error(tmp_path):
    matrix = numpy_helper.from_array(__import__("numpy").eye(2, dtype="float32"), "lint_matrix")
    path = _with_node(tmp_path, helper.make_node("Det", ["lint_matrix"], ["lint_det"], name="det"), [matrix],
                      helper.make_tensor_value_info("lint_det", TensorProto.FLOAT, []))
    assert "Det" in trt_ops.UNSUPPORTED
    report = lint_model(path, target="trt")
    assert not report.ok
    assert any(f.check == "op" and "Det" in f.message for f in report.errors)
    assert lint_model(path, target="ort").ok  # ONNX Runtime runs Det


def test_custom_domain_is_an_error_for_tensorrt(tmp_path):
    node = helper.make_node("MyOp", ["input"], ["lint_custom"], name="custom", domain="com.example")
    path = _with_node(tmp_path, node, domain="com.example")
    assert any(f.check == "opset" and "com.example" in f.message for f in lint_model(path, target="trt").errors)


def test_cubic_resize_is_an_error(tmp_path):
    model = onnx.load(grafted("tiny"))
    resize = next(n for n in model.graph.node if n.op_type == "Resize")
    for attr in resize.attribute:
        if attr.name == "mode":
            attr.s = b"cubic"
    path = save_onnx(model, tmp_path / "cubic.pgn.onnx")
    assert any("mode='cubic'" in f.message for f in lint_model(path).errors)


def test_opset_above_the_table_is_an_error(tmp_path):
    model = onnx.load(grafted("tiny"))
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = trt_ops.OPSET_MAX + 1
    path = save_onnx(model, tmp_path / "new.pgn.onnx")
    assert any(f.check == "opset" for f in lint_model(path).errors)


def test_half_precision_pgn_subgraph_is_an_error(tmp_path):
    """Everything fp16, PGN included (what a plain converter would do): the pgn check fails."""
    model = convert_graph(onnx.load(grafted("tiny")), "fp16", keep_float32=[], keep_io_float32=True)
    path = save_onnx(model, tmp_path / "allhalf.pgn.onnx")
    report = lint_model(path, target="ort")
    assert any(f.check == "pgn" for f in report.errors), _errors(report)


def test_overflow_margin_flags_a_constructed_overflow(calib):
    report = lint_model(grafted("overflow"), calib=[calib])
    overflow = [f for f in report.errors if f.check == "fp16-range"]
    assert overflow and "overflows float16" in overflow[0].message
    assert report.ranges[0].max_abs > 65504 and report.ranges[0].margin < 1
    # the same check on the fp16 model sees the overflow as inf
    half = lint_model(grafted("overflow", "fp16"), calib=[calib])
    assert any(f.check == "fp16-range" for f in half.errors)


def test_overflow_margin_passes_when_activations_fit(calib):
    report = lint_model(grafted("bigpsi"), calib=[calib])
    assert report.ok and report.ranges[0].margin > 1


def test_cli_exit_codes_and_json(tmp_path, calib, capsys):
    assert lint_cli.main([str(grafted("tiny")), "--calib", str(calib), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] and data["fp16_ranges"]["tensors"] > 0
    assert data["table"].startswith(f"TensorRT {trt_ops.TABLE_TENSORRT_VERSION}")
    assert lint_cli.main([str(grafted("overflow")), "--calib", str(calib)]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert lint_cli.main([str(tmp_path / "missing.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pgn-lint: error:") and len(err.strip().splitlines()) == 1
