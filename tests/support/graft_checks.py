"""Helpers of the graft tests: run ONNX models, expose head tensors, compute the expected maps.

The expected maps come from :mod:`pgn_deploy.reference` in float64 on the head tensors the
grafted graph itself computed (its classifier inputs and head logits, exposed as extra outputs),
and from :func:`pgn_deploy.reference.autograd_pgn` on the classifier weights read from the graph.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from pgn_deploy import reference
from pgn_deploy.contract import Metadata, pgn_output_name, read_metadata


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of ``model`` on ``feeds`` (ONNX Runtime, CPU)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs the float32 tensors ``names``."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for name in dict.fromkeys(names):
        if name not in present:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return copy


def run_with_head(grafted: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All outputs of a grafted model plus its head tensors (features, head logits, logits)."""
    head = read_metadata(grafted).head
    return run(with_outputs(grafted, [*head.features, head.head_logits, head.logits]), feeds)


def _aligned_features(outputs: dict[str, np.ndarray], meta: Metadata) -> list[torch.Tensor]:
    """psi_i in float64, resized like their branch to the head logits' size."""
    size = outputs[meta.head.head_logits].shape[-2:]
    modes = meta.head.feature_resize or ["none"] * len(meta.head.features)
    features = [torch.from_numpy(outputs[name]).double() for name in meta.head.features]
    return [reference.resize_like_logits(f, size, m) if m != "none" else f for f, m in zip(features, modes)]


def reference_maps(outputs: dict[str, np.ndarray], meta: Metadata,
                   gt: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The float64 reference maps (N x H x W) on the graph's own head tensors."""
    head = meta.head
    maps = reference.pgn_maps(
        _aligned_features(outputs, meta),
        torch.from_numpy(outputs[head.head_logits]).double(),
        meta.spec,
        _output_size(outputs, meta),
        _mode(meta),
        head.align_corners,
        torch.from_numpy(gt) if gt is not None else None,
    )
    return {name: value.numpy() for name, value in maps.items()}


def _output_size(outputs: dict[str, np.ndarray], meta: Metadata) -> tuple[int, int] | None:
    return outputs[meta.head.logits].shape[-2:] if meta.head.resize != "none" else None


def _mode(meta: Metadata) -> str:
    return meta.head.resize if meta.head.resize != "none" else "bilinear"


def float32_slack(outputs: dict[str, np.ndarray], meta: Metadata) -> dict[str, np.ndarray]:
    """Per map, the error (N x H x W) that float32 rounding of the softmax alone can cause.

    Only ``exact``/``uni`` needs it: ``g_h = S_h - 1/C`` cancels where ``S_h`` is near ``1/C``,
    and for p < 1 a tiny ``|g_h|`` is raised to a power with unbounded slope. With ``delta`` =
    a few float32 ulps of ``S``, the bound is ``(1 + sum_h dT_h / G)^(1/p) - 1`` relative,
    ``dT_h`` the largest change of ``|g_h|^p`` over ``|g_h| +- delta``. Other maps: 0.
    """
    spec, head = meta.spec, meta.head
    slack = {}
    at_output = spec.resolution == "output"
    logits = torch.from_numpy(outputs[head.logits if at_output else head.head_logits]).double()
    features = _aligned_features(outputs, meta)
    if at_output:
        features = [reference.resize_like_logits(f, _output_size(outputs, meta), _mode(meta), head.align_corners)
                    for f in features]
    probs = torch.softmax(logits, dim=1)
    num_classes = logits.shape[1]
    for label in spec.labels:
        for p in spec.p:
            name = pgn_output_name(label, p)
            if not (spec.form == "exact" and label == "uni"):
                continue
            g = (probs - 1.0 / num_classes).abs()
            delta = 4 * np.finfo(np.float32).eps * probs.clamp(min=1.0 / num_classes)
            up = (g + delta).pow(p) - g.pow(p)
            down = g.pow(p) - (g - delta).clamp(min=0).pow(p)
            total = g.pow(p).sum(dim=1)
            relative = (1 + torch.maximum(up, down).sum(dim=1) / total).pow(1 / p) - 1
            pgn = reference.pgn_map(features, logits, p, label, spec.form, spec.bias)
            error = (relative * pgn).nan_to_num(0.0)[:, None]
            if not at_output and not spec.keep_feature_size:
                error = reference.resize_like_logits(error, _output_size(outputs, meta), _mode(meta),
                                                     head.align_corners)
            slack[name] = error[:, 0].numpy()
    return slack


def classifier_params(model: onnx.ModelProto, meta: Metadata) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The 1x1 classifier weights (C x E_i) and the summed bias (C) from the graph's initializers."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    convs = {n.name: n for n in model.graph.node}
    weights, bias = [], torch.zeros(meta.num_classes, dtype=torch.float64)
    for name in meta.head.conv_nodes:
        node = convs[name]
        weights.append(torch.from_numpy(inits[node.input[1]][:, :, 0, 0]).double())
        if len(node.input) > 2 and node.input[2]:
            bias = bias + torch.from_numpy(inits[node.input[2]]).double()
    return weights, bias


def autograd_values(
    model: onnx.ModelProto,
    outputs: dict[str, np.ndarray],
    pixels: list[tuple[int, int, int]],
    p: float,
    label: str,
    gt: np.ndarray | None = None,
) -> np.ndarray:
    """``||dL/d(K_i, [b])||_p`` by back-propagation at ``pixels`` of the working resolution
    (the output logits for ``resolution="output"``, else the head logits), in float64."""
    meta = read_metadata(model)
    weights, bias = classifier_params(model, meta)
    weights = [w.requires_grad_(True) for w in weights]
    bias = bias.requires_grad_(meta.spec.bias)
    features = _aligned_features(outputs, meta)
    logits = sum(torch.einsum("ce,nehw->nchw", w, psi) for w, psi in zip(weights, features)) + bias[:, None, None]
    if meta.spec.resolution == "output" and meta.head.resize != "none":
        logits = reference.resize_like_logits(logits, outputs[meta.head.logits].shape[-2:], meta.head.resize,
                                              meta.head.align_corners)
    params = weights + ([bias] if meta.spec.bias else [])
    gt_tensor = torch.from_numpy(gt) if gt is not None else None
    if gt_tensor is not None and gt_tensor.shape[-2:] != logits.shape[-2:]:
        gt_tensor = F.interpolate(gt_tensor[:, None].double(), size=logits.shape[-2:], mode="nearest")[:, 0].long()
    return reference.autograd_pgn(logits, params, pixels, p, label, gt_tensor).detach().numpy()


def assert_maps_close(actual: np.ndarray, expected: np.ndarray, rtol: float, name: str = "",
                      slack: np.ndarray | None = None) -> None:
    """Graph map (N x 1 x H x W float32) vs expected (N x H x W): relative error ``rtol`` with a
    floor of ``rtol`` times the map's largest value (values near 0 carry only absolute meaning),
    plus ``slack`` (N x H x W, absolute) where float32 cannot do better (:func:`float32_slack`)."""
    assert actual.dtype == np.float32 and actual.ndim == 4 and actual.shape[1] == 1, (name, actual.shape, actual.dtype)
    assert np.isfinite(actual).all(), name
    tolerance = rtol * (np.abs(expected) + np.abs(expected).max())
    if slack is not None:
        tolerance = tolerance + 2 * slack
    error = np.abs(actual[:, 0].astype(np.float64) - expected)
    worst = np.unravel_index(np.argmax(error - tolerance), error.shape)
    assert (error <= tolerance).all(), (
        f"{name}: {int((error > tolerance).sum())} of {error.size} values off; worst at {worst}: "
        f"{actual[:, 0][worst]} vs {expected[worst]} (tolerance {tolerance[worst]:.3g})"
    )


def check_against_reference(outputs: dict[str, np.ndarray], meta: Metadata, gt: np.ndarray | None = None,
                            rtol: float = 1e-4) -> None:
    """Every PGN map of a grafted model's ``outputs`` against the float64 reference."""
    expected = reference_maps(outputs, meta, gt)
    slack = float32_slack(outputs, meta)
    assert set(expected) == set(meta.pgn_outputs)
    for name, value in expected.items():
        assert_maps_close(outputs[name], value, rtol, name, slack.get(name))


def check_against_autograd(
    grafted: onnx.ModelProto,
    outputs: dict[str, np.ndarray],
    pixels: list[tuple[int, int, int]],
    gt: np.ndarray | None = None,
    rtol: float = 1e-5,
) -> None:
    """Every map of an ``exact`` graft at ``pixels`` against back-propagation, to ``rtol``
    (plus :func:`float32_slack`)."""
    meta = read_metadata(grafted)
    slack = float32_slack(outputs, meta)
    for label in meta.spec.labels:
        for p in meta.spec.p:
            name = pgn_output_name(label, p)
            actual = np.array([outputs[name][n, 0, y, x] for n, y, x in pixels], dtype=np.float64)
            expected = autograd_values(grafted, outputs, pixels, p, label, gt)
            extra = np.array([slack[name][n, y, x] for n, y, x in pixels]) if name in slack else 0.0
            assert (np.abs(actual - expected) <= rtol * np.abs(expected) + 2 * extra).all(), (name, actual, expected)
