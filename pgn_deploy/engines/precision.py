"""fp16/bf16 copies of a grafted model: the network in half precision, the PGN subgraph float32.

Mixed precision is decided in the ONNX file (TensorRT 11 builds exactly what the ONNX says;
ONNX Runtime runs fp16 models on the CPU too), so one converted file serves every backend.

The converter is NVIDIA ModelOpt's AutoCast (``modelopt.onnx.autocast``), chosen by result on
our graphs over onnxconverter-common's and ONNX Runtime's ``float16`` converters: with a node
block list, both of those cast the float32 output of a blocked node to fp16 and back
(fp32 -> fp16 -> fp32) when it also feeds a converted node or a graph output, which would
round every PGN map to fp16 and turn sums above 65504 into inf. AutoCast keeps such tensors
float32 and casts only on the edges into converted nodes (``tests/engines/test_precision.py``
checks this on all three converters).

The PGN subgraph is found structurally (:mod:`pgn_deploy.engines.subgraph`: every node the
original outputs do not depend on) and excluded by exact node name. Range-based blocking from
random inputs (AutoCast's ``data_max`` rule) is switched off: the whole network is converted
and ``pgn-lint --calib`` measures the fp16 overflow margin on real images instead.
Initializers outside the fp16 range keep their node in float32 (AutoCast's ``init_max``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pgn_deploy.contract import (
    BadInputError,
    PGNError,
    check_output_path,
    load_onnx,
    read_metadata,
    require,
    save_onnx,
    write_metadata,
)
from pgn_deploy.engines.subgraph import half_precision_in_pgn, pgn_node_names

PRECISIONS = ("fp32", "fp16", "bf16")
QUANT_PRECISIONS = ("int8", "fp8")
"""Precisions made by Q/DQ quantization with calibration images (:mod:`pgn_deploy.engines.quantize`)."""
ALL_PRECISIONS = (*PRECISIONS, *QUANT_PRECISIONS)
NODE_NAME_PREFIX = "pgn_deploy/node_"


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a BadInputError."""
    if precision not in PRECISIONS:
        raise BadInputError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return precision


def name_all_nodes(model: Any) -> None:
    """Give every unnamed node of ``model.graph`` a unique name (block lists work by name)."""
    taken = {node.name for node in model.graph.node if node.name}
    counter = 0
    for node in model.graph.node:
        if node.name:
            continue
        while f"{NODE_NAME_PREFIX}{counter}" in taken:
            counter += 1
        node.name = f"{NODE_NAME_PREFIX}{counter}"
        taken.add(node.name)


@contextlib.contextmanager
def quiet_modelopt() -> Iterator[None]:
    """ModelOpt logs INFO lines to stdout; keep stdout clean for ``--json`` output."""
    names = ["modelopt", *(n for n in logging.root.manager.loggerDict if n.startswith("modelopt."))]
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def convert_graph(model: Any, precision: str, keep_float32: list[str], keep_io_float32: bool = True) -> Any:
    """A copy of ``model`` with every node in ``precision`` except those named in ``keep_float32``.

    Casts are inserted only on the edges between the two parts: a float32 tensor consumed by
    both a kept and a converted node is cast once for the converted one and read as is by the
    kept one (never fp32 -> fp16 -> fp32). With ``keep_io_float32`` the graph inputs and
    outputs keep their types. Unnamed nodes get names first (:func:`name_all_nodes`); the
    model's ``metadata_props`` are carried over.
    """
    import onnx

    check_precision(precision)
    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    if precision == "fp32":
        return converted
    name_all_nodes(converted)
    autocast = require("modelopt.onnx.autocast", f"{precision} conversion")
    with tempfile.TemporaryDirectory(prefix="pgn_convert_") as tmp:
        source = Path(tmp) / "model.onnx"
        onnx.save(converted, str(source))
        with quiet_modelopt():
            result = autocast.convert_to_mixed_precision(
                onnx_path=str(source),
                low_precision_type=precision,
                nodes_to_exclude=[f"^{re.escape(name)}$" for name in keep_float32],
                data_max=np.inf,
                keep_io_types=keep_io_float32,
                providers=["cpu"],
            )
    del result.metadata_props[:]  # AutoCast drops them
    result.metadata_props.extend(converted.metadata_props)
    return result


def convert_model(model: Any, precision: str = "fp16", keep_io_float32: bool = True) -> Any:
    """A copy of the grafted fp32 ``model`` whose network runs in ``precision``.

    The PGN subgraph (softmax, ``|psi|^p`` sums, norms, the resize of the maps, ``pred`` and
    the baselines) stays float32, and so do the PGN outputs; with ``keep_io_float32`` the
    graph's image input and original outputs stay float32 too (casts at the edges). The
    metadata's ``precision`` is set. ``precision="fp32"`` returns an unchanged copy. In-graph
    ``<map>_norm``/``ood_mask`` outputs are taken off before the conversion and rebuilt, float32,
    after it (the converter does not keep the optional ``ood_threshold`` input).
    """
    import onnx

    from pgn_deploy.graft.normalize import add_normalization, strip_normalization

    check_precision(precision)
    meta = read_metadata(model)
    if meta.precision != "fp32":
        raise BadInputError(f"the model is already {meta.precision}; convert the fp32 model")
    if precision == "fp32":
        return convert_graph(model, precision, [])
    if meta.normalized:
        half = convert_model(strip_normalization(model), precision, keep_io_float32)
        return add_normalization(half, list(meta.normalized), meta.ood_mask["map"] if meta.ood_mask else None)
    named = onnx.ModelProto()
    named.CopyFrom(model)
    name_all_nodes(named)
    converted = convert_graph(named, precision, pgn_node_names(named, meta), keep_io_float32)
    meta.precision = precision
    write_metadata(converted, meta)
    wrong = half_precision_in_pgn(converted, meta)
    if wrong:
        raise PGNError(f"conversion left PGN tensors in half precision: {', '.join(wrong[:5])}")
    onnx.checker.check_model(converted)
    return converted


def convert_precision(
    model_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    precision: str = "fp16",
    keep_io_float32: bool = True,
    force: bool = False,
) -> Path:
    """Write an fp16/bf16 copy of the grafted fp32 model at ``model_path`` to ``out``.

    See :func:`convert_model`; ``out`` is written atomically and never overwritten without
    ``force``. Returns ``out``.
    """
    check_precision(precision)
    out = check_output_path(out, force)
    model = load_onnx(model_path)
    return save_onnx(convert_model(model, precision, keep_io_float32), out, force=force)


def check_calibration_use(precision: str, calib: Sequence[str | os.PathLike[str]] | None) -> None:
    """A known precision; ``int8``/``fp8`` need calibration images (for the other precisions the
    same ``--calib`` images give only the score statistics, see :mod:`pgn_deploy.runtime.calibrate`)."""
    if precision not in ALL_PRECISIONS:
        raise BadInputError(f"unknown precision {precision!r}; choose from {', '.join(ALL_PRECISIONS)}")
    if precision in QUANT_PRECISIONS and not calib:
        raise BadInputError(f"--precision {precision} needs calibration images (--calib IMAGES)")


def convert_file(
    model_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    precision: str,
    calib: Sequence[str | os.PathLike[str]] | None = None,
    calib_max: int | None = None,
    calib_method: str = "max",
    int8_keep_float: str = "measured",
    force: bool = False,
) -> Path:
    """Any precision copy of the grafted fp32 model at ``model_path``: fp16/bf16 through
    :func:`convert_precision`, int8/fp8 through
    :func:`pgn_deploy.engines.quantize.quantize_precision` (needs ``calib`` images; ``int8_keep_float``
    says what stays float32 besides the PGN subgraph). Returns ``out``."""
    check_calibration_use(precision, calib)
    if precision in QUANT_PRECISIONS:
        from pgn_deploy.engines.quantize import quantize_precision

        return quantize_precision(model_path, out, list(calib or []), precision, calib_max, calib_method,
                                  int8_keep_float, force=force)
    return convert_precision(model_path, out, precision, force=force)
