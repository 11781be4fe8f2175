"""INT8 / FP8 copies of a grafted model: the network in Q/DQ, the PGN subgraph and every map float32.

TensorRT 10/11 builds INT8 and FP8 only from explicit quantization: QuantizeLinear /
DequantizeLinear (Q/DQ) pairs in the ONNX file. So, as with fp16
(:mod:`pgn_deploy.engines.precision`), the precision is decided in the model and one file serves
ONNX Runtime and TensorRT.

The quantizer is NVIDIA ModelOpt's ``modelopt.onnx.quantization.quantize``, calibrated on the
CPU through ONNX Runtime (``calibration_eps=["cpu"]``) with ``high_precision_dtype="fp32"``
(what is not quantized stays float32, not fp16). What stays out of quantization, each decided
by measurement on the demo model (``benchmarks/int8_fidelity.py``, results in
``benchmarks/results/int8_fidelity.md``):

* the **PGN subgraph** (:func:`pgn_deploy.engines.subgraph.pgn_node_names`): excluded by exact
  node name. Quantized with the rest (a naive full quantization), the maps lose up to 12 % in
  median relative error;
* the **tensors PGN reads**: ModelOpt puts a Q/DQ pair on the feature tensor ``psi`` for the
  quantized classifier conv, and every consumer of ``psi``, the PGN norms included, then reads
  the int8-rounded copy. :func:`reconnect_pgn_inputs` points the PGN nodes back at the float32
  tensor, so the norms see the network's own ``psi``;
* the **classifier conv** (optional, ``keep_head``): kept float32, the logits (softmax, the PGN
  class factor, ``pred``) come from float32 weights on the float32 ``psi``;
* **weights that cannot be quantized**: a Conv/MatMul/Gemm weight with a non-finite value or an
  output channel of all zeros (a per-channel scale of 0, which TensorRT rejects) keeps its node
  float32 (:func:`unquantizable_nodes`).

Calibration images are read and preprocessed exactly as the runtime does
(:func:`pgn_deploy.engines.feeds.image_batches`) and must share one size. The metadata's
``precision`` becomes ``int8``/``fp8`` and its ``quantization`` entry records the method, the
images (count and a sha256 over their bytes, in order), what was excluded and the tool version.

FP8 goes through the same path (``quantize_mode="fp8"``); ONNX Runtime's CPU provider cannot run
FP8 Q/DQ, so an FP8 model was never executed here (calibration itself runs in float32).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pgn_deploy.contract import (
    BadInputError,
    PGNError,
    UnsupportedModelError,
    check_output_path,
    first_line,
    load_onnx,
    read_metadata,
    require,
    save_onnx,
    write_metadata,
)
from pgn_deploy.engines.precision import QUANT_PRECISIONS, name_all_nodes, quiet_modelopt
from pgn_deploy.engines.subgraph import pgn_node_names, split_nodes

CALIBRATION_METHODS = ("entropy", "max")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
WEIGHT_OPS = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}
"""Op type -> index of its weight input (the constant ModelOpt quantizes per channel)."""


@dataclasses.dataclass(frozen=True)
class CalibrationSet:
    """Preprocessed calibration images: ``data`` is float32 N x C x H x W (one size for all)."""

    data: np.ndarray
    files: list[str]
    sha256: str

    def to_json(self) -> dict[str, Any]:
        """What the metadata records: the image count and the sha256 of their bytes."""
        return {"images": len(self.files), "sha256": self.sha256}


def check_quant_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`QUANT_PRECISIONS`, else a BadInputError."""
    if precision not in QUANT_PRECISIONS:
        raise BadInputError(f"unknown quantized precision {precision!r}; choose from {', '.join(QUANT_PRECISIONS)}")
    return precision


def check_calibration_method(method: str) -> str:
    """``method`` if it is one of :data:`CALIBRATION_METHODS`, else a BadInputError."""
    if method not in CALIBRATION_METHODS:
        raise BadInputError(f"unknown calibration method {method!r}; choose from {', '.join(CALIBRATION_METHODS)}")
    return method


def read_calibration(meta: Any, paths: Sequence[str | os.PathLike[str]],
                     max_images: int | None = None) -> CalibrationSet:
    """The calibration images in ``paths`` (files or folders, sorted, at most ``max_images``),
    preprocessed with the model's own preprocessing (``meta.input``).

    No image, an unreadable image, or images of different sizes raise one-line BadInputErrors.
    ``sha256`` digests the files' bytes in order (with their sizes), so the same images give the
    same hash wherever they lie.
    """
    from pgn_deploy.engines.feeds import image_batches
    from pgn_deploy.runtime.sources import collect_inputs

    if not paths:
        raise BadInputError("quantization needs calibration images (--calib IMAGES)")
    batches = image_batches(meta.input, np.dtype(np.float32), paths, max_images)
    files = [str(item.path) for item in collect_inputs(paths) if item.kind == "image"][:len(batches)]
    sizes = sorted({tuple(batch.shape[2:]) for batch in batches})
    if len(sizes) > 1:
        shown = ", ".join("x".join(map(str, size)) for size in sizes[:3])
        raise BadInputError(f"calibration images must share one size after preprocessing; found {shown}")
    digest = hashlib.sha256()
    for path in files:
        content = Path(path).read_bytes()
        digest.update(len(content).to_bytes(8, "little"))
        digest.update(content)
    return CalibrationSet(np.concatenate(batches), files, digest.hexdigest())


def unquantizable_nodes(model: Any, nodes: Sequence[Any]) -> dict[str, str]:
    """Node name -> reason, for each of ``nodes`` whose constant weight cannot be quantized.

    A weight (an initializer at :data:`WEIGHT_OPS`' input index) with a NaN or inf cannot be
    scaled; one with an output channel that is all zeros gets a per-channel scale of 0, which
    the ONNX and TensorRT Q/DQ definitions do not allow.
    """
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    found = {}
    for node in nodes:
        index = WEIGHT_OPS.get(node.op_type)
        if index is None or len(node.input) <= index or node.input[index] not in initializers:
            continue
        weight = numpy_helper.to_array(initializers[node.input[index]])
        if weight.dtype.kind != "f" or weight.size == 0:
            continue
        if not np.isfinite(weight).all():
            found[node.name] = "non-finite weight"
            continue
        axis = 1 if node.op_type in ("ConvTranspose", "MatMul", "Gemm") else 0
        channels = np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1) if weight.ndim > 1 else weight[None]
        if (np.abs(channels).max(axis=1) == 0).any():
            found[node.name] = "an all-zero output channel (scale 0)"
    return found


def reconnect_pgn_inputs(model: Any, pgn_nodes: set[str]) -> int:
    """Point every input of a PGN-subgraph node that reads a Q -> DQ copy of a float tensor back
    at that float tensor (in place). Returns how many inputs were reconnected.

    ModelOpt quantizes a tensor once for all its consumers; the PGN nodes must read the
    network's float32 values (the features ``psi``, the logits), not their int8 rounding.
    """
    made_by = {out: node for node in model.graph.node for out in node.output}
    changed = 0
    for node in model.graph.node:
        if node.name not in pgn_nodes:
            continue
        for i, name in enumerate(node.input):
            dq = made_by.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = made_by.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                continue
            node.input[i] = q.input[0]
            changed += 1
    return changed


def _remove_unused_qdq(model: Any) -> None:
    """Drop Q/DQ nodes whose outputs nobody reads any more (after :func:`reconnect_pgn_inputs`)."""
    graph = model.graph
    while True:
        read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [node for node in graph.node if node.op_type in QDQ_OPS and not any(o in read for o in node.output)]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


def qdq_in_pgn(model: Any, meta: Any) -> list[str]:
    """Names of the Q/DQ nodes inside the PGN subgraph (empty for a correct quantized model)."""
    _, added = split_nodes(model, meta)
    return [node.name or node.op_type for node in added if node.op_type in QDQ_OPS]


def _modelopt_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nvidia-modelopt")
    except PackageNotFoundError:
        return "unknown"


def quantize_graph(model: Any, precision: str, calibration: np.ndarray, input_name: str, method: str,
                   exclude: Sequence[str]) -> Any:
    """ModelOpt's Q/DQ quantization of ``model`` (a copy), calibrated on the CPU with ``calibration``
    (float32 N x C x H x W for ``input_name``); nodes named in ``exclude`` and everything ModelOpt
    does not quantize stay float32. Unnamed nodes get names first."""
    import onnx

    quantization = require("modelopt.onnx.quantization", f"{precision} quantization")
    named = onnx.ModelProto()
    named.CopyFrom(model)
    name_all_nodes(named)
    with tempfile.TemporaryDirectory(prefix="pgn_quantize_") as tmp:
        source, target = Path(tmp) / "model.onnx", Path(tmp) / "model.quant.onnx"
        onnx.save(named, str(source))
        try:
            # ONNX Runtime's calibrator print()s its progress: keep stdout clean for --json
            with quiet_modelopt(), contextlib.redirect_stdout(io.StringIO()):
                quantization.quantize(
                    str(source),
                    quantize_mode=precision,
                    calibration_data={input_name: calibration},
                    calibration_method=method,
                    calibration_eps=["cpu"],
                    nodes_to_exclude=[f"^{re.escape(name)}$" for name in exclude] or None,
                    high_precision_dtype="fp32",
                    output_path=str(target),
                    log_level="ERROR",
                )
        except PGNError:
            raise
        except Exception as exc:  # ModelOpt and ONNX Runtime raise many kinds
            raise UnsupportedModelError(f"ModelOpt could not quantize the model: {first_line(exc)}") from None
        result = onnx.load(str(target))
    del result.metadata_props[:]
    result.metadata_props.extend(model.metadata_props)
    return result


def quantize_model(model: Any, calibration: CalibrationSet, precision: str = "int8", method: str = "entropy",
                   keep_head: bool = True, pgn_reads_float: bool = True, quantize_pgn: bool = False,
                   keep_float: Sequence[str] = ()) -> Any:
    """A copy of the grafted fp32 ``model`` whose network runs in ``precision`` (Q/DQ).

    Excluded from quantization (float32): the PGN subgraph, the classifier conv(s) when
    ``keep_head``, and nodes whose weight cannot be quantized (:func:`unquantizable_nodes`).
    With ``pgn_reads_float`` the PGN nodes read the network's float32 tensors
    (:func:`reconnect_pgn_inputs`). ``quantize_pgn=True`` quantizes everything, the PGN subgraph
    included (the naive baseline the benchmark compares against; its metadata says so).
    ``keep_float``: regular expressions of further network node names to keep float32.
    The metadata gets ``precision`` and ``quantization``.
    """
    import onnx

    check_quant_precision(precision)
    check_calibration_method(method)
    meta = read_metadata(model)
    if meta.precision != "fp32":
        raise BadInputError(f"the model is already {meta.precision}; quantize the fp32 model")
    if meta.gt_input:
        raise UnsupportedModelError("models with the gt label input cannot be calibrated on images alone")
    named = onnx.ModelProto()
    named.CopyFrom(model)
    name_all_nodes(named)
    network, _ = split_nodes(named, meta)
    pgn = [] if quantize_pgn else pgn_node_names(named, meta)
    head = list(meta.head.conv_nodes) if keep_head and not quantize_pgn else []
    kept = unquantizable_nodes(named, network)
    patterns = [re.compile(pattern) for pattern in keep_float]
    chosen = [node.name for node in network if any(p.search(node.name) for p in patterns)]
    excluded = [*pgn, *head, *kept, *chosen]
    quantized = quantize_graph(named, precision, calibration.data, meta.input.name, method, excluded)
    reconnected = reconnect_pgn_inputs(quantized, set(pgn)) if pgn_reads_float and not quantize_pgn else 0
    _remove_unused_qdq(quantized)
    if not any(node.op_type in QDQ_OPS for node in quantized.graph.node):
        raise UnsupportedModelError(
            f"ModelOpt quantized no node of the network to {precision} (nothing it supports is left after the "
            "exclusions); the fp32 model is the right file")
    meta.precision = precision
    meta.quantization = {
        "precision": precision,
        "calibration_method": method,
        "calibration": calibration.to_json(),
        "excluded": {
            "pgn_subgraph": not quantize_pgn,
            "pgn_nodes": len(pgn),
            "classifier": head,
            "unquantizable": kept,
            "kept_float": chosen,
        },
        "pgn_reads_float": pgn_reads_float and not quantize_pgn,
        "reconnected_inputs": reconnected,
        "qdq_nodes": sum(node.op_type in QDQ_OPS for node in quantized.graph.node),
        "tool": f"nvidia-modelopt {_modelopt_version()}",
    }
    write_metadata(quantized, meta)
    if not quantize_pgn:
        inside = qdq_in_pgn(quantized, meta)
        if inside:
            raise PGNError(f"quantization left Q/DQ nodes in the PGN subgraph: {', '.join(inside[:5])}")
    onnx.checker.check_model(quantized)
    return quantized


def quantize_precision(
    model_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    calib: Sequence[str | os.PathLike[str]],
    precision: str = "int8",
    calib_max: int | None = None,
    calib_method: str = "entropy",
    keep_head: bool = True,
    force: bool = False,
) -> Path:
    """Write an INT8/FP8 copy of the grafted fp32 model at ``model_path`` to ``out``.

    ``calib``: calibration image files or folders (at most ``calib_max`` images), see
    :func:`read_calibration`; the rest is :func:`quantize_model`. Every argument is checked
    before any work; ``out`` is written atomically and never overwritten without ``force``.
    """
    check_quant_precision(precision)
    check_calibration_method(calib_method)
    out = check_output_path(out, force)
    model = load_onnx(model_path)
    calibration = read_calibration(read_metadata(model), calib, calib_max)
    return save_onnx(quantize_model(model, calibration, precision, calib_method, keep_head), out, force=force)
