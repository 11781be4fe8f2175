"""The grafted PGN subgraph against the float64 reference and autograd, on small ONNX heads.

Heads are built directly as ONNX graphs (``tests.support.networks.onnx_head_model``): one or more
1x1 classifier branches (at different strides, resized before the sum), logits resized to the
input size. Sizes are odd on purpose; batches are > 1.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from onnx import numpy_helper

from pgn_deploy import reference
from pgn_deploy.contract import PGNSpec, pgn_output_name, read_metadata
from pgn_deploy.graft.attach import graft
from tests.support.graft_checks import check_against_autograd, check_against_reference, run, run_with_head
from tests.support.networks import onnx_head_model

P_VALUES = (0.1, 0.3, 0.5, 1.0, 2.0)
RTOL_REFERENCE = 1e-4  # float32 graph vs float64 reference (p = 0.1 raises errors to the 10th power)
RTOL_AUTOGRAD = 1e-5


def _input(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, height, width)).astype(np.float32)


def _gt(batch: int, height: int, width: int, classes: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, (batch, height, width)).astype(np.int64)


@pytest.fixture(scope="module")
def two_branch_head() -> onnx.ModelProto:
    """Two branches: a ReLU one at stride 2 and a signed one at stride 4 resized before the sum
    (signed: no exact zeros, so odd sizes are well-conditioned for p < 1 too)."""
    return onnx_head_model(num_classes=5, channels=[6, 4], strides=[2, 4], relu=[True, False])


def _check_against_reference(model: onnx.ModelProto, spec: PGNSpec, x: np.ndarray) -> dict[str, np.ndarray]:
    grafted = graft(model, spec)
    meta = read_metadata(grafted)
    feeds = {"input": x}
    gt = None
    if "gt" in spec.labels:
        gt = _gt(x.shape[0], *x.shape[-2:], meta.num_classes)
        feeds["pgn_gt"] = gt
    outputs = run_with_head(grafted, feeds)
    check_against_reference(outputs, meta, gt, RTOL_REFERENCE)
    return outputs


@pytest.mark.parametrize("form", ["paper", "exact"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("resolution", ["feature", "output", "keep"])
def test_every_p_and_label_matches_the_reference(two_branch_head, form, bias, resolution):
    labels = ("uni", "oh", "gt") if form == "exact" else ("uni", "oh")
    spec = PGNSpec(
        p=P_VALUES,
        labels=labels,
        form=form,
        bias=bias,
        resolution="output" if resolution == "output" else "feature",
        keep_feature_size=resolution == "keep",
    )
    # odd sizes, but at output resolution sizes whose resize never lands exactly on a
    # feature-grid point (p < 1 is ill-conditioned there; see docs/graft.md)
    size = (32, 48) if resolution == "output" else (37, 45)
    outputs = _check_against_reference(two_branch_head, spec, _input(3, *size))
    expected_hw = size if resolution != "keep" else (19, 23)
    assert all(outputs[name].shape == (3, 1, *expected_hw) for name in spec.map_names)


@pytest.mark.parametrize("resolution", ["feature", "output"])
@pytest.mark.parametrize("bias", [False, True])
def test_exact_form_equals_autograd(two_branch_head, resolution, bias):
    spec = PGNSpec(
        p=P_VALUES,
        labels=("uni", "oh", "gt"),
        form="exact",
        bias=bias,
        resolution=resolution,
        keep_feature_size=resolution == "feature",  # autograd at the classifier's own pixels
    )
    grafted = graft(two_branch_head, spec)
    x = _input(2, 32, 48, seed=3)  # no output pixel lands exactly on a feature-grid point
    gt = _gt(2, 32, 48, 5)
    outputs = run_with_head(grafted, {"input": x, "pgn_gt": gt})
    height, width = outputs[spec.map_names[0]].shape[-2:]
    rng = np.random.default_rng(7)
    pixels = [(int(rng.integers(2)), int(rng.integers(height)), int(rng.integers(width))) for _ in range(6)]
    check_against_autograd(grafted, outputs, pixels, gt, RTOL_AUTOGRAD)


def test_ties_in_the_argmax_give_no_nan():
    """All classifier weights 0: every class is maximal, S = 1/C everywhere."""
    model = onnx_head_model(num_classes=4, channels=[5], strides=[2], relu=[True], zero_classifier=True)
    outputs = {}
    for form, labels in (("paper", ("uni", "oh")), ("exact", ("uni", "oh"))):
        spec = PGNSpec(p=P_VALUES, labels=labels, form=form, pred=True, baselines=True)
        outputs[form] = run(graft(model, spec), {"input": _input(2, 17, 21)})
        assert all(np.isfinite(v).all() for v in outputs[form].values())
    for p in P_VALUES:
        name_oh, name_uni = pgn_output_name("oh", p), pgn_output_name("uni", p)
        assert not outputs["paper"][name_oh].any(), "paper oh zeroes every maximal class: g = 0"
        assert not outputs["exact"][name_uni].any(), "exact uni: g = S - 1/C = 0"
        assert outputs["paper"][name_uni].min() > 0 and outputs["exact"][name_oh].min() > 0
    np.testing.assert_allclose(outputs["paper"]["entropy"], np.log(4), rtol=1e-6)
    np.testing.assert_allclose(outputs["paper"]["msp"], 0.75, rtol=1e-6)
    assert not outputs["paper"]["pred"].any(), "the first maximal class wins"


@pytest.mark.parametrize("bias", [False, True])
def test_zero_features_give_zero_not_nan(bias):
    model = onnx_head_model(num_classes=3, channels=[4], strides=[2], relu=[True], feature_scale=0.0)
    spec = PGNSpec(p=(0.1, 0.5, 1.0, 2.0), labels=("uni",), bias=bias)
    outputs = run(graft(model, spec), {"input": _input(1, 16, 16)})
    for name in spec.map_names:
        assert np.isfinite(outputs[name]).all()
        assert (outputs[name] > 0).all() if bias else not outputs[name].any()


@pytest.mark.parametrize("form", ["paper", "exact"])
def test_huge_logits_give_finite_maps_equal_to_the_reference(form):
    """Logits near +1e4 for classes 1 and 2 (close to each other: the softmax is not one-hot)
    and 2e4 below them for class 0: exp(1e4) overflows even float64, so the graph's softmax
    and log-softmax must subtract the max first. The maps use the head logits' softmax, the
    baselines the output logits' (entropy: S and log S). Not at resolution ``output``: there
    the reference resizes the logits in float64, and the model's own float32 resize of values
    near 1e4 is off by ~1e-3, an error of the model's logits, not of the softmax."""
    model = onnx_head_model(num_classes=3, channels=[4], strides=[2], relu=[True])
    bias = next(i for i in model.graph.initializer if i.name == "b0")
    bias.CopyFrom(numpy_helper.from_array(np.array([-1e4, 1e4, 1e4], np.float32), "b0"))
    labels = ("uni", "oh", "gt") if form == "exact" else ("uni", "oh")
    spec = PGNSpec(p=P_VALUES, labels=labels, form=form, baselines=True)
    outputs = _check_against_reference(model, spec, _input(2, 32, 48))
    logits = outputs["out"].astype(np.float64)
    assert np.abs(logits).max() > 9e3 and 0 < np.abs(logits[:, 1] - logits[:, 2]).max() < 30
    import torch

    expected = reference.baseline_maps(torch.from_numpy(logits))
    for name in ("msp", "entropy"):
        assert np.isfinite(outputs[name]).all(), name
        np.testing.assert_allclose(outputs[name][:, 0], expected[name].numpy(), rtol=1e-5, atol=1e-6)


def test_pred_and_baselines_come_from_the_output_logits(two_branch_head):
    spec = PGNSpec(p=(0.5,), pred=True, baselines=True)
    grafted = graft(two_branch_head, spec)
    outputs = run(grafted, {"input": _input(3, 31, 27)})
    logits = outputs["out"]
    assert outputs["pred"].dtype == np.int32 and outputs["pred"].shape == (3, 31, 27)
    np.testing.assert_array_equal(outputs["pred"], logits.argmax(axis=1))
    import torch

    expected = reference.baseline_maps(torch.from_numpy(logits).double())
    for name in ("msp", "entropy"):
        assert outputs[name].dtype == np.float32 and outputs[name].shape == (3, 1, 31, 27)
        np.testing.assert_allclose(outputs[name][:, 0], expected[name].numpy(), rtol=1e-5, atol=1e-6)


def test_half_precision_network_keeps_the_pgn_subgraph_in_float32():
    float16 = pytest.importorskip("onnxconverter_common.float16")
    model32 = onnx_head_model(num_classes=5, channels=[6], strides=[2], relu=[True])
    model16 = float16.convert_float_to_float16(model32, keep_io_types=True)
    spec = PGNSpec(p=(0.5, 2.0), labels=("uni", "oh"))
    grafted = graft(model16, spec)
    meta = read_metadata(grafted)
    assert meta.precision == "fp16"
    x = _input(2, 23, 19)
    maps16, maps32 = run(grafted, {"input": x}), run(graft(model32, spec), {"input": x})
    for name in spec.map_names:
        assert maps16[name].dtype == np.float32 and np.isfinite(maps16[name]).all()
        np.testing.assert_allclose(maps16[name], maps32[name], rtol=2e-2, atol=2e-2 * maps32[name].max())


def _added_nodes(model: onnx.ModelProto, grafted: onnx.ModelProto) -> list[onnx.NodeProto]:
    return list(grafted.graph.node)[len(model.graph.node):]


def test_auto_upsample_uses_matmuls_for_small_classifier_maps_only():
    """``auto`` measures the classifier map at the nominal size (512 x 512 when the model has
    none): MatMuls up to 64 rows, the model's Resize above; the metadata says which."""
    shallow = onnx_head_model(num_classes=4, channels=[6], strides=[1], relu=[True])  # 512 rows
    deep = onnx_head_model(num_classes=4, channels=[6], strides=[16], relu=[True])  # 32 rows
    for model, expected in ((shallow, "resize"), (deep, "matmul")):
        grafted = graft(model, PGNSpec())
        assert read_metadata(grafted).spec.upsample == expected
        made_by = {out: n.op_type for n in grafted.graph.node for out in n.output}
        assert made_by["pgn_uni_p0.5"] == ("MatMul" if expected == "matmul" else "Resize")
    assert read_metadata(graft(shallow, PGNSpec(upsample="matmul"))).spec.upsample == "matmul"


def _softmax_exps(added: list[onnx.NodeProto]) -> int:
    """Exp nodes of a softmax (reading ``z - max z``), not of a power ``exp(max(p ln x, -87))``."""
    made_by = {out: n for n in added for out in n.output}
    return sum(1 for n in added if n.op_type == "Exp" and made_by[n.input[0]].op_type == "Sub")


def test_the_subgraph_shares_work_and_avoids_needless_pow(two_branch_head):
    spec = PGNSpec(p=(0.5, 1.0, 2.0), labels=("uni", "oh"), bias=True, upsample="resize")
    grafted = graft(two_branch_head, spec)
    added = _added_nodes(two_branch_head, grafted)
    ops = [n.op_type for n in added]
    assert not {"Softmax", "LogSoftmax", "Split", "ReduceSum", "ReduceSumSquare", "ReduceL1"} & set(ops)
    assert ops.count("Exp") == 1 and ops.count("Div") == 1, "one softmax, exp(z - max z) / sum"
    assert ops.count("Resize") == len(spec.map_names) + 1, "one per map, one for the resized branch"
    assert "Pow" not in ops, "p in {0.5, 1, 2} needs no Pow"
    assert ops.count("Abs") == 1, "|psi| of the signed branch only; |g| is not needed for paper forms"
    # channel sums as MatMuls: exp(z - max z) once, two psi x three p, S for uni at p 0.5 and 2
    # (||S||_1 = 1), the off-target S for oh at three p
    assert ops.count("MatMul") == 1 + 2 * 3 + 2 + 3


@pytest.mark.parametrize("upsample", ["resize", "matmul"])
def test_each_map_is_resized_on_its_own(two_branch_head, upsample):
    """No channel stack: each map output is resized from that map's own value, which only its
    resize reads (so dropping an output frees its whole chain); the interpolation matrices of
    ``matmul`` are shared by all maps."""
    spec = PGNSpec(p=(0.5, 2.0), labels=("uni", "oh"), upsample=upsample)
    added = _added_nodes(two_branch_head, graft(two_branch_head, spec))
    made_by = {out: n for n in added for out in n.output}
    final = {name: made_by[name] for name in spec.map_names}
    if upsample == "resize":
        assert all(n.op_type == "Resize" for n in final.values())
        resized = [n.input[0] for n in final.values()]
    else:  # rows @ (map @ columns)
        assert all(n.op_type == "MatMul" and made_by[n.input[1]].op_type == "MatMul" for n in final.values())
        assert len({n.input[0] for n in final.values()}) == 1, "one row matrix for all maps"
        assert len({made_by[n.input[1]].input[1] for n in final.values()}) == 1, "one column matrix"
        resized = [made_by[n.input[1]].input[0] for n in final.values()]
    assert len(set(resized)) == len(resized)
    readers = {n.op_type for n in added if set(n.input) & set(resized)}
    assert readers == ({"Resize", "Shape"} if upsample == "resize" else {"MatMul"}), readers


def test_softmax_and_log_softmax_share_the_max_and_the_exp(two_branch_head):
    spec = PGNSpec(p=(0.5,), resolution="output", baselines=True)
    ops = [n.op_type for n in _added_nodes(two_branch_head, graft(two_branch_head, spec))]
    assert not {"Softmax", "LogSoftmax"} & set(ops)
    assert ops.count("Log") == 1
    assert ops.count("Exp") == 1, "exp(z - max z) once for S, log S and msp"
    assert ops.count("ReduceMax") == 1, "max z once; msp is 1 - 1 / sum exp(z - max z)"
    assert ops.count("Reciprocal") == 1


def test_several_p_share_one_softmax_and_one_abs_per_tensor(two_branch_head):
    spec = PGNSpec(p=(0.1, 0.3, 0.7), labels=("uni", "oh"), form="exact", upsample="resize")
    added = _added_nodes(two_branch_head, graft(two_branch_head, spec))
    ops = [n.op_type for n in added]
    assert "Softmax" not in ops and _softmax_exps(added) == 1 and ops.count("Div") == 1
    assert ops.count("ArgMax") == 1
    assert ops.count("Abs") == 2, "signed psi and g_uni, once for the three p (g_oh needs none)"
    # |x|^0.1 and |x|^0.7 as exp(max(p ln x, -87)) of the two psi, |g_uni| and g_oh; 0.3 cubes 0.1
    assert ops.count("Log") == 4 and ops.count("Exp") == 1 + 2 * 4
    # Pow only on one-channel maps: the root of each map and (g_oh's target term) rest^p
    assert ops.count("Pow") == len(spec.map_names) + len(spec.p)


# ----------------------------------------------------------------------------- hypothesis
_MODES = [("linear", "half_pixel"), ("linear", "align_corners"), ("nearest", "asymmetric"), ("cubic", "half_pixel")]


@st.composite
def random_heads(draw):
    branches = draw(st.integers(1, 3))
    strides = [draw(st.sampled_from([1, 2, 4])) for _ in range(branches)]
    resolution = draw(st.sampled_from(["feature", "output", "keep"]))
    form = draw(st.sampled_from(["paper", "exact"]))
    labels = draw(st.lists(st.sampled_from(["uni", "oh"] + (["gt"] if form == "exact" else [])),
                           min_size=1, max_size=3, unique=True))
    p = draw(st.lists(st.one_of(st.sampled_from(P_VALUES), st.floats(0.2, 3.0)), min_size=1, max_size=3, unique=True))
    # psi resized (at output resolution, or a branch at another stride) with p < 1: no pixel
    # may land exactly on a grid point of the source (|x|^p of a ReLU zero mixed in with a
    # rounding-size weight is ill-conditioned there; see docs/graft.md): sizes divisible by 4.
    grid_safe = min(p) < 1 and (resolution == "output" or len(set(strides)) > 1)
    modes = _MODES if not (grid_safe and resolution == "output") else [m for m in _MODES if m[1] != "align_corners"]
    mode = draw(st.sampled_from(modes))
    # nearest: integer ratios only (ONNX and PyTorch round non-integer source indices differently)
    multiple = 4 if mode[0] == "nearest" or grid_safe else 1
    offset = 0 if multiple > 1 else 5
    size = (draw(st.integers(2, 10)) * multiple + offset, draw(st.integers(2, 10)) * multiple + offset)
    head = dict(
        num_classes=draw(st.integers(2, 8)),
        channels=[draw(st.integers(1, 9)) for _ in range(branches)],
        strides=strides,
        relu=[draw(st.booleans()) for _ in range(branches)],
        mode=mode[0],
        coordinate_mode=mode[1],
        seed=draw(st.integers(0, 2**16)),
        opset=draw(st.sampled_from([13, 17, 18, 20])),
    )
    note(f"onnx_head_model(**{head})")
    model = onnx_head_model(**head)
    spec = PGNSpec(
        p=tuple(p),
        labels=tuple(labels),
        form=form,
        bias=draw(st.booleans()),
        resolution="output" if resolution == "output" else "feature",
        keep_feature_size=resolution == "keep",
    )
    return model, spec, (draw(st.integers(1, 3)), *size)


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(random_heads())
def test_random_heads_match_the_reference(case):
    model, spec, shape = case
    _check_against_reference(model, spec, _input(*shape))
