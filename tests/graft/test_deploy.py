"""Deployment steps after the graft: in-graph percentile ranks and OoD mask, uint8 input, kept outputs."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from pgn_deploy import contract as C
from pgn_deploy.engines.subgraph import half_precision_in_pgn
from pgn_deploy.graft.deploy import keep_outputs, prepare_deployment
from pgn_deploy.graft.normalize import add_normalization
from pgn_deploy.graft.preprocess import add_input_format
from pgn_deploy.runtime import Runtime, calibrate
from pgn_deploy.runtime.stats import map_statistics, percentile_rank, rank_knots
from tests.support.runtime_models import build_model


def frames(count: int = 3, seed: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> onnx.ModelProto:
    folder = tmp_path_factory.mktemp("deploy")
    calibrate(build_model(folder / "m.onnx"), frames(), folder / "c.onnx", backend="ort-cpu")
    return C.load_onnx(folder / "c.onnx")


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def run_all(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = session(model)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def test_norm_outputs_equal_the_numpy_percentile_rank_and_are_monotone(calibrated):
    model = add_normalization(calibrated)
    meta = C.read_metadata(model)
    assert set(meta.normalized) == set(meta.score_outputs) == set(meta.calibration)
    # inputs far outside the calibration images' range reach both ends of the scale
    batch = np.random.default_rng(1).normal(0, 3, (2, 3, 24, 32)).astype(np.float32)
    out = run_all(model, {"input": batch})
    for name, norm in meta.normalized.items():
        values, levels = rank_knots(meta.calibration[name])
        assert np.all(np.diff(values) > 0)  # continuous maps: np.interp is the definition
        expected = np.interp(out[name].astype(np.float64), values, levels)
        np.testing.assert_allclose(out[norm], expected, rtol=0, atol=2e-6)
        np.testing.assert_allclose(percentile_rank(out[name], meta.calibration[name]), expected, atol=1e-12)
        order = np.argsort(out[name].ravel(), kind="stable")
        assert np.all(np.diff(out[norm].ravel()[order]) >= 0), f"{norm} is not monotone in {name}"
        assert 0.0 <= out[norm].min() and out[norm].max() <= 1.0
    assert out["msp_norm"].min() == 0.0 or out["msp_norm"].max() == 1.0
    batch[0, :, 5, 7] = np.nan  # a NaN pixel gives NaN scores around it: NaN ranks, never in the mask
    out = run_all(model, {"input": batch})
    nan = np.isnan(out["pgn_uni_p0.5"])
    assert nan.any() and np.array_equal(np.isnan(out["pgn_uni_p0.5_norm"]), nan) and not out["ood_mask"][nan].any()


def test_norm_of_a_sweep_through_tied_knots_is_the_step_function():
    entry = map_statistics([np.r_[np.zeros(600), np.linspace(0, 10, 400)].astype(np.float32)], 1)
    values, _ = rank_knots(entry)
    assert values[0] == values[1]  # many exact zeros: the rank jumps at 0
    x = np.array([-1.0, 0.0, 1e-3, 5.0, 10.0, 11.0, np.nan])
    rank = percentile_rank(x, entry)
    assert rank[0] == 0 and rank[1] >= 0.5 and rank[-3] == 1 and rank[-2] == 1 and np.isnan(rank[-1])
    assert np.all(np.diff(rank[:-1]) >= 0)


def rank_session(entry: dict) -> ort.InferenceSession:
    """A graph holding only the in-graph rank of ``entry``: ``score`` (N x 1 x H x W) -> ``rank``."""
    import onnx_ir as ir

    from pgn_deploy.graft.graph_builder import GraphBuilder
    from pgn_deploy.graft.normalize import PREFIX, _rank

    score = onnx.helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, ["n", 1, "h", "w"])
    graph = onnx.helper.make_graph([], "rank", [score], [])
    model = ir.from_proto(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]))
    model.graph.outputs.append(_rank(GraphBuilder(model.graph, PREFIX), model.graph.inputs[0], entry, "rank"))
    return session(ir.to_proto(model))


def entry_from_knots(values: list[float]) -> dict:
    """A calibration entry with knots ``values`` = (min, q0.5, q0.9, q0.95, q0.99, q0.995, q0.999, max)."""
    levels = ("0.5", "0.9", "0.95", "0.99", "0.995", "0.999")
    return {"min": values[0], "max": values[-1], "q": dict(zip(levels, values[1:-1]))}


KNOT_SETS = {
    "increasing": [-2.0, 0.5, 1.0, 1.25, 2.0, 2.125, 2.5, 7.0],
    "small_positive": [2.19e-5, 7.81e-5, 1.035e-4, 1.135e-4, 1.393e-4, 1.499e-4, 1.758e-4, 1.848e-4],
    "steep_and_flat": [0.0, 1e-3, 1.1e-3, 10.0, 10.1, 500.0, 505.0, 1e4],
    "tied_at_min": [0.0, 0.0, 0.0, 0.3, 0.7, 0.8, 0.9, 1.0],
    "tied_in_the_middle": [1.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0, 5.0],
    "all_tied": [4.0] * 8,
    "one_segment": [0.0] * 7 + [2.0],
}


@pytest.mark.parametrize("knots", KNOT_SETS.values(), ids=KNOT_SETS.keys())
def test_in_graph_rank_is_the_numpy_rank_for_any_knots(knots):
    """Ties (a step taken at the tied value itself), knots and their float32 neighbours, exactly 0
    below the minimum and 1 from the maximum on, +-inf and NaN, monotone. (The float32 error is
    about eps * |knot| * slope on the rank scale: well under 2e-6 for these knots.)"""
    entry = entry_from_knots(knots)
    values, _ = rank_knots(entry)
    lo, hi = values[0], values[-1]
    span = max(hi - lo, 1.0)
    points = np.r_[values, np.linspace(lo - 0.1 * span, hi + 0.1 * span, 2000),
                   np.random.default_rng(0).uniform(lo, hi, 2000)].astype(np.float32)
    points = np.r_[points, np.nextafter(points, np.float32(np.inf)), np.nextafter(points, np.float32(-np.inf)),
                   [np.inf, -np.inf, 1e30, -1e30]].astype(np.float32)
    points = np.sort(points)
    (got,) = rank_session(entry).run(None, {"score": np.r_[points, np.nan].astype(np.float32).reshape(1, 1, 1, -1)})
    got = got.ravel()
    expected = percentile_rank(points, entry)
    np.testing.assert_allclose(got[:-1], expected, rtol=0, atol=2e-6)
    assert np.isnan(got[-1]) and not np.isnan(got[:-1]).any()
    assert np.all(np.diff(got[:-1]) >= 0)
    assert np.all(got[:-1][points < np.float32(lo)] == 0.0) and np.all(got[:-1][points >= np.float32(hi)] == 1.0)


def test_ood_mask_is_norm_above_the_default_or_the_fed_threshold(calibrated):
    model = add_normalization(calibrated)
    meta = C.read_metadata(model)
    mask_map, default = meta.ood_mask["map"], meta.ood_mask["default"]
    assert meta.ood_mask["rule"] == "q0.995" and default == pytest.approx(0.995)
    batch = np.random.default_rng(2).normal(0, 2, (1, 3, 24, 32)).astype(np.float32)
    sess = session(model)
    assert [i.name for i in sess.get_inputs()] == ["input"]  # the threshold input is optional
    norm, mask = sess.run([f"{mask_map}_norm", "ood_mask"], {"input": batch})
    assert mask.dtype == np.uint8 and mask.shape == norm.shape
    np.testing.assert_array_equal(mask, (norm >= np.float32(default)).astype(np.uint8))
    for threshold in (0.25, 0.9):
        (fed,) = sess.run(["ood_mask"], {"input": batch, "ood_threshold": np.array(threshold, np.float32)})
        np.testing.assert_array_equal(fed, (norm >= np.float32(threshold)).astype(np.uint8))
    assert 0 < int(sess.run(["ood_mask"], {"input": batch, "ood_threshold": np.array(0.5, np.float32)})[0].sum())


def test_recalibration_rebuilds_the_norm_outputs(calibrated, tmp_path):
    path = tmp_path / "n.onnx"
    C.save_onnx(add_normalization(calibrated), path)
    calibrate(path, frames(2, seed=9), in_place=True, backend="ort-cpu")
    model = C.load_onnx(path)
    meta = C.read_metadata(model)
    assert sum(o.name == "ood_mask" for o in model.graph.output) == 1
    batch = np.random.default_rng(3).normal(0, 1, (1, 3, 24, 32)).astype(np.float32)
    out = run_all(model, {"input": batch})
    expected = percentile_rank(out["pgn_uni_p2"], meta.calibration["pgn_uni_p2"])
    np.testing.assert_allclose(out["pgn_uni_p2_norm"], expected, atol=2e-6)


def test_normalize_needs_a_calibration(tmp_path):
    with pytest.raises(C.BadInputError, match="--calib"):
        add_normalization(C.load_onnx(build_model(tmp_path / "m.onnx")))


@pytest.mark.parametrize("fmt,color", [("uint8-nhwc-rgb", "RGB"), ("uint8-nhwc-bgr", "BGR"), ("uint8-nhwc-bgr", "RGB")])
def test_uint8_input_gives_the_maps_of_the_float_model_fed_by_python(calibrated, tmp_path, fmt, color):
    float_path, uint8_path = tmp_path / "f.onnx", tmp_path / "u.onnx"
    C.save_onnx(add_normalization(calibrated), float_path)
    C.save_onnx(prepare_deployment(calibrated, normalize=True, input_format=fmt), uint8_path)
    meta = C.read_metadata(uint8_path)
    assert (meta.input.format, meta.input.layout) == (fmt, "NHWC")
    sess = session(C.load_onnx(uint8_path))
    (image_input,) = sess.get_inputs()
    assert image_input.type == "tensor(uint8)" and image_input.shape[3] == 3
    images = frames(2, seed=11) + [frames(1, seed=12)[0][:20]]
    ref = Runtime(float_path, "ort-cpu").run(images, color=color)
    got = Runtime(uint8_path, "ort-cpu").run(images, color=color)
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a.pred, b.pred)
        for name in a.scores:
            assert np.max(np.abs(a.scores[name] - b.scores[name]) / np.maximum(np.abs(a.scores[name]), 1e-30)) <= 1e-5
    with pytest.raises(C.BadInputError, match="takes uint8 frames"):
        Runtime(uint8_path, "ort-cpu").run(np.zeros((1, 3, 8, 8), np.float32))


def test_input_format_refusals(calibrated):
    with pytest.raises(C.BadInputError, match="unknown input format"):
        add_input_format(calibrated, "uint8-nchw")
    with pytest.raises(C.UnsupportedModelError, match="already takes"):
        add_input_format(add_input_format(calibrated, "uint8-nhwc-rgb"), "uint8-nhwc-bgr")


def test_keep_outputs_drops_the_logits_and_what_only_they_need(calibrated, tmp_path):
    model = keep_outputs(add_normalization(calibrated), ["pred", "pgn_uni_p0.5", "pgn_uni_p0.5_norm", "ood_mask"])
    meta = C.read_metadata(model)
    assert [o.name for o in model.graph.output] == ["pgn_uni_p0.5", "pred", "pgn_uni_p0.5_norm", "ood_mask"]
    assert "logits" in meta.dropped_outputs and meta.original_outputs == [] and meta.baselines == []
    assert meta.normalized == {"pgn_uni_p0.5": "pgn_uni_p0.5_norm"} and meta.ood_mask["output"] == "ood_mask"
    path = tmp_path / "kept.onnx"
    C.save_onnx(model, path)
    result = Runtime(path, "ort-cpu").run(frames(1)[0])
    assert set(result.scores) == {"pgn_uni_p0.5"}
    with pytest.raises(C.BadInputError, match="without its logits"):
        Runtime(path, "ort-cpu").run(frames(1)[0], logits=True)
    with pytest.raises(C.BadInputError, match="class map"):
        keep_outputs(calibrated, ["pgn_uni_p0.5"])
    with pytest.raises(C.BadInputError, match="lacks"):
        keep_outputs(calibrated, ["pred", "nothing"])


def test_fp16_models_keep_norm_mask_and_preprocessing_float32(calibrated):
    from pgn_deploy.engines.precision import convert_model

    normalized = add_normalization(calibrated)
    half = convert_model(normalized, "fp16")  # a normalised fp32 model converted afterwards
    meta = C.read_metadata(half)
    assert half_precision_in_pgn(half, meta) == []
    exported_order = prepare_deployment(convert_model(calibrated, "fp16"), normalize=True,
                                        input_format="uint8-nhwc-bgr")  # pgn-export's order
    for model in (half, exported_order):
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
        for node in model.graph.node:
            if node.name.startswith(("pgn_norm/", "pgn_pre/")):
                produced = [types.get(out) for out in node.output]
                assert onnx.TensorProto.FLOAT16 not in produced, node.name
        assert all(types[name] == onnx.TensorProto.FLOAT for name in C.read_metadata(model).normalized.values())
        assert types["ood_mask"] == onnx.TensorProto.UINT8
    batch = np.random.default_rng(4).normal(0, 1, (1, 3, 24, 32)).astype(np.float32)
    out = run_all(half, {"input": batch})
    for name, norm in meta.normalized.items():
        np.testing.assert_allclose(out[norm], percentile_rank(out[name], meta.calibration[name]), atol=2e-6)


def test_deployed_model_passes_the_tensorrt_lint(calibrated, tmp_path):
    """uint8 stays on the graph input (TensorRT has no uint8 Transpose), ranks and mask are float32/uint8 outputs."""
    from pgn_deploy.engines.lint import lint_model

    model = prepare_deployment(calibrated, normalize=True, input_format="uint8-nhwc-rgb")
    path = C.save_onnx(model, tmp_path / "d.onnx")
    report = lint_model(path, target="trt")
    assert report.ok, [f.message for f in report.findings if f.severity == "error"]
