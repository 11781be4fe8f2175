"""``pgn-lint``: will this grafted model build and run, checked on the CPU before a GPU is near.

Checks (each finding is an ``error``, a ``warning`` or an ``info``; any error fails the lint):

* ``opset``: the default-domain opset within what the target parses, no custom domains
  (``trt``: TensorRT 10.15's ONNX parser, opsets 9-24, see :mod:`pgn_deploy.engines.trt_ops`);
* ``op``: every node's operator is in the parser's support table with a supported input type,
  and the restrictions the parser documents for the ops segmentation networks use (Resize
  modes, pooling rank and dilations, constant ``axes``);
* ``dtype``: tensor types the target lacks (uint16/32/64, int16, strings, complex), double
  (cast down by TensorRT), uint8 away from the graph's edges, int64 outputs;
* ``shape``: graph inputs with a known rank and a static channel count, outputs with a known
  rank and the input's batch dimension, ops with data-dependent output shapes;
* ``pgn``: the PGN subgraph and the PGN outputs are float32 (also in fp16/bf16/int8/fp8 models);
* ``qdq`` (target ``trt``, models with Q/DQ nodes): what TensorRT's explicit quantization needs:
  every QuantizeLinear feeds only DequantizeLinear nodes and every DequantizeLinear reads a
  QuantizeLinear or a constant; zero points are 0 (TensorRT quantizes symmetrically); scales
  are positive and finite; activation scales are per tensor; a Conv/ConvTranspose/Gemm/MatMul
  weight's scales are per channel on the output-channel axis (per tensor: a warning); a Conv
  whose input and weight do not both come through Q/DQ runs in float (a warning); no Q/DQ
  node inside the PGN subgraph;
* ``session`` (target ``ort``): ONNX Runtime creates a session for the model;
* ``fp16-range`` (with calibration images): the float16 margin of every network tensor
  (:mod:`pgn_deploy.engines.fp16_range`).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pgn_deploy.contract import BadInputError, Metadata, PGNError, load_onnx, read_metadata
from pgn_deploy.engines import trt_ops
from pgn_deploy.engines.feeds import image_batches, input_dtype
from pgn_deploy.engines.fp16_range import FP16_MAX, TensorRange, measure_ranges
from pgn_deploy.engines.subgraph import half_precision_in_pgn, split_nodes

TARGETS = ("trt", "ort")
DEFAULT_WARN_MARGIN = 4.0
REPORTED_RANGES = 20


@dataclasses.dataclass(frozen=True)
class Finding:
    """One lint result: ``severity`` (error/warning/info), the ``check`` that made it, a message."""

    severity: str
    check: str
    message: str

    def to_json(self) -> dict[str, str]:
        """``{"severity": ..., "check": ..., "message": ...}``, all strings."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class LintReport:
    """Everything :func:`lint_model` found; ``ranges``: fp16 margins, tightest first (with --calib)."""

    model: str
    target: str
    table: str
    findings: list[Finding]
    ranges: list[TensorRange] | None = None

    @property
    def errors(self) -> list[Finding]:
        """The findings of severity ``error``, in the order they were found."""
        return [f for f in self.findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        """True when no finding is an error (warnings and infos do not fail the lint)."""
        return not self.errors

    def to_text(self) -> str:
        """What ``pgn-lint`` prints: one line per finding and the verdict."""
        lines = [f"{self.model}: checked against {self.table}"]
        lines += [f"  {f.severity:7s} [{f.check}] {f.message}" for f in self.findings]
        lines.append(f"{len(self.errors)} error(s): {'FAIL' if self.errors else 'OK'}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: model, target, table, ``ok``, ``findings`` and, when ranges were measured,
        ``fp16_ranges`` (the tensor count and the ``REPORTED_RANGES`` tightest margins)."""
        data: dict[str, Any] = {
            "model": self.model, "target": self.target, "table": self.table, "ok": self.ok,
            "findings": [f.to_json() for f in self.findings],
        }
        if self.ranges is not None:
            data["fp16_ranges"] = {
                "tensors": len(self.ranges),
                "tightest": [r.to_json() for r in self.ranges[:REPORTED_RANGES]],
            }
        return data


# --------------------------------------------------------------------------- graph walking
def iter_nodes(graph: Any) -> Iterator[Any]:
    """Every node of ``graph`` and of its subgraphs (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from iter_nodes(attr.g)
            for sub in attr.graphs:
                yield from iter_nodes(sub)


def _node_label(node: Any) -> str:
    return f"{node.op_type} node {node.name!r}" if node.name else f"an unnamed {node.op_type} node"


def _constants(model: Any) -> set[str]:
    """Tensors whose value is known when the engine is built (initializers, Constant outputs)."""
    names = {init.name for init in model.graph.initializer}
    names.update(out for node in iter_nodes(model.graph) if node.op_type == "Constant" for out in node.output)
    return names


def _infer(model: Any) -> Any:
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except onnx.shape_inference.InferenceError as exc:
        raise BadInputError(f"ONNX shape inference fails on the model: {str(exc).splitlines()[0]}") from None


def _value_types(inferred: Any) -> dict[str, Any]:
    graph = inferred.graph
    values = {v.name: v.type.tensor_type for v in (*graph.value_info, *graph.input, *graph.output)}
    for init in graph.initializer:
        values.setdefault(init.name, init)
    return values


def _elem_type(entry: Any) -> int | None:
    if entry is None:
        return None
    return entry.data_type if hasattr(entry, "data_type") else (entry.elem_type or None)


# --------------------------------------------------------------------------- checks
def check_opsets(model: Any, target: str) -> list[Finding]:
    """The default-domain opset and the operator domains the nodes use."""
    found = []
    versions = {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}
    opset = versions.get("ai.onnx")
    if target == "trt" and opset is not None and not trt_ops.OPSET_MIN <= opset <= trt_ops.OPSET_MAX:
        found.append(Finding("error", "opset", (
            f"opset {opset} is outside what TensorRT {trt_ops.TABLE_TENSORRT_VERSION}'s ONNX parser reads "
            f"({trt_ops.OPSET_MIN}-{trt_ops.OPSET_MAX}); re-export with --opset {trt_ops.OPSET_MAX} or lower")))
    domains = sorted({node.domain for node in iter_nodes(model.graph) if node.domain not in ("", "ai.onnx")})
    for domain in domains:
        ops = sorted({n.op_type for n in iter_nodes(model.graph) if n.domain == domain})
        severity = "error" if target == "trt" else "warning"
        found.append(Finding(severity, "opset", (
            f"custom domain {domain!r} ({', '.join(ops)}): "
            + ("TensorRT needs a plugin for each of these ops" if target == "trt"
               else "ONNX Runtime needs a custom-op library for these unless it ships them"))))
    return found


def _data_input(node: Any) -> str | None:
    """The input whose type the parser's table describes (Where: the value, not the condition)."""
    index = 1 if node.op_type == "Where" else 0
    if node.op_type in ("Constant", "ConstantOfShape"):
        return node.output[0] if node.output else None
    return node.input[index] if len(node.input) > index and node.input[index] else None


def check_ops(model: Any, types: dict[str, Any]) -> list[Finding]:
    """Every node against TensorRT's ONNX-parser table and its documented restrictions."""
    found = []
    constants = _constants(model)
    reported_types: set[tuple[str, str]] = set()
    for node in iter_nodes(model.graph):
        if node.domain not in ("", "ai.onnx"):
            continue  # reported by check_opsets
        label = _node_label(node)
        supported = trt_ops.SUPPORTED.get(node.op_type)
        if supported is None:
            status = "lists as unsupported" if node.op_type in trt_ops.UNSUPPORTED else "does not know"
            found.append(Finding("error", "op", (
                f"{label}: TensorRT {trt_ops.TABLE_TENSORRT_VERSION}'s ONNX parser {status} {node.op_type}")))
            continue
        data = _data_input(node)
        trt_type = trt_ops.ONNX_TO_TRT_TYPE.get(_elem_type(types.get(data)) or -1) if data else None
        if (trt_type and trt_type != "DOUBLE" and trt_type not in supported
                and (node.op_type, trt_type) not in reported_types):
            reported_types.add((node.op_type, trt_type))
            found.append(Finding("error", "op", (
                f"{label}: TensorRT runs {node.op_type} on {', '.join(sorted(supported))}, not {trt_type}")))
        found += _restrictions(node, label, constants)
    return found


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for attr in node.attribute:
        if attr.name == name:
            value = onnx.helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _restrictions(node: Any, label: str, constants: set[str]) -> list[Finding]:
    """The parser restrictions that segmentation graphs run into."""
    op, found = node.op_type, []
    if op == "Resize":
        checks = [("mode", "nearest", trt_ops.RESIZE_MODES),
                  ("coordinate_transformation_mode", "half_pixel", trt_ops.RESIZE_COORDINATE_MODES),
                  ("nearest_mode", "round_prefer_floor", trt_ops.RESIZE_NEAREST_MODES)]
        for name, default, allowed in checks:
            value = _attr(node, name, default)
            if value not in allowed:
                found.append(Finding("error", "op", f"{label}: Resize {name}={value!r} is not supported "
                                                    f"by TensorRT (supported: {', '.join(sorted(allowed))})"))
        if _attr(node, "antialias", 0):
            found.append(Finding("error", "op", f"{label}: Resize antialias is not supported by TensorRT"))
        if _attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
            found.append(Finding("error", "op",
                                 f"{label}: Resize keep_aspect_ratio_policy must be 'stretch' for TensorRT"))
    if op in ("AveragePool", "MaxPool", "LpPool"):
        kernel = _attr(node, "kernel_shape", [])
        if len(kernel) not in (2, 3):
            found.append(Finding("error", "op", f"{label}: TensorRT pools in 2D or 3D only (kernel {list(kernel)})"))
        if any(d != 1 for d in _attr(node, "dilations", [])):
            found.append(Finding("error", "op", f"{label}: TensorRT needs pooling dilations of 1"))
    if op == "MaxPool" and len([o for o in node.output if o]) > 1:
        found.append(Finding("error", "op", f"{label}: TensorRT does not return MaxPool's Indices output"))
    if op in trt_ops.CONSTANT_AXES_OPS and len(node.input) > 1 and node.input[1] and node.input[1] not in constants:
        found.append(Finding("error", "op", f"{label}: TensorRT needs {op}'s axes input "
                                            f"{node.input[1]!r} to be a constant (an initializer)"))
    if op in trt_ops.DATA_DEPENDENT_SHAPE_OPS:
        found.append(Finding("warning", "shape", f"{label}: {op} has a data-dependent output shape "
                                                 "(slower in TensorRT, and no static shape for Triton)"))
    return found


def check_dtypes(model: Any, types: dict[str, Any], target: str) -> list[Finding]:
    """Tensor types the target lacks or handles lossily."""
    import onnx

    found = []
    edges = {v.name for v in (*model.graph.input, *model.graph.output)}
    by_type: dict[str, list[str]] = {}
    for name, entry in types.items():
        elem = _elem_type(entry)
        if not elem:
            continue
        type_name = onnx.TensorProto.DataType.Name(elem)
        if target == "trt" and elem not in trt_ops.ONNX_TO_TRT_TYPE:
            by_type.setdefault(type_name, []).append(name)
        elif elem == onnx.TensorProto.DOUBLE:
            by_type.setdefault("DOUBLE", []).append(name)
        elif target == "trt" and elem == onnx.TensorProto.UINT8 and name not in edges:
            by_type.setdefault("UINT8 (inside the graph)", []).append(name)
    for type_name, names in sorted(by_type.items()):
        shown = ", ".join(sorted(names)[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        if type_name == "DOUBLE":
            found.append(Finding("warning", "dtype", f"double tensors ({shown}): TensorRT casts them to float32"))
        else:
            found.append(Finding("error", "dtype", f"{type_name} tensors ({shown}): TensorRT has no such type"))
    for output in model.graph.output:
        if output.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            found.append(Finding("warning", "dtype", (
                f"output {output.name!r} is int64: 8 bytes per pixel to copy; the pgn_deploy contract's "
                "pred is int32")))
    return found


def _dims(value: Any) -> list[int | str | None] | None:
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]


def check_shapes(model: Any, inferred: Any, meta: Metadata) -> list[Finding]:
    """Ranks, the channel count and the batch dimension of inputs and outputs."""
    found = []
    initializers = {init.name for init in model.graph.initializer}
    image_dims = None
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = _dims(value)
        if dims is None:
            found.append(Finding("error", "shape", f"input {value.name!r} has no declared shape (rank unknown)"))
            continue
        if value.name == meta.input.name:
            image_dims = dims
            nhwc = meta.input.layout == "NHWC"  # uint8 camera frames (--input-format)
            if len(dims) != 4:
                found.append(Finding("error", "shape",
                                     f"image input {value.name!r} has rank {len(dims)}, expected N x C x H x W"))
            elif not isinstance(dims[3 if nhwc else 1], int):
                found.append(Finding("error", "shape", (
                    f"image input {value.name!r} has a dynamic channel count; convolutions need it fixed")))
            elif any(not isinstance(d, int) for d in (dims[1:3] if nhwc else dims[2:])) and not meta.input.size:
                found.append(Finding("info", "shape", (
                    f"image input {value.name!r} has a dynamic height/width and the metadata no size: "
                    f"pgn-build needs --shapes {value.name}:MIN/OPT/MAX")))
    batch = image_dims[0] if image_dims else None
    for value in inferred.graph.output:
        dims = _dims(value)
        if dims is None:
            found.append(Finding("error", "shape", f"output {value.name!r} has no known rank"))
        elif dims and batch is not None and not isinstance(batch, int) and isinstance(dims[0], int):
            found.append(Finding("error", "shape", (
                f"output {value.name!r} has a fixed first dimension {dims[0]} while the input's batch "
                "is dynamic (a Reshape that hard-codes the batch?)")))
    return found


def check_pgn_float32(model: Any, meta: Metadata) -> list[Finding]:
    """The PGN subgraph must compute and return float32, whatever the network's precision."""
    try:
        wrong = half_precision_in_pgn(model, meta)
    except PGNError as exc:
        return [Finding("error", "pgn", str(exc))]
    if not wrong:
        return [Finding("info", "pgn", f"the PGN subgraph is float32 (network precision {meta.precision})")]
    shown = ", ".join(wrong[:5]) + (f" and {len(wrong) - 5} more" if len(wrong) > 5 else "")
    return [Finding("error", "pgn",
                    f"PGN tensors in half precision: {shown}; convert with pgn_deploy.engines.precision")]


QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1, "Gemm": 0, "MatMul": 1}
"""Op type -> the axis of its (second input) weight that holds the output channels."""


def _constant_arrays(model: Any) -> dict[str, Any]:
    """Initializers and Constant-node values as numpy arrays, by tensor name."""
    from onnx import numpy_helper

    arrays = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    arrays[node.output[0]] = numpy_helper.to_array(attr.t)
    return arrays


def _qdq_axis(node: Any) -> int:
    return next((attr.i for attr in node.attribute if attr.name == "axis"), 1)


def _check_qdq_parameters(node: Any, constants: dict[str, Any], weight_axis: tuple[int, int] | None) -> list[Finding]:
    """Scale and zero point of one Q or DQ node; ``weight_axis``: (output-channel axis, channels)
    when the node quantizes a weight."""
    import numpy as np

    label = _node_label(node)
    scale = constants.get(node.input[1]) if len(node.input) > 1 else None
    if scale is None:
        return [Finding("error", "qdq", f"{label}: the scale is not a constant (TensorRT needs it at build time)")]
    found = []
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        found.append(Finding("error", "qdq", f"{label}: scales must be positive and finite"))
    zero = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if zero is not None and np.any(zero.astype(np.float64) != 0):
        found.append(Finding("error", "qdq", f"{label}: non-zero zero point; TensorRT quantizes symmetrically"))
    if weight_axis is None:
        if scale.size != 1:
            found.append(Finding("error", "qdq", f"{label}: activation scales must be per tensor, got {scale.size}"))
        return found
    axis, channels = weight_axis
    if scale.size == 1:
        found.append(Finding("warning", "qdq", f"{label}: per-tensor weight scale; per-channel (axis {axis}) is "
                                               "what TensorRT and ModelOpt use for accuracy"))
    elif _qdq_axis(node) != axis or scale.size != channels:
        found.append(Finding("error", "qdq", (
            f"{label}: weight scales on axis {_qdq_axis(node)} ({scale.size} values); TensorRT needs them per "
            f"output channel (axis {axis}, {channels} values)")))
    return found


def check_quantization(model: Any, meta: Metadata) -> list[Finding]:
    """TensorRT's explicit-quantization rules for a model with Q/DQ nodes (module doc)."""
    nodes = list(model.graph.node)
    qdq = [node for node in nodes if node.op_type in QDQ_OPS]
    if not qdq:
        return []
    made_by = {out: node for node in nodes for out in node.output}
    readers: dict[str, list[Any]] = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    constants = _constant_arrays(model)
    weights: dict[str, tuple[int, int]] = {}  # DQ output -> (axis, channels) for weight DQs
    for node in nodes:
        axis = WEIGHT_AXIS.get(node.op_type)
        if axis is None or len(node.input) < 2:
            continue
        dq = made_by.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        source = made_by.get(dq.input[0])
        raw = constants.get(source.input[0] if source is not None and source.op_type == "QuantizeLinear"
                            else dq.input[0])
        if raw is not None and raw.ndim > axis:
            weights[dq.output[0]] = (axis, raw.shape[axis])
    found = []
    for node in qdq:
        label = _node_label(node)
        if node.op_type == "QuantizeLinear":
            bad = [r for r in readers.get(node.output[0], []) if r.op_type != "DequantizeLinear"]
            if bad:
                found.append(Finding("error", "qdq", f"{label} feeds {bad[0].op_type} directly; TensorRT needs "
                                                     "every QuantizeLinear followed by DequantizeLinear"))
            dq_out = [r.output[0] for r in readers.get(node.output[0], []) if r.op_type == "DequantizeLinear"]
            weight = next((weights[o] for o in dq_out if o in weights), None)
        else:
            source = made_by.get(node.input[0])
            if source is not None and source.op_type != "QuantizeLinear" and node.input[0] not in constants:
                found.append(Finding("error", "qdq", f"{label} reads {source.op_type} output; TensorRT needs a "
                                                     "QuantizeLinear or a constant before every DequantizeLinear"))
            weight = weights.get(node.output[0])
        found += _check_qdq_parameters(node, constants, weight)
    for node in nodes:
        if node.op_type != "Conv":
            continue
        sides = [made_by.get(name) for name in node.input[:2]]
        quantized = [side is not None and side.op_type == "DequantizeLinear" for side in sides]
        if any(quantized) and not all(quantized):
            which = "input" if not quantized[0] else "weight"
            found.append(Finding("warning", "qdq", f"{_node_label(node)}: its {which} has no Q/DQ; TensorRT runs "
                                                   "it in float (fuse Q/DQ on both input and weight for INT8)"))
    _, pgn = split_nodes(model, meta)
    inside = [node.name or node.op_type for node in pgn if node.op_type in QDQ_OPS]
    if inside:
        found.append(Finding("error", "qdq", f"{len(inside)} Q/DQ node(s) inside the PGN subgraph "
                                             f"({', '.join(inside[:3])}); requantize with pgn_deploy.engines.quantize"))
    if not any(f.severity == "error" for f in found):
        convs = sum(1 for node in nodes if node.op_type == "Conv"
                    and all(made_by.get(n) is not None and made_by[n].op_type == "DequantizeLinear"
                            for n in node.input[:2]))
        found.append(Finding("info", "qdq", (
            f"{len(qdq)} Q/DQ nodes fit TensorRT's explicit quantization ({convs} Conv node(s) in "
            f"{meta.precision}; zero points 0, per-channel weight scales); the PGN subgraph has none")))
    return found


def check_ort_session(model: Any) -> list[Finding]:
    """ONNX Runtime (CPU) loads the model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind exception kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [Finding("error", "session", f"ONNX Runtime cannot load the model: {first}")]
    return []


def check_fp16_ranges(ranges: list[TensorRange], precision: str, warn_margin: float) -> list[Finding]:
    """Findings for tensors that overflow float16 or come within ``warn_margin`` of it."""
    if precision == "bf16":
        return [Finding("info", "fp16-range", "the network is bf16 (float32's range): no overflow margin to check")]
    found = []
    for r in ranges:
        where = f"{r.tensor!r} ({r.op_type} node {r.node!r}): max |x| = {r.max_abs:.6g}"
        if r.margin < 1:
            found.append(Finding("error", "fp16-range", f"{where} overflows float16 (limit {FP16_MAX:g})"))
        elif r.margin < warn_margin:
            found.append(Finding("warning", "fp16-range", f"{where} is within {r.margin:.2f}x of the float16 limit"))
    if not found and ranges:
        tightest = ranges[0]
        found.append(Finding("info", "fp16-range", (
            f"every network tensor fits float16; tightest margin {tightest.margin:.3g}x at {tightest.tensor!r}")))
    return found


# --------------------------------------------------------------------------- entry point
def lint_model(
    model_path: str | os.PathLike[str],
    target: str = "trt",
    calib: Sequence[str | os.PathLike[str]] | None = None,
    max_images: int | None = None,
    warn_margin: float = DEFAULT_WARN_MARGIN,
) -> LintReport:
    """Lint the grafted model at ``model_path`` for ``target`` (``trt`` or ``ort``).

    ``calib``: image files or folders; with them, the float16 margin of every network tensor
    is measured on up to ``max_images`` images and a tensor whose margin is below 1 is an
    error, below ``warn_margin`` a warning.
    """
    if target not in TARGETS:
        raise BadInputError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    if warn_margin < 1:
        raise BadInputError(f"warn_margin must be >= 1, got {warn_margin}")
    model = load_onnx(model_path)
    meta = read_metadata(model)
    inferred = _infer(model)
    types = _value_types(inferred)
    findings = check_opsets(model, target)
    if target == "trt":
        findings += check_ops(model, types)
        findings += check_quantization(model, meta)
    else:
        findings += check_ort_session(model)
    findings += check_dtypes(model, types, target)
    findings += check_shapes(model, inferred, meta)
    findings += check_pgn_float32(model, meta)
    ranges = None
    if calib and meta.precision in ("int8", "fp8"):
        findings.append(Finding("info", "fp16-range", f"the network is {meta.precision} (Q/DQ): no float16 "
                                                      "margin to measure"))
    elif calib:
        batches = image_batches(meta.input, input_dtype(model, meta.input.name), calib, max_images)
        ranges = measure_ranges(model, meta, batches)
        findings += check_fp16_ranges(ranges, meta.precision, warn_margin)
    table = (f"TensorRT {trt_ops.TABLE_TENSORRT_VERSION} ONNX parser (opsets {trt_ops.OPSET_MIN}-{trt_ops.OPSET_MAX})"
             if target == "trt" else "ONNX Runtime CPU session")
    return LintReport(model=str(Path(model_path)), target=target, table=table, findings=findings, ranges=ranges)
