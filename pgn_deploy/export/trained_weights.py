"""Which classifier weights the maps are the gradient of: the checkpoint's or the graph's.

PyTorch's exporters fold an eval-mode BatchNorm (or a constant scale) that follows the
classifier into the classifier's weights: the graph stores ``W_graph = a * W_trained`` with one
factor ``a_c`` per class, and the gradient w.r.t. the graph's weights differs from the one
w.r.t. the trained weights by that factor (``g_trained = a * g_graph``). :func:`match_trained`
finds the trained layer of the module whose weight the graph's classifier is (to a per-class
factor) and returns the factor to record; :data:`ONNX_NOTE` is what an ONNX file, whose fold
cannot be undone, records instead.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from pgn_deploy.contract import HeadInfo

MATCH_RTOL = 1e-4
"""Largest relative residual ``||W_graph - a W|| / ||W_graph||`` of a match (float32 folds are
about 1e-7)."""
ONNX_NOTE = ("an ONNX file: a BatchNorm or scale its exporter folded into the classifier cannot be undone; "
             "the maps are the gradient w.r.t. the graph's weights")


@dataclasses.dataclass
class TrainedMatch:
    """``layer``: the module's parameter name that the graph's classifier comes from (``None``:
    none matches); ``scale``: the per-class factor ``a`` folded into it (``None``: no fold)."""

    layer: str | None
    scale: np.ndarray | None

    def note(self, weights: str) -> str:
        """One line for the metadata and the export report ('' when there is nothing to say)."""
        if self.layer is None:
            return ("the classifier's weights in the graph match no layer of the checkpoint: the maps are the "
                    "gradient w.r.t. the graph's weights")
        if self.scale is None:
            return ""
        if weights == "trained":
            return (f"the exporter folded a per-class factor (a BatchNorm or scale) into {self.layer}; the maps "
                    "are the gradient w.r.t. its trained weights (the fold undone)")
        return (f"the exporter folded a per-class factor (a BatchNorm or scale) into {self.layer}; the maps are "
                "the gradient w.r.t. the folded weights in the graph (--weights graph)")


def classifier_weight(model: onnx.ModelProto, head: HeadInfo) -> np.ndarray | None:
    """The first classifier's weight as C x E[ x kh x kw] (a MatMul's E x C transposed)."""
    node = next((n for n in model.graph.node if n.name == head.conv_nodes[0]), None)
    inits = {init.name: init for init in model.graph.initializer}
    if node is None or node.input[1] not in inits:
        return None
    weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
    trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
    return weight.T if node.op_type in ("MatMul", "Gemm") and not trans_b else weight


def match_trained(module: Any, model: onnx.ModelProto, head: HeadInfo) -> TrainedMatch:
    """The module's weight that the graph's classifier is, up to a per-class factor (module doc)."""
    graph_weight = classifier_weight(model, head)
    if graph_weight is None:
        return TrainedMatch(None, None)
    best: tuple[float, str, np.ndarray] | None = None
    rows = graph_weight.reshape(graph_weight.shape[0], -1)
    norm = np.linalg.norm(rows)
    for name, parameter in module.named_parameters():
        if tuple(parameter.shape) != graph_weight.shape:
            continue
        trained = parameter.detach().double().cpu().numpy().reshape(rows.shape)
        energy = (trained * trained).sum(axis=1)
        if not (energy > 0).all():
            continue
        scale = (rows * trained).sum(axis=1) / energy
        residual = float(np.linalg.norm(rows - scale[:, None] * trained) / max(norm, 1e-300))
        if residual <= MATCH_RTOL and (best is None or residual < best[0]):
            best = (residual, name, scale)
    if best is None:
        return TrainedMatch(None, None)
    _, name, scale = best
    folded = not np.allclose(scale, 1.0, rtol=MATCH_RTOL, atol=0.0)
    return TrainedMatch(name.removeprefix("model."), scale if folded else None)
