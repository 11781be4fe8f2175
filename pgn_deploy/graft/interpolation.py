"""A linear ``Resize`` of the PGN maps as two MatMuls with interpolation matrices built in-graph.

Bilinear resizing is separable: ``out = A_h @ map @ A_w^T``, where ``A`` (out x in) has, per
output row, the weights ``1 - f`` and ``f`` of the two input samples around its source
coordinate. The matrices are built from the runtime sizes (the exported graphs keep H and W
dynamic) with about 30 small ops on 1-D tensors, once for all maps, and reproduce ONNX ``Resize``
with ``mode="linear"`` as ONNX Runtime computes it (source coordinate from the float32 scale
``out / in`` or the node's constant scale, clamped to ``[0, in - 1]``). On ONNX Runtime's CPU
provider a one-channel 32 x 64 -> 512 x 1024 map takes 0.24 ms as two MatMuls against 0.76 ms
as a ``Resize`` (``benchmarks/NOTES.md``, attempt 8); the model's own ops are still used for
anything this does not cover (:func:`matmul_resizer` returns ``None``), and for classifier
maps with many rows (:data:`MATMUL_MAX_ROWS`).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from pgn_deploy.graft.graph_builder import FLOAT, GraphBuilder
from pgn_deploy.graft.head import attribute, constant_array

COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")
MATMUL_MAX_ROWS = 64
"""Largest classifier map height for which ``upsample="auto"`` picks the MatMuls. Their cost
per output pixel grows with the map's rows (``A_h`` is dense: about 0.02 ns per row on this
CPU), a Resize's does not (about 1.5 ns): 0.24 against 0.76 ms at 32 rows, 2.1 against
about 0.8 ms at 256 rows (measured, 1 thread, one map at 512 x 1024)."""


def matmul_resizer(b: GraphBuilder, chain: list[ir.Node], source: ir.Value,
                   target: ir.Value) -> Callable[[ir.Value], ir.Value] | None:
    """A function resizing an N x K x h x w float32 tensor (``h, w`` of ``source``) to the
    ``H, W`` of ``target`` exactly as ``chain`` does, or ``None`` when ``chain`` is not one
    linear 2-D ``Resize`` this reproduces (then mirror the chain itself)."""
    if len(chain) != 1 or not _supported(chain[0]):
        return None
    node = chain[0]
    scales = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    has_sizes = len(node.inputs) > 3 and node.inputs[3] is not None
    if not has_sizes and (scales is None or scales.shape != (4,) or scales[0] != 1 or scales[1] != 1):
        return None
    mode = str(attribute(node, "coordinate_transformation_mode", "half_pixel"))
    row_scale, col_scale = (None, None) if has_sizes else (float(scales[2]), float(scales[3]))
    rows = _matrix(b, mode, b.dim(source, 2), b.dim(target, 2), row_scale, transpose=False)
    cols = _matrix(b, mode, b.dim(source, 3), b.dim(target, 3), col_scale, transpose=True)
    return lambda x: b.op("MatMul", [rows, b.op("MatMul", [x, cols])])


def _supported(node: ir.Node) -> bool:
    return (
        node.op_type == "Resize"
        and attribute(node, "mode", "nearest") == "linear"
        and attribute(node, "coordinate_transformation_mode", "half_pixel") in COORDINATE_MODES
        and attribute(node, "antialias", 0) == 0
        and attribute(node, "axes", None) is None
        and attribute(node, "keep_aspect_ratio_policy", "stretch") == "stretch"
    )


def _matrix(b: GraphBuilder, mode: str, size_in: ir.Value, size_out: ir.Value, scale: float | None,
            transpose: bool) -> ir.Value:
    """The out x in interpolation matrix of one axis (in x out when ``transpose``), float32."""
    zero, one = b.const(0, np.int64), b.const(1, np.int64)
    n_in, n_out = b.to_float(size_in), b.to_float(size_out)
    scale_value = b.op("Div", [n_out, n_in]) if scale is None else b.const(scale)
    index = b.to_float(b.op("Range", [zero, size_out, one]))
    source = _source_coordinate(b, mode, index, n_in, n_out, scale_value)
    last = b.op("Sub", [n_in, b.const(1.0)])
    source = b.op("Min", [b.op("Max", [source, b.const(0.0)]), last])
    low = b.op("Floor", [source])
    high = b.op("Min", [b.op("Add", [low, b.const(1.0)]), last])
    frac = b.op("Sub", [source, low])
    columns = b.to_float(b.op("Range", [zero, size_in, one]))
    # output samples along rows (axis 0) and input samples along columns, or the transpose
    out_axis = b.const([0 if transpose else 1], np.int64)  # where a per-output vector gets its new axis
    in_axis = b.const([1 if transpose else 0], np.int64)

    def weighted(position: ir.Value, weight: ir.Value) -> ir.Value:
        hit = b.op("Equal", [b.op("Unsqueeze", [position, out_axis]), b.op("Unsqueeze", [columns, in_axis])])
        return b.op("Mul", [b.op("Cast", [hit], {"to": int(FLOAT)}), b.op("Unsqueeze", [weight, out_axis])])

    return b.op("Add", [weighted(low, b.op("Sub", [b.const(1.0), frac])), weighted(high, frac)])


def _source_coordinate(b: GraphBuilder, mode: str, index: ir.Value, n_in: ir.Value, n_out: ir.Value,
                       scale: ir.Value) -> ir.Value:
    """The source coordinate of each output index, as ONNX defines ``mode``."""
    if mode == "asymmetric":
        return b.op("Div", [index, scale])
    if mode == "align_corners":  # 0 when the output has one sample
        steps = b.op("Max", [b.op("Sub", [n_out, b.const(1.0)]), b.const(1.0)])
        return b.op("Div", [b.op("Mul", [index, b.op("Sub", [n_in, b.const(1.0)])]), steps])
    half = b.op("Sub", [b.op("Div", [b.op("Add", [index, b.const(0.5)]), scale]), b.const(0.5)])
    if mode == "half_pixel":
        return half
    single = b.op("Equal", [n_out, b.const(1.0)])  # pytorch_half_pixel: 0 for one output sample
    return b.op("Where", [single, b.const(0.0), half])
