"""Calibrated scores inside the graph: ``<map>_norm`` outputs and the ``ood_mask`` output.

For every calibrated score map ``m`` (N x 1 x H x W float32) the graph gets an output
``m_norm``: the map's in-distribution percentile rank in [0, 1], the piecewise linear function
through the stored quantiles defined by :func:`pgn_deploy.runtime.stats.percentile_rank`
(0 below the calibration minimum, 1 at and above its maximum). It is computed with scalar
constants only, one pass over the map per op, never a K x H x W broadcast: with ``u_0 < ... <
u_M`` the distinct knot values and ``a_j`` the slope of segment ``j``, each interior knot
``u_j`` is one kink, ``current = LeakyRelu(current - shift_j, alpha = a_j-1 / a_j)``, so that
after the last one ``current = (g(x) - g(u_M-1)) / a_M-1`` for the continuous part ``g``
extended linearly beyond ``[u_0, u_M]``; a ``Mul`` and an ``Add`` give ``g``; each tied knot (a
jump of the rank at one value, e.g. many exact zeros) adds ``Cast(x >= v) * step``; the final
``Clip(0, 1)`` makes it 0 below the minimum and 1 above the maximum. Every op is monotone (so is
its float32 rounding), hence so is the rank; its error is of the order of the float32 rounding
of the knots (``eps * |u_j| * a_j``), as for any float32 evaluation. With the 7 knot segments of a
calibration this is 16 ops, about 2.2 ms at 512 x 1024 on one ONNX Runtime CPU thread, against
10.7 ms for the same sums broadcast over the 7 segments (``benchmarks/NOTES.md``: the variants
measured). NaN stays NaN (``Sub``, ``LeakyRelu``, ``Mul``, ``Clip`` propagate it; ``x >= v`` is false).

``ood_mask`` (uint8 N x 1 x H x W) is ``Cast(m_norm >= ood_threshold)`` for the default map,
where ``ood_threshold`` is a float32 scalar graph input with an initializer default (the
calibrated threshold on the rank scale): a client may feed another threshold per request.

Every node and constant is named ``pgn_norm/...`` and none of them feeds the model's original
outputs, so the precision converter keeps them float32 (:mod:`pgn_deploy.engines.subgraph`),
and :func:`add_normalization` can strip and rebuild them when the model is recalibrated.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from pgn_deploy.contract import (
    NORM_SUFFIX,
    OOD_MASK,
    OOD_THRESHOLD_INPUT,
    BadInputError,
    read_metadata,
    write_metadata,
)
from pgn_deploy.graft.graph_builder import GraphBuilder
from pgn_deploy.runtime.stats import THRESHOLD_RULE, default_rank_threshold, rank_knots

PREFIX = "pgn_norm/"


def norm_name(score: str) -> str:
    """Output name of the percentile rank of map ``score``: ``<score>_norm``."""
    return f"{score}{NORM_SUFFIX}"


def strip_normalization(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` without the outputs, input, nodes and constants this module adds."""
    meta = read_metadata(model)
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    graph = stripped.graph
    added = set(meta.normalized.values()) | ({meta.ood_mask["output"]} if meta.ood_mask else set())
    keep_outputs = [o for o in graph.output if o.name not in added]
    del graph.output[:]
    graph.output.extend(keep_outputs)
    keep_inputs = [i for i in graph.input if i.name != OOD_THRESHOLD_INPUT]
    del graph.input[:]
    graph.input.extend(keep_inputs)
    keep_nodes = [n for n in graph.node if not n.name.startswith(PREFIX)]
    del graph.node[:]
    graph.node.extend(keep_nodes)
    keep_inits = [t for t in graph.initializer if not t.name.startswith(PREFIX) and t.name != OOD_THRESHOLD_INPUT]
    del graph.initializer[:]
    graph.initializer.extend(keep_inits)
    meta.normalized, meta.ood_mask = {}, None
    write_metadata(stripped, meta)
    return stripped


def add_normalization(model: onnx.ModelProto, maps: Sequence[str] | None = None,
                      mask_map: str | None = None) -> onnx.ModelProto:
    """A copy of the calibrated grafted ``model`` with ``<map>_norm`` outputs and ``ood_mask``.

    ``maps``: the score maps to normalise (default: every calibrated one); ``mask_map``: the map
    the ``ood_mask`` thresholds (default: the first PGN map, else the first normalised map).
    Outputs added by an earlier call are replaced (a recalibrated model gets new quantiles).
    Raises :class:`BadInputError` when the model or a map has no calibration.
    """
    meta = read_metadata(model)
    if not meta.calibration:
        raise BadInputError("--normalize needs a calibrated model: pass --calib IMAGES (pgn-export) or "
                            "calibrate it first (pgn-calibrate)")
    maps = list(maps) if maps is not None else [m for m in meta.score_outputs if m in meta.calibration]
    missing = [m for m in maps if m not in meta.calibration]
    if missing:
        raise BadInputError(f"no calibration for {', '.join(missing)}; recalibrate the model")
    if not maps:
        raise BadInputError("none of the model's score maps is calibrated; recalibrate the model")
    mask_map = mask_map or next((m for m in meta.pgn_outputs if m in maps), maps[0])
    if mask_map not in maps:
        raise BadInputError(f"the ood_mask map {mask_map!r} is not among the normalised maps")
    stripped = strip_normalization(model)
    graph_model = ir.from_proto(stripped)
    builder = GraphBuilder(graph_model.graph, PREFIX)
    outputs = {v.name: v for v in graph_model.graph.outputs}
    normalized = {}
    for name in maps:
        if name not in outputs:
            raise BadInputError(f"the model has no output {name!r} to normalise")
        rank = _rank(builder, outputs[name], meta.calibration[name], norm_name(name))
        graph_model.graph.outputs.append(rank)
        normalized[name] = rank.name
    default = default_rank_threshold(meta.calibration, mask_map)
    graph_model.graph.outputs.append(_mask(builder, graph_model.graph, _find(graph_model.graph, normalized[mask_map]),
                                           default))
    result = ir.to_proto(graph_model)
    meta.normalized = normalized
    meta.ood_mask = {"output": OOD_MASK, "map": mask_map, "threshold_input": OOD_THRESHOLD_INPUT,
                     "default": default, "rule": meta.calibration[mask_map].get("threshold_rule", THRESHOLD_RULE)}
    write_metadata(result, meta)
    onnx.checker.check_model(result)
    return result


def _find(graph: ir.Graph, name: str) -> ir.Value:
    return next(v for v in graph.outputs if v.name == name)


def rank_pieces(entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float]]]:
    """The percentile rank of a calibration entry as a continuous part plus steps, float64.

    Returns ``(knots, slopes, jumps)``: the distinct knot values ``u_0 < ... < u_M``, the slope
    ``a_j > 0`` of the continuous piecewise linear part ``g`` on ``[u_j, u_j+1]`` (``g(u_0) = 0``,
    constant outside ``[u_0, u_M]``) and the steps ``(value, height)`` of the tied knots, so that
    ``percentile_rank(x) = clip(g(x) + sum(height * (x >= value)), 0, 1)``.
    """
    values, levels = rank_knots(entry)
    steps = np.diff(levels)
    sloped = values[1:] > values[:-1]
    knots = np.concatenate([values[:1], values[1:][sloped]])
    slopes = steps[sloped] / np.diff(knots)
    jumps: dict[float, float] = {}
    for value, step in zip(values[:-1][~sloped], steps[~sloped]):
        jumps[float(value)] = jumps.get(float(value), 0.0) + float(step)
    return knots, slopes, sorted(jumps.items())


def rank_steps(entry: dict[str, Any]) -> list[tuple[str, Any]]:
    """The float32 ops of the in-graph percentile rank of ``entry``, in order, as ``(op, constant)``.

    Ops: ``("Clip", (lo, hi))``, ``("Sub", c)``, ``("LeakyRelu", alpha)``, ``("Mul", c)``,
    ``("Add", c)``, ``("Step", (value, height))`` (``+ height * (x >= value)`` on the input ``x``),
    then a final ``Clip(0, 1)`` (not listed). The closing ``Mul`` and ``Add`` are fitted to the
    chain's float32 values at both ends (with the smallest margin of a few float32 ulps that
    works), so that the rank is exactly 0 below the minimum and exactly 1 at and above the
    maximum in float32 arithmetic, as :func:`percentile_rank`.
    """
    knots, slopes, jumps = rank_pieces(entry)
    chain: list[tuple[str, Any]] = [("Clip", (knots[0], knots[-1]))]
    if not len(slopes):  # a single distinct knot: only steps, on 0 that keeps NaN (Clip propagates it)
        return [*chain, ("Sub", knots[0]), *(("Step", jump) for jump in jumps)]
    origin = 0.0
    for j in range(1, len(knots) - 1):  # one kink per interior knot: slope a_j-1 below, 1 above, rescaled
        chain += [("Sub", knots[j] - origin), ("LeakyRelu", slopes[j - 1] / slopes[j])]
        origin = knots[j]
    base = len(knots) - 2  # the last segment's lower knot: current = (g(x) - g(u_base)) / a_last
    if knots[base] != origin:
        chain.append(("Sub", knots[base] - origin))
    steps = [("Step", jump) for jump in jumps]
    # the affine map to the rank through the chain's own float32 values at both ends (x below the
    # minimum is clipped to it, x above the maximum to that): exactly 0 and 1 there, after the Clip
    low_end = np.nextafter(np.float32(knots[0]), np.float32(-np.inf))  # below the minimum's steps
    ends = np.asarray([low_end, knots[-1]], np.float32)
    low, high = _evaluate(chain, ends).astype(np.float64)
    continuous = 1.0 - sum(height for _, height in jumps)
    for k in range(24):
        margin = k and float(np.finfo(np.float32).eps) * 2.0 ** (k - 1)
        scale = (continuous + 2 * margin) / (high - low)
        affine = [("Mul", scale), *([("Add", -margin - scale * low)] if margin or low else [])]
        rank_low, rank_high = _evaluate([*chain, *affine, *steps], ends)
        if rank_low <= 0.0 and rank_high >= 1.0:
            break
    return [*chain, *affine, *steps]


def _evaluate(steps: list[tuple[str, Any]], x: np.ndarray) -> np.ndarray:
    """:func:`rank_steps` ``steps`` on float32 ``x`` in numpy, op by op in float32 (before the final Clip)."""
    current = x
    for op, constant in steps:
        if op == "Clip":
            current = np.clip(current, np.float32(constant[0]), np.float32(constant[1]))
        elif op == "Sub":
            current = current - np.float32(constant)
        elif op == "LeakyRelu":
            current = np.where(current < 0, current * np.float32(constant), current)
        elif op == "Mul":
            current = current * np.float32(constant)
        elif op == "Add":
            current = current + np.float32(constant)
        else:
            value, height = constant
            current = current + (x >= np.float32(value)).astype(np.float32) * np.float32(height)
    return current


def _rank(builder: GraphBuilder, score: ir.Value, entry: dict[str, Any], name: str) -> ir.Value:
    """The percentile rank of ``score`` (N x 1 x H x W float32) as a new value named ``name``:
    :func:`rank_steps` as graph ops, one pass over the map each, with scalar constants."""
    current = score
    for op, constant in rank_steps(entry):
        if op == "Clip":
            current = builder.op("Clip", [current, builder.const(constant[0]), builder.const(constant[1])])
        elif op == "LeakyRelu":
            current = builder.op("LeakyRelu", [current], {"alpha": float(constant)})
        elif op == "Step":
            passed = builder.op("Cast", [builder.op("GreaterOrEqual", [score, builder.const(constant[0])])],
                                {"to": int(ir.DataType.FLOAT)})
            current = builder.op("Add", [current, builder.op("Mul", [passed, builder.const(constant[1])])])
        else:
            current = builder.op(op, [current, builder.const(constant)])
    rank = builder.op("Clip", [current, builder.const(0.0), builder.const(1.0)], names=[builder.claim(name)])
    rank.dtype, rank.shape = ir.DataType.FLOAT, score.shape
    return rank


def _mask(builder: GraphBuilder, graph: ir.Graph, rank: ir.Value, default: float) -> ir.Value:
    """``uint8(rank >= ood_threshold)`` with the optional scalar input ``ood_threshold``."""
    threshold = ir.Value(name=builder.claim(OOD_THRESHOLD_INPUT),
                         const_value=ir.tensor(np.asarray(default, np.float32)))
    threshold.shape, threshold.dtype = ir.Shape([]), ir.DataType.FLOAT
    graph.register_initializer(threshold)
    graph.inputs.append(threshold)
    passed = builder.op("GreaterOrEqual", [rank, threshold])
    mask = builder.op("Cast", [passed], {"to": int(ir.DataType.UINT8)}, names=[builder.claim(OOD_MASK)])
    mask.dtype, mask.shape = ir.DataType.UINT8, rank.shape
    return mask

