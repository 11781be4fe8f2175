"""Penultimate-layer maps in ``pgn-check``: the float64 closed form on either side's tensors.

The graft records in the metadata (``metadata.penultimate``) the graph tensors the maps read
(``inputs``: psi2, the penultimate conv's input; ``pre_activation``: z) and the per-channel
factor ``scale`` on ``s``; the conv's geometry and the classifier's weights come from the graph.
:func:`expected_maps` recomputes every ``pgn_<label>_p<p>_penultimate`` map with
:func:`pgn_deploy.reference.penultimate_pgn_map` in float64 and resizes it as the model resizes its
logits: on the graph's own psi2 and z for ``pgn-check``'s ``self`` check, on the PyTorch model's
psi2 (the input of the ``Conv2d`` whose weights, up to the BatchNorm factor, are the graph's
penultimate kernel) for its ``reference`` check.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pgn_deploy.contract import Metadata, parse_map_name, require

_ACTIVATIONS = {"Relu": "relu", "LeakyRelu": "leaky_relu", "identity": "identity"}


class UncheckableError(Exception):
    """The penultimate maps of this model cannot be recomputed here; the message says why."""


def graph_tensors(meta: Metadata) -> list[str]:
    """Names of the graph tensors :func:`expected_maps` reads (psi2 and z); none without
    penultimate maps or for metadata written before the graft recorded them."""
    info = meta.penultimate or {}
    return [info["inputs"], info["pre_activation"]] if "inputs" in info else []


def graph_inputs(meta: Metadata, run: Mapping[str, np.ndarray]) -> tuple[Any, Any]:
    """psi2 and z of the graph's run (:func:`graph_tensors` exposed) as float64 torch tensors."""
    torch = require("torch", "pgn-check")
    info = meta.penultimate or {}
    if "inputs" not in info:
        raise UncheckableError("metadata written before the graft recorded the penultimate tensors: re-export")
    return tuple(torch.from_numpy(np.asarray(run[info[key]], np.float64)) for key in ("inputs", "pre_activation"))


def expected_maps(
    model: Any, meta: Metadata, inputs: Any, pre_activation: Any, head_logits: Any, logits_size: tuple[int, int],
    gt: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """Every penultimate map of ``meta`` in float64 (N x H x W numpy each).

    ``model``: the grafted ONNX model (the conv's geometry and the classifier's weights are read
    there); ``inputs``: psi2, the penultimate conv's input (N x E2 x H2 x W2); ``pre_activation``:
    z, or psi (the activation's output: for ReLU, ReLU6 and LeakyReLU with a positive slope its
    derivative is the same function of psi as of z); ``head_logits``: the logits at the
    classifier's resolution (what the softmax sees); all float64 torch tensors; ``logits_size``:
    the model's output size; ``gt``: the labels fed as ``pgn_gt`` (at the output size) or
    ``None``. Raises :class:`UncheckableError` for what the float64 reference does not cover.
    """
    from pgn_deploy import reference

    torch = require("torch", "pgn-check")
    info = meta.penultimate or {}
    names = [n for n in meta.pgn_outputs if parse_map_name(n)[2] == "penultimate"]
    if not names:
        return {}
    if info.get("weights") == "trained" and info.get("scale") is None and info.get("scale_from") != "none":
        raise UncheckableError("the metadata does not record the BatchNorm factor of the penultimate conv")
    activation, slope = _activation(info)
    geometry = _conv_geometry(model, _node(model, info["conv"]))
    classifier = _node(model, meta.head.conv_nodes[0])
    weight = torch.from_numpy(initializer(model, classifier.input[1]).astype(np.float64))
    weight = weight.reshape(weight.shape[0], -1)
    if meta.head.class_scale is not None:  # dphi/dpsi = diag(a) K
        weight = weight * torch.tensor(meta.head.class_scale, dtype=torch.float64)[:, None]
    scale = None if info.get("scale") is None else torch.tensor(info["scale"], dtype=torch.float64)
    size = tuple(head_logits.shape[-2:])
    gt_here = None
    if gt is not None:  # nearest, as the graph samples it
        gt_here = torch.nn.functional.interpolate(torch.from_numpy(gt)[:, None].double(), size=size, mode="nearest")
        gt_here = gt_here[:, 0].long()
    resize = meta.head.resize != "none" and not meta.spec.keep_feature_size
    maps = {}
    for name in names:
        label, p, _ = parse_map_name(name)
        value = reference.penultimate_pgn_map(
            inputs, pre_activation, weight, head_logits, p, label, meta.spec.form, **geometry, scale=scale,
            activation=activation, negative_slope=slope, gt=gt_here)
        if resize:
            value = reference.resize_like_logits(value[:, None], logits_size, meta.head.resize,
                                                 meta.head.align_corners)[:, 0]
        maps[name] = value.numpy()
    return maps


def _activation(info: Mapping[str, Any]) -> tuple[str, float]:
    """The reference's activation name and negative slope for the recorded activation."""
    kind = info.get("activation", "identity")
    if kind == "Clip":
        bounds = info.get("bounds") or []
        if bounds == [0.0, 6.0]:
            return "relu6", 0.0
        raise UncheckableError(f"a Clip with bounds {bounds}: the float64 reference covers ReLU, ReLU6, "
                               "LeakyReLU and identity")
    if kind not in _ACTIVATIONS:
        raise UncheckableError(f"activation {kind!r} is not covered by the float64 reference")
    return _ACTIVATIONS[kind], float(info.get("negative_slope", 0.01))


def _conv_geometry(model: Any, node: Any) -> dict[str, tuple[int, int]]:
    """``kernel_size``, ``padding``, ``dilation``, ``stride`` of the Conv ``node`` of ``model``
    (symmetric pads only)."""
    attributes = {a.name: list(a.ints) for a in node.attribute if a.ints}
    pads = attributes.get("pads", [0, 0, 0, 0])
    if pads[:2] != pads[2:]:
        raise UncheckableError(f"the penultimate conv {node.name!r} pads asymmetrically ({pads})")
    kernel = attributes.get("kernel_shape") or list(initializer(model, node.input[1]).shape[2:])
    return {
        "kernel_size": tuple(kernel),
        "padding": tuple(pads[:2]),
        "dilation": tuple(attributes.get("dilations", [1, 1])),
        "stride": tuple(attributes.get("strides", [1, 1])),
    }


def _node(model: Any, name: str) -> Any:
    node = next((n for n in model.graph.node if n.name == name), None)
    if node is None:
        raise UncheckableError(f"the graph has no node {name!r} (named in the metadata)")
    return node


def initializer(model: Any, name: str) -> np.ndarray:
    """The initializer ``name`` of ``model`` as numpy; :class:`UncheckableError` when it is not one."""
    from onnx import numpy_helper

    tensor = next((t for t in model.graph.initializer if t.name == name), None)
    if tensor is None:
        raise UncheckableError(f"the weight {name!r} is not an initializer")
    return numpy_helper.to_array(tensor)

