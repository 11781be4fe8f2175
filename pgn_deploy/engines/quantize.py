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
  node name. Quantized with the rest (a naive full quantization), the maps lose up to 16 % in
  median relative error;
* the **tensors PGN reads**: ModelOpt puts a Q/DQ pair on a tensor once for all its consumers
  (the features ``psi`` for the classifier conv); the PGN nodes are pointed back at the float32
  tensor (:func:`pgn_deploy.engines.quant_sensitivity.dequantize_nodes`);
* what ``keep_float_mode`` says (:data:`KEEP_FLOAT_MODES`). The default, ``measured``, keeps
  float32 the smallest set of network nodes, found by measuring on calibration frames, that
  keeps the PGN maps within ``tolerance`` (:mod:`pgn_deploy.engines.quant_sensitivity`): the
  one-hot maps' relative error is about the logits' absolute error, and on the demo model
  excluding the PGN subgraph and the classifier alone left 7 %. ``classifier`` keeps only the
  classifier conv(s) float32 (the earlier default), ``none`` nothing;
* **weights that cannot be quantized**: a Conv/MatMul/Gemm weight with a non-finite value or an
  output channel of all zeros (a per-channel scale of 0, which TensorRT rejects) keeps its node
  float32 (:func:`unquantizable_nodes`).

Calibration images are read and preprocessed exactly as the runtime does
(:func:`pgn_deploy.engines.feeds.image_batches`) and must share one size. The metadata's
``precision`` becomes ``int8``/``fp8`` and its ``quantization`` entry records the method, the
images (count and a sha256 over their bytes, in order), what was kept float32 and why, and the tool
version.

FP8 goes through the same path (``quantize_mode="fp8"``). ONNX Runtime's CPU provider emulates
FP8 Q/DQ correctly only with graph optimizations at ``ORT_ENABLE_BASIC`` or below: its extended
CPU fusions turn the FP8 model's logits into nonsense (measured: 25 % pred agreement, against
99.9 % at ``BASIC``). The ``measured`` rule's sessions therefore run at ``BASIC``.
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
from pgn_deploy.engines.quant_sensitivity import (
    QDQ_OPS,
    MapError,
    choose_float_nodes,
    dequantize_nodes,
    remove_unused_qdq,
)
from pgn_deploy.engines.subgraph import pgn_node_names, split_nodes

CALIBRATION_METHODS = ("max", "entropy")
"""Activation range calibration; ``max`` (the default) does not clip the tails, where out-of-distribution
pixels lie (on deeplabv3_mobilenet_v3_large, entropy calibration moved an OoD FPR95 by 2.0 points, max none by more
than 0.3; ``benchmarks/results/int8_fidelity.md``)."""
KEEP_FLOAT_MODES = ("measured", "classifier", "none")
"""What of the network, besides the PGN subgraph, stays float32 (see :func:`quantize_model`)."""
DEFAULT_TOLERANCE = 0.01
"""``measured``: the PGN maps' median relative error allowed on the calibration frames (half the 2 % target)."""
SENSITIVITY_FRAMES = 4
"""``measured``: calibration frames the sensitivity is measured on."""
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
            # ONNX Runtime's calibrator print()s its progress and ModelOpt draws tqdm bars on stderr:
            # keep stdout clean for --json and stderr for errors (exceptions still propagate)
            with quiet_modelopt(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
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


def check_keep_float(mode: str) -> str:
    """``mode`` if it is one of :data:`KEEP_FLOAT_MODES`, else a BadInputError."""
    if mode not in KEEP_FLOAT_MODES:
        raise BadInputError(f"unknown --int8-keep-float {mode!r}; choose from {', '.join(KEEP_FLOAT_MODES)}")
    return mode


def quantize_model(model: Any, calibration: CalibrationSet, precision: str = "int8", method: str = "max",
                   keep_float_mode: str = "measured", tolerance: float = DEFAULT_TOLERANCE,
                   sensitivity_frames: int = SENSITIVITY_FRAMES, pgn_reads_float: bool = True,
                   quantize_pgn: bool = False, keep_float: Sequence[str] = ()) -> Any:
    """A copy of the grafted fp32 ``model`` whose network runs in ``precision`` (Q/DQ).

    Always float32: the PGN subgraph (unless ``quantize_pgn``) and nodes whose weight cannot be
    quantized (:func:`unquantizable_nodes`). ``keep_float_mode`` (:data:`KEEP_FLOAT_MODES`) says
    what else of the network stays float32: ``measured`` (default) the smallest set of nodes that
    keeps the PGN maps' median relative error within ``tolerance`` on the first
    ``sensitivity_frames`` calibration frames (:func:`choose_float_nodes`); ``classifier`` the
    classifier conv(s); ``none`` nothing. ``keep_float``: regular expressions of further network
    node names to keep float32. With ``pgn_reads_float`` the PGN nodes read the network's float32
    tensors, not their Q/DQ copies. ``quantize_pgn=True`` quantizes everything, the PGN subgraph
    included (the naive baseline the benchmark compares against; its metadata says so).
    The metadata gets ``precision`` and ``quantization`` (what was kept float32, and for
    ``measured`` the errors it measured).
    """
    import onnx

    check_quant_precision(precision)
    check_calibration_method(method)
    check_keep_float(keep_float_mode)
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
    head = list(meta.head.conv_nodes) if keep_float_mode == "classifier" and not quantize_pgn else []
    kept = unquantizable_nodes(named, network)
    patterns = [re.compile(pattern) for pattern in keep_float]
    chosen = [node.name for node in network if any(p.search(node.name) for p in patterns)]
    excluded = [*pgn, *head, *kept, *chosen]
    quantized = quantize_graph(named, precision, calibration.data, meta.input.name, method, excluded)
    reconnected = dequantize_nodes(quantized, set(pgn)) if pgn_reads_float and not quantize_pgn else 0
    remove_unused_qdq(quantized)
    _require_qdq(quantized, precision, "nothing it supports is left after the exclusions")
    measured = None
    if keep_float_mode == "measured" and not quantize_pgn:
        error = MapError(named, meta.input.name, calibration.data[:sensitivity_frames], meta.pgn_outputs)
        measured = choose_float_nodes(quantized, error, set(pgn), tolerance)
        dequantize_nodes(quantized, set(measured.float_nodes))
        _require_qdq(quantized, precision, f"quantizing any node moves the PGN maps by more than {tolerance:.1%} "
                                           "median relative error; --int8-keep-float classifier keeps less")
    meta.precision = precision
    meta.quantization = {
        "precision": precision,
        "calibration_method": method,
        "calibration": calibration.to_json(),
        "keep_float_mode": "naive" if quantize_pgn else keep_float_mode,
        "excluded": {
            "pgn_subgraph": not quantize_pgn,
            "pgn_nodes": len(pgn),
            "classifier": head,
            "measured": [] if measured is None else measured.float_nodes,
            "unquantizable": kept,
            "kept_float": chosen,
        },
        "pgn_reads_float": pgn_reads_float and not quantize_pgn,
        "reconnected_inputs": reconnected,
        "qdq_nodes": sum(node.op_type in QDQ_OPS for node in quantized.graph.node),
        "tool": f"nvidia-modelopt {_modelopt_version()}",
    }
    if measured is not None:
        meta.quantization["measurement"] = measured.to_json()
    write_metadata(quantized, meta)
    if not quantize_pgn:
        inside = qdq_in_pgn(quantized, meta)
        if inside:
            raise PGNError(f"quantization left Q/DQ nodes in the PGN subgraph: {', '.join(inside[:5])}")
    onnx.checker.check_model(quantized)
    return quantized


def _require_qdq(model: Any, precision: str, reason: str) -> None:
    """An UnsupportedModelError saying ``reason`` when ``model`` has no Q/DQ node left."""
    if not any(node.op_type in QDQ_OPS for node in model.graph.node):
        raise UnsupportedModelError(
            f"no node of the network is left in {precision} ({reason}); the fp32 model is the right file")


def quantize_precision(
    model_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    calib: Sequence[str | os.PathLike[str]],
    precision: str = "int8",
    calib_max: int | None = None,
    calib_method: str = "max",
    keep_float_mode: str = "measured",
    force: bool = False,
) -> Path:
    """Write an INT8/FP8 copy of the grafted fp32 model at ``model_path`` to ``out``.

    ``calib``: calibration image files or folders (at most ``calib_max`` images), see
    :func:`read_calibration`; the rest is :func:`quantize_model`. Every argument is checked
    before any work; ``out`` is written atomically and never overwritten without ``force``.
    """
    check_quant_precision(precision)
    check_calibration_method(calib_method)
    check_keep_float(keep_float_mode)
    out = check_output_path(out, force)
    model = load_onnx(model_path)
    calibration = read_calibration(read_metadata(model), calib, calib_max)
    return save_onnx(quantize_model(model, calibration, precision, calib_method, keep_float_mode), out, force=force)
