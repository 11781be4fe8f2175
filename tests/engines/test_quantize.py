"""INT8 Q/DQ models whose PGN subgraph stays float32 and exact (pgn_deploy.engines.quantize), on the CPU."""
from __future__ import annotations

import hashlib

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, numpy_helper

from pgn_deploy.cli.export import main as export_main
from pgn_deploy.contract import BadInputError, read_metadata
from pgn_deploy.engines.quantize import (
    QDQ_OPS,
    qdq_in_pgn,
    quantize_model,
    quantize_precision,
    read_calibration,
    unquantizable_nodes,
)
from pgn_deploy.engines.subgraph import split_nodes
from pgn_deploy.reference import pgn_maps
from pgn_deploy.runtime.preprocess import preprocess_image
from tests.support.engine_models import SIZE, grafted, images


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    """Four smooth RGB test images of the models' export size, as PNG files."""
    folder = tmp_path_factory.mktemp("calib")
    for i, image in enumerate(images(4, seed=1)):
        cv2.imwrite(str(folder / f"frame_{i}.png"), image[..., ::-1])
    return folder


@pytest.fixture(scope="module")
def tiny_int8(calib_dir):
    model = onnx.load(grafted("tiny"))
    return quantize_model(model, read_calibration(read_metadata(model), [calib_dir]), keep_float_mode="classifier")


def _run(model: onnx.ModelProto, batch: np.ndarray, extra: list[str] = ()) -> dict[str, np.ndarray]:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in extra)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"input": batch})))


def _batch(path) -> np.ndarray:
    meta = read_metadata(path)
    return np.stack([preprocess_image(image, "RGB", meta.input, np.float32) for image in images(2, seed=3)])


def test_pgn_subgraph_has_no_qdq_and_network_is_quantized(tiny_int8):
    meta = read_metadata(tiny_int8)
    network, pgn = split_nodes(tiny_int8, meta)
    assert qdq_in_pgn(tiny_int8, meta) == []
    assert sum(node.op_type == "QuantizeLinear" for node in network) >= 2  # input/activation and weight
    made_by = {out: node for node in tiny_int8.graph.node for out in node.output}
    read_from_dq = [(node.name, name) for node in pgn for name in node.input
                    if name in made_by and made_by[name].op_type == "DequantizeLinear"]
    assert read_from_dq == []  # PGN reads the network's float32 tensors, never an int8 rounding
    head = {node.name: node for node in network}[meta.head.conv_nodes[0]]
    assert all(made_by.get(name) is None or made_by[name].op_type not in QDQ_OPS for name in head.input)


def test_outputs_are_float32_and_maps_exact_on_the_quantized_tensors(tiny_int8):
    """Every map equals the float64 reference applied to the quantized network's own psi and logits."""
    meta = read_metadata(tiny_int8)
    for output in tiny_int8.graph.output:
        if output.name in meta.score_outputs:
            assert output.type.tensor_type.elem_type == TensorProto.FLOAT
    batch = _batch(grafted("tiny"))
    got = _run(tiny_int8, batch, [*meta.head.features, meta.head.head_logits])
    assert all(got[name].dtype == np.float32 for name in meta.score_outputs)
    psi = [torch.from_numpy(got[name]).double() for name in meta.head.features]
    logits = torch.from_numpy(got[meta.head.head_logits]).double()
    expected = pgn_maps(psi, logits, meta.spec, output_size=batch.shape[2:], mode=meta.head.resize,
                        align_corners=meta.head.align_corners)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name][:, 0], value.numpy(), rtol=1e-4, atol=1e-6 * float(value.abs().max()))
    fp32 = _run(onnx.load(grafted("tiny")), batch)
    assert np.mean(fp32[meta.pred] == got[meta.pred]) >= 0.95  # the network itself is int8: close, not equal


def test_metadata_records_precision_calibration_and_exclusions(tiny_int8, calib_dir):
    meta = read_metadata(tiny_int8)
    record = meta.quantization
    assert meta.precision == "int8" and record["precision"] == "int8"
    assert record["calibration_method"] == "max"
    digest = hashlib.sha256()
    for path in sorted(calib_dir.iterdir()):
        content = path.read_bytes()
        digest.update(len(content).to_bytes(8, "little"))
        digest.update(content)
    assert record["calibration"] == {"images": 4, "sha256": digest.hexdigest()}
    assert record["excluded"]["pgn_subgraph"] is True
    assert record["excluded"]["pgn_nodes"] == len(split_nodes(onnx.load(grafted("tiny")), meta)[1])
    assert record["keep_float_mode"] == "classifier" and record["excluded"]["classifier"] == meta.head.conv_nodes
    assert record["qdq_nodes"] == sum(node.op_type in QDQ_OPS for node in tiny_int8.graph.node)
    assert record["pgn_reads_float"] is True and record["reconnected_inputs"] == 0  # the classifier is float32


def test_pgn_inputs_are_reconnected_when_the_classifier_is_quantized(calib_dir):
    """With the classifier quantized, ModelOpt puts Q/DQ on psi; the PGN nodes are pointed back at float psi."""
    model = onnx.load(grafted("tiny"))
    meta = read_metadata(model)
    quantized = quantize_model(model, read_calibration(meta, [calib_dir]), keep_float_mode="none")
    record = read_metadata(quantized).quantization
    assert record["reconnected_inputs"] >= 1 and record["excluded"]["classifier"] == []
    made_by = {out: node for node in quantized.graph.node for out in node.output}
    _, pgn = split_nodes(quantized, meta)
    assert not [name for node in pgn for name in node.input
                if name in made_by and made_by[name].op_type == "DequantizeLinear"]
    head = next(n for n in quantized.graph.node if n.name == meta.head.conv_nodes[0])
    assert made_by[head.input[0]].op_type == "DequantizeLinear"  # the classifier itself reads int8 psi


def _reads_qdq(model: onnx.ModelProto, node_name: str) -> bool:
    made_by = {out: node for node in model.graph.node for out in node.output}
    node = next(n for n in model.graph.node if n.name == node_name)
    return any(name in made_by and made_by[name].op_type == "DequantizeLinear" for name in node.input)


def _map_error(model: onnx.ModelProto, reference: dict[str, np.ndarray], batch: np.ndarray, maps: list[str]) -> float:
    got = _run(model, batch)
    return max(float(np.median(np.abs(got[m] - reference[m]) / np.abs(reference[m].astype(np.float64)))) for m in maps)


def test_measured_default_keeps_the_chosen_nodes_float32_and_meets_its_tolerance(calib_dir):
    """The default rule: the nodes it keeps float32 read no Q/DQ, the rest stays quantized, the
    PGN maps' error recomputed here on the calibration frames is within the tolerance while the
    rule 'none' (everything but PGN quantized) is not, and the metadata records the choice."""
    model = onnx.load(grafted("tiny"))
    meta = read_metadata(model)
    calibration = read_calibration(meta, [calib_dir])
    tolerance = 1e-3  # tiny's all-int8 error is ~3e-3 (at the default 1e-2 nothing needs to stay float32)
    measured = quantize_model(model, calibration, tolerance=tolerance)
    record = read_metadata(measured).quantization
    kept = record["excluded"]["measured"]
    assert record["keep_float_mode"] == "measured" and kept and record["excluded"]["classifier"] == []
    assert record["measurement"]["kept_float"] == len(kept) and record["measurement"]["tolerance"] == tolerance
    assert not any(_reads_qdq(measured, name) for name in kept)
    assert qdq_in_pgn(measured, read_metadata(measured)) == []
    network, _ = split_nodes(measured, meta)
    assert any(_reads_qdq(measured, node.name) for node in network if node.op_type == "Conv")  # still int8
    reference = _run(model, calibration.data)
    error = _map_error(measured, reference, calibration.data, meta.pgn_outputs)
    assert error <= tolerance and error == pytest.approx(record["measurement"]["error_chosen"], abs=1e-5)
    everything = quantize_model(model, calibration, keep_float_mode="none")
    assert _map_error(everything, reference, calibration.data, meta.pgn_outputs) > tolerance
    default = quantize_model(model, calibration)
    assert read_metadata(default).quantization["excluded"]["measured"] == []  # within 1 % all quantized


def test_naive_quantization_puts_qdq_into_pgn(calib_dir):
    """The benchmark's baseline: everything quantized; the metadata says the PGN subgraph was not excluded."""
    model = onnx.load(grafted("tiny"))
    naive = quantize_model(model, read_calibration(read_metadata(model), [calib_dir]), quantize_pgn=True)
    meta = read_metadata(naive)
    assert meta.quantization["excluded"]["pgn_subgraph"] is False
    assert qdq_in_pgn(naive, meta)


def test_calibration_without_images_refuses_in_one_line(tmp_path):
    meta = read_metadata(grafted("tiny"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError) as info:
        read_calibration(meta, [tmp_path / "empty"])
    assert "\n" not in str(info.value)
    with pytest.raises(BadInputError, match="needs calibration images"):
        read_calibration(meta, [])


def test_corrupt_calibration_image_refuses_in_one_line_and_writes_nothing(tmp_path, calib_dir, capsys):
    bad = tmp_path / "calib"
    bad.mkdir()
    (bad / "a.png").write_bytes((calib_dir / "frame_0.png").read_bytes())
    (bad / "b.png").write_bytes(b"\x89PNG not an image")
    out = tmp_path / "tiny.int8.pgn.onnx"
    with pytest.raises(BadInputError, match="b.png: not a readable image"):
        quantize_precision(grafted("tiny"), out, [bad])
    assert export_main([str(grafted("tiny")), "--precision", "int8", "--calib", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pgn-export: error:") and "b.png" in err and "\n" not in err
    assert not out.exists()


def test_images_of_different_sizes_refuse(tmp_path, calib_dir):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.png").write_bytes((calib_dir / "frame_0.png").read_bytes())
    cv2.imwrite(str(folder / "b.png"), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(BadInputError, match="share one size"):
        read_calibration(read_metadata(grafted("tiny")), [folder])


def test_calib_flags_are_checked_before_any_work(tmp_path, calib_dir, capsys):
    out = tmp_path / "x.pgn.onnx"
    assert export_main([str(grafted("tiny")), "--precision", "int8", "-o", str(out)]) == 2
    assert "needs calibration images" in capsys.readouterr().err
    assert export_main([str(grafted("tiny")), "--precision", "fp16", "--calib", str(calib_dir), "-o", str(out)]) == 2
    assert "calibrate it with pgn-calibrate" in capsys.readouterr().err
    assert not out.exists()


def test_grafted_file_converts_through_pgn_export(tmp_path, calib_dir, capsys):
    out = tmp_path / "tiny.int8.pgn.onnx"
    assert export_main([str(grafted("tiny")), "--precision", "int8", "--calib", str(calib_dir),
                        "--calib-max", "2", "--calib-method", "entropy", "-o", str(out)]) == 0
    meta = read_metadata(out)
    assert meta.precision == "int8" and meta.quantization["calibration"]["images"] == 2
    assert meta.quantization["calibration_method"] == "entropy" and meta.quantization["keep_float_mode"] == "measured"
    assert export_main([str(grafted("tiny")), "--precision", "int8", "--calib", str(calib_dir),
                        "--int8-keep-float", "classifier", "-o", str(out), "--force"]) == 0
    assert read_metadata(out).quantization["excluded"]["classifier"] == meta.head.conv_nodes
    assert export_main([str(grafted("tiny")), "--precision", "int8", "--calib", str(calib_dir), "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err  # never overwritten without --force


def _with_zero_channel() -> tuple[onnx.ModelProto, str]:
    """tiny with one output channel of its first conv pruned to zeros (scale 0 cannot be quantized)."""
    model = onnx.load(grafted("tiny"))
    meta = read_metadata(model)
    network, _ = split_nodes(model, meta)
    conv = next(node for node in network if node.op_type == "Conv" and node.name not in meta.head.conv_nodes)
    init = next(i for i in model.graph.initializer if i.name == conv.input[1])
    weight = numpy_helper.to_array(init).copy()
    weight[3] = 0.0
    init.CopyFrom(numpy_helper.from_array(weight, init.name))
    return model, conv.name


def test_unquantizable_constant_keeps_its_node_float32(calib_dir):
    model, conv = _with_zero_channel()
    meta = read_metadata(model)
    assert unquantizable_nodes(model, split_nodes(model, meta)[0]) == {conv: "an all-zero output channel (scale 0)"}
    quantized = quantize_model(model, read_calibration(meta, [calib_dir]), keep_float_mode="none")
    made_by = {out: n for n in quantized.graph.node for out in n.output}
    head = next(n for n in quantized.graph.node if n.name == meta.head.conv_nodes[0])
    assert made_by[head.input[1]].op_type == "DequantizeLinear"  # the rest of the network is quantized
    node = next(n for n in quantized.graph.node if n.name == conv)
    weights = {i.name: i for i in quantized.graph.initializer}
    assert node.input[1] in weights and weights[node.input[1]].data_type == TensorProto.FLOAT
    reason = "an all-zero output channel (scale 0)"
    assert read_metadata(quantized).quantization["excluded"]["unquantizable"] == {conv: reason}


def _save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def _findings(path) -> list[tuple[str, str]]:
    from pgn_deploy.engines.lint import lint_model

    return [(f.severity, f.message) for f in lint_model(path, "trt").findings if f.check == "qdq"]


def test_lint_accepts_the_quantized_model_and_checks_explicit_quantization(tiny_int8, tmp_path, calib_dir):
    findings = _findings(_save(tiny_int8, tmp_path / "ok.onnx"))
    assert [s for s, _ in findings] == ["info"] and "fit TensorRT's explicit quantization" in findings[0][1]

    broken = onnx.ModelProto.FromString(tiny_int8.SerializeToString())
    inits = {i.name: i for i in broken.graph.initializer}
    weight_q = next(n for n in broken.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inits
                    and numpy_helper.to_array(inits[n.input[1]]).size > 1)
    zero = inits[weight_q.input[2]]
    zero.CopyFrom(numpy_helper.from_array(np.ones_like(numpy_helper.to_array(zero)), zero.name))
    axis = next(a for a in weight_q.attribute if a.name == "axis")
    axis.i = 1
    messages = [m for s, m in _findings(_save(broken, tmp_path / "bad.onnx")) if s == "error"]
    assert any("non-zero zero point" in m for m in messages)
    assert any("per output channel (axis 0" in m for m in messages)

    model = onnx.load(grafted("tiny"))
    naive = quantize_model(model, read_calibration(read_metadata(model), [calib_dir]), quantize_pgn=True)
    messages = [m for s, m in _findings(_save(naive, tmp_path / "naive.onnx")) if s == "error"]
    assert any("inside the PGN subgraph" in m for m in messages)


def _fake_tensorrt(monkeypatch, capability: str) -> list[dict]:
    """TensorRT 10.15 and a GPU of ``capability`` faked on the host; the build records its arguments."""
    import types

    from pgn_deploy.engines import tensorrt_build
    from pgn_deploy.runtime.backends import cuda, plan_sidecar
    from pgn_deploy.runtime.backends.plan_sidecar import GpuInfo

    monkeypatch.setattr(plan_sidecar, "require", lambda *a: types.SimpleNamespace(__version__="10.15.1.29"))
    monkeypatch.setattr(cuda, "current_gpu", lambda *a: GpuInfo(name="Fake GPU", compute_capability=capability))
    calls: list[dict] = []

    def build(trt, model_path, profile, workspace_mib, timing_cache, tf32):
        calls.append({"model": model_path, "profile": profile})
        return b"plan"

    monkeypatch.setattr(tensorrt_build, "_build_engine_bytes", build)
    return calls


SHAPES = ["input:1x3x96x128/1x3x96x128/2x3x96x128"]


def test_build_of_a_qdq_model_is_strongly_typed_and_checked_first(tiny_int8, tmp_path, monkeypatch):
    from pgn_deploy.contract import UnsupportedModelError
    from pgn_deploy.engines.tensorrt_build import build_plan
    from pgn_deploy.runtime.backends.plan_sidecar import read_sidecar

    calls = _fake_tensorrt(monkeypatch, "8.7")
    report = build_plan(_save(tiny_int8, tmp_path / "tiny.int8.pgn.onnx"), tmp_path / "tiny.int8.plan", SHAPES)
    flags = read_sidecar(report.plan).flags
    assert flags["strongly_typed"] is True and flags["precision"] == "int8" and len(calls) == 1

    broken = onnx.ModelProto.FromString(tiny_int8.SerializeToString())
    zero = next(i for i in broken.graph.initializer if i.name.endswith("zero_point"))
    zero.CopyFrom(numpy_helper.from_array(np.ones_like(numpy_helper.to_array(zero)), zero.name))
    with pytest.raises(UnsupportedModelError, match="Q/DQ layout does not fit TensorRT: .*zero point"):
        build_plan(_save(broken, tmp_path / "broken.pgn.onnx"), tmp_path / "broken.plan", SHAPES)
    assert len(calls) == 1 and not (tmp_path / "broken.plan").exists()


def test_fp8_plan_needs_compute_capability_8_9(tiny_int8, tmp_path, monkeypatch):
    from pgn_deploy.contract import UnsupportedModelError, write_metadata
    from pgn_deploy.engines.tensorrt_build import build_plan

    calls = _fake_tensorrt(monkeypatch, "8.6")
    as_fp8 = onnx.ModelProto.FromString(tiny_int8.SerializeToString())
    meta = read_metadata(as_fp8)
    meta.precision = "fp8"
    write_metadata(as_fp8, meta)
    with pytest.raises(UnsupportedModelError, match="FP8 plans need compute capability 8.9"):
        build_plan(_save(as_fp8, tmp_path / "fp8.pgn.onnx"), tmp_path / "fp8.plan", SHAPES)
    assert calls == [] and not (tmp_path / "fp8.plan").exists()


def test_fp8_of_a_model_with_nothing_fp8_can_take_refuses(calib_dir):
    """ModelOpt's FP8 mode leaves tiny's one 3-channel conv alone: no Q/DQ at all is refused, not
    written as an 'fp8' model that is float32."""
    from pgn_deploy.contract import UnsupportedModelError

    model = onnx.load(grafted("tiny"))
    with pytest.raises(UnsupportedModelError, match="no node of the network is left in fp8"):
        quantize_model(model, read_calibration(read_metadata(model), [calib_dir]), "fp8")


def test_pgn_check_compares_int8_with_fp32_on_an_ood_dataset(tiny_int8, tmp_path, capsys):
    """Either order: the fp32 file is the reference; pooled fidelity rows and AuPRC/FPR95 changes per map."""
    from pgn_deploy.cli import check
    from pgn_deploy.eval.checks.compare import compare_models
    from pgn_deploy.synthroad.layouts import write_synthroad

    write_synthroad(tmp_path / "ood", 2, seed=3, layouts=["roadanomaly21"], size=SIZE, progress=False)
    int8 = _save(tiny_int8, tmp_path / "tiny.int8.pgn.onnx")
    report = compare_models(int8, grafted("tiny"), datasets=[f"road_anomaly21:{tmp_path / 'ood'}"])
    assert report.model_a == str(grafted("tiny")) and report.images == 2
    meta = read_metadata(tiny_int8)
    rows = {(row.name, row.metric): row for row in report.outputs}
    assert rows[meta.pred, "agreement_%"].tolerance == 99.0
    for name in meta.pgn_outputs:
        row = rows[name, "median_relative_error"]
        assert row.tolerance == 0.02 and row.min_pearson == 0.99 and -1 <= row.pearson <= 1
        for metric in ("AuPRC_change_points", "FPR95_change_points"):
            change = rows[f"{name}@road_anomaly21", metric]
            assert change.value == pytest.approx(change.other_value - change.reference_value)
    same = compare_models(grafted("tiny"), grafted("tiny"), datasets=[f"road_anomaly21:{tmp_path / 'ood'}"])
    assert same.passed and all(row.value == 0 for row in same.outputs if row.metric.endswith("_points"))
    code = check.main([int8, "--against", str(grafted("tiny")), "--dataset", f"road_anomaly21:{tmp_path / 'ood'}"])
    out = capsys.readouterr().out
    assert code == (0 if report.passed else 1) and "(reference)" in out and "AuPRC_change_points" in out


def _qdq_chain(count: int) -> onnx.ModelProto:
    """x -> Q/DQ -> n0 -> Q/DQ -> n1 ... (Relu nodes named n0..n{count-1}, each reading a Q -> DQ copy)."""
    from onnx import helper

    nodes, inits, name = [], [], "x"
    for i in range(count):
        inits += [numpy_helper.from_array(np.array(0.1, np.float32), f"s{i}"),
                  numpy_helper.from_array(np.array(0, np.int8), f"z{i}")]
        nodes += [helper.make_node("QuantizeLinear", [name, f"s{i}", f"z{i}"], [f"q{i}"], name=f"Q{i}"),
                  helper.make_node("DequantizeLinear", [f"q{i}", f"s{i}", f"z{i}"], [f"dq{i}"], name=f"DQ{i}"),
                  helper.make_node("Relu", [f"dq{i}"], [f"y{i}"], name=f"n{i}")]
        name = f"y{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_measured_rule_keeps_the_smallest_set_within_the_tolerance():
    """With additive per-node errors the rule quantizes the least sensitive nodes while their sum
    stays within the tolerance, keeps the rest float32, and strips exactly their Q/DQ."""
    from pgn_deploy.engines.quant_sensitivity import choose_float_nodes, dequantize_nodes, quantized_units

    cost = {"n0": 0.001, "n1": 0.004, "n2": 0.002, "n3": 0.01, "n4": 0.0005}

    class AdditiveError:
        frames = np.zeros((4, 1))

        def __call__(self, model):
            return sum(cost[name] for name in quantized_units(model, set()))

    model = _qdq_chain(5)
    choice = choose_float_nodes(model, AdditiveError(), set(), tolerance=0.004)
    assert sorted(choice.float_nodes) == ["n1", "n3"]  # n4 + n0 + n2 = 0.0035 <= 0.004 < + n1
    assert choice.error_chosen == pytest.approx(0.0035) and choice.error_all_quantized == pytest.approx(0.0175)
    assert choice.units == 5 and choice.frames == 4
    dequantize_nodes(model, set(choice.float_nodes))
    assert quantized_units(model, set()) == ["n0", "n2", "n4"]
    assert {n.name for n in model.graph.node if n.op_type in QDQ_OPS} == {"Q0", "DQ0", "Q2", "DQ2", "Q4", "DQ4"}
    assert {i.name for i in model.graph.initializer} == {"s0", "z0", "s2", "z2", "s4", "z4"}  # unread ones dropped
    onnx.checker.check_model(model)
    everything = choose_float_nodes(_qdq_chain(5), AdditiveError(), set(), tolerance=0.1)
    assert everything.float_nodes == [] and everything.error_chosen == pytest.approx(0.0175)
