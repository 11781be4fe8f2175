"""Which quantized nodes of a Q/DQ network stay float32, decided by measurement on calibration frames.

The PGN maps are far more sensitive to quantization than the prediction: the one-hot class
factor is about ``1 - S_max``, so its relative error is about the absolute error of the logit
margin, and a median relative error of 2 % needs the logits within ~0.02 of float32. Measured on
the demo model, no single part of the network carries the error (whole backbone float32: 5 %,
whole decoder float32: 5 %); the high-resolution layers (stride 2 and 4) each add 1-3 %, the
low-resolution ones 0.1-0.5 %. So the choice is made per node, by measurement:

1. *units*: the network nodes that read a Q -> DQ copy of a tensor (convs, and the adds, resizes
   and poolings ModelOpt puts Q/DQ before), Shape nodes aside;
2. *sensitivity* of a unit: the error of the PGN maps when only that unit reads quantized
   inputs (every other unit reconnected to the float32 tensors, :func:`dequantize_nodes`);
3. the units are taken from the least sensitive on, and a bisection finds the longest such
   prefix whose *measured* error, all of them quantized together, is within ``tolerance``;
   the other units stay float32.

The error of a model is the largest, over the PGN map outputs, median over pixels of
``|q - f| / |f|`` against the float32 model, on the calibration frames only (never evaluation
frames). Cost: one ONNX Runtime session and run per unit plus ~log2(units) more.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from pgn_deploy.contract import require

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
SHAPE_ONLY_OPS = ("Shape", "Size")
"""Ops that read only a tensor's shape: quantizing their input changes nothing."""


@dataclasses.dataclass(frozen=True)
class FloatChoice:
    """What :func:`choose_float_nodes` measured: the units kept float32 and the errors (fractions)."""

    float_nodes: list[str]
    units: int
    tolerance: float
    frames: int
    error_all_quantized: float
    error_chosen: float

    def to_json(self) -> dict[str, Any]:
        """The metadata entry (errors rounded to 5 digits)."""
        return {"rule": "measured", "tolerance": self.tolerance, "frames": self.frames, "units": self.units,
                "kept_float": len(self.float_nodes),
                "error_all_quantized": round(self.error_all_quantized, 5), "error_chosen": round(self.error_chosen, 5)}


def _producers(model: Any) -> dict[str, Any]:
    return {out: node for node in model.graph.node for out in node.output}


def float_source(made_by: dict[str, Any], name: str) -> str | None:
    """The float tensor ``t`` when ``name`` is the output of ``DequantizeLinear(QuantizeLinear(t))``, else None."""
    dq = made_by.get(name)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = made_by.get(dq.input[0])
    if q is None or q.op_type != "QuantizeLinear":
        return None
    return q.input[0]


def quantized_units(model: Any, exclude: set[str]) -> list[str]:
    """Names of the nodes (not in ``exclude``, not Q/DQ, not shape-only) that read a Q -> DQ copy, in graph order."""
    made_by = _producers(model)
    return [node.name for node in model.graph.node
            if node.name not in exclude and node.op_type not in (*QDQ_OPS, *SHAPE_ONLY_OPS)
            and any(float_source(made_by, name) is not None for name in node.input)]


def dequantize_nodes(model: Any, nodes: set[str]) -> int:
    """Point every input of the nodes named in ``nodes`` that reads ``DQ(Q(t))`` back at ``t``
    (in place; weights and activations alike), then drop the Q/DQ nodes nobody reads. Returns how
    many inputs were reconnected."""
    made_by = _producers(model)
    changed = 0
    for node in model.graph.node:
        if node.name not in nodes:
            continue
        for i, name in enumerate(node.input):
            source = float_source(made_by, name)
            if source is not None:
                node.input[i] = source
                changed += 1
    remove_unused_qdq(model)
    return changed


def remove_unused_qdq(model: Any) -> None:
    """Drop Q/DQ nodes whose outputs nobody reads, and their scales and zero points once unread (in place)."""
    graph = model.graph
    params: set[str] = set()
    while True:
        read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [node for node in graph.node if node.op_type in QDQ_OPS and not any(o in read for o in node.output)]
        if not dead:
            break
        for node in dead:
            params.update(node.input[1:])
            graph.node.remove(node)
    unread = [init for init in graph.initializer if init.name in params - read]
    for init in unread:
        graph.initializer.remove(init)


class MapError:
    """The error of a model's PGN maps against fixed float32 reference maps, on fixed frames.

    ``frames``: float32 N x C x H x W for ``input_name``; ``maps``: the PGN output names.
    Calling it with a model (ModelProto) returns the largest median relative error over the maps.
    """

    def __init__(self, reference: Any, input_name: str, frames: np.ndarray, maps: Sequence[str]):
        self.input_name, self.frames, self.maps = input_name, frames, list(maps)
        self.reference = self._run(reference)

    def _run(self, model: Any) -> list[np.ndarray]:
        ort = require("onnxruntime", "measuring quantization sensitivity")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # the extended CPU fusions mis-compute FP8 Q/DQ (see pgn_deploy.engines.quantize); BASIC is exact
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        runs = [session.run(self.maps, {self.input_name: self.frames[i:i + 1]}) for i in range(len(self.frames))]
        return [np.concatenate([run[k] for run in runs]).astype(np.float64) for k in range(len(self.maps))]

    def __call__(self, model: Any) -> float:
        """The largest median relative error of ``model``'s PGN maps against the reference maps (a fraction)."""
        errors = []
        for ref, new in zip(self.reference, self._run(model)):
            errors.append(float(np.median(np.abs(new - ref) / np.maximum(np.abs(ref), np.finfo(np.float32).tiny))))
        return max(errors)


def _with_float(model: Any, nodes: set[str]) -> Any:
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    dequantize_nodes(copy, nodes)
    return copy


def choose_float_nodes(quantized: Any, error: MapError, exclude: set[str], tolerance: float) -> FloatChoice:
    """The smallest measured set of units of ``quantized`` to keep float32 so that ``error`` is at
    most ``tolerance`` (see the module doc). ``exclude``: nodes that are not units (the PGN subgraph)."""
    units = quantized_units(quantized, exclude)
    everything = error(quantized)
    frames = len(error.frames)
    if everything <= tolerance or not units:
        return FloatChoice([], len(units), tolerance, frames, everything, everything)
    all_units = set(units)
    sensitivity = {unit: error(_with_float(quantized, all_units - {unit})) for unit in units}
    order = sorted(units, key=lambda unit: sensitivity[unit])
    low, high, best = 0, len(order), 0.0  # invariant: the first `low` units together meet the tolerance
    while low < high:
        middle = (low + high + 1) // 2
        measured = error(_with_float(quantized, set(order[middle:])))
        if measured <= tolerance:
            low, best = middle, measured
        else:
            high = middle - 1
    return FloatChoice(order[low:], len(units), tolerance, frames, everything, best)
