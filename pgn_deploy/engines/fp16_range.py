"""How close the network's intermediates come to the float16 limit (65504) on real images.

Every float tensor the network part of a grafted model computes (the part that runs in half
precision after :func:`pgn_deploy.engines.precision.convert_model`; the PGN subgraph stays
float32 and is not measured) is exposed as an output of a sub-model cut out with
``onnx.utils.Extractor`` and run with ONNX Runtime on the CPU over calibration images. The
margin of a tensor is ``65504 / max |x|`` over all images: below 1 it overflows to inf in
float16. On an fp32 model the values are float32 (a prediction for the conversion); on an
fp16 model they are the fp16 values themselves (an overflow shows as inf, margin 0).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from pgn_deploy.contract import Metadata, UnsupportedModelError
from pgn_deploy.engines.subgraph import split_nodes

FP16_MAX = float(np.finfo(np.float16).max)
DEFAULT_TENSORS_PER_RUN = 64


@dataclasses.dataclass(frozen=True)
class TensorRange:
    """Largest magnitude of one network tensor over the calibration images."""

    tensor: str
    node: str
    op_type: str
    max_abs: float

    @property
    def margin(self) -> float:
        """``65504 / max |x|`` (inf for an all-zero tensor, 0 for inf/NaN values)."""
        if not math.isfinite(self.max_abs):
            return 0.0
        return math.inf if self.max_abs == 0 else FP16_MAX / self.max_abs

    def to_json(self) -> dict[str, Any]:
        """The fields plus ``margin`` (``65504 / max_abs``, may be ``inf``), as a dict."""
        return {**dataclasses.asdict(self), "margin": self.margin}


def network_float_tensors(inferred: Any, meta: Metadata) -> list[tuple[str, str, str]]:
    """``(tensor, node name, op type)`` for every floating-point output of a network node of
    the shape-inferred model ``inferred``."""
    import onnx

    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)}
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
              onnx.TensorProto.DOUBLE}
    network, _ = split_nodes(inferred, meta)
    return [(out, node.name, node.op_type) for node in network for out in node.output
            if out and types.get(out) in floats]


def measure_ranges(model: Any, meta: Metadata, batches: Iterable[np.ndarray],
                   tensors_per_run: int = DEFAULT_TENSORS_PER_RUN) -> list[TensorRange]:
    """Max |value| of every network float tensor over ``batches`` (preprocessed model inputs
    for ``meta.input.name``), tightest margin first. Tensors are fetched ``tensors_per_run``
    at a time to bound memory."""
    import onnx.utils
    import onnxruntime as ort

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    targets = network_float_tensors(inferred, meta)
    if not targets:
        raise UnsupportedModelError("the model's network has no floating-point tensors to measure")
    batches = list(batches)
    peaks = dict.fromkeys((name for name, _, _ in targets), 0.0)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    for start in range(0, len(targets), tensors_per_run):
        names = [name for name, _, _ in targets[start:start + tensors_per_run]]
        part = onnx.utils.Extractor(inferred).extract_model([meta.input.name], names)
        session = ort.InferenceSession(part.SerializeToString(), options, providers=["CPUExecutionProvider"])
        for batch in batches:
            for name, value in zip(names, session.run(names, {meta.input.name: batch})):
                peak = float(np.max(np.abs(value.astype(np.float32)), initial=0.0))
                peaks[name] = peak if not math.isfinite(peak) else max(peaks[name], peak)
    ranges = [TensorRange(name, node, op, peaks[name]) for name, node, op in targets]
    return sorted(ranges, key=lambda r: r.margin)
