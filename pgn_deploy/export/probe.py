"""Run a grafted model once before it is written: a graft never writes a file that does not run.

:func:`probe_grafted` runs the model on ONNX Runtime's CPU provider at the traced input shape
(random input, fixed seed) and refuses, with one line, a model that fails to run or whose PGN
maps are not finite there (``p`` far from 1 on wide features overflows or underflows float32).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from pgn_deploy.contract import UnsupportedModelError, first_line, read_metadata


def probe_grafted(model: onnx.ModelProto, shape: Sequence[int]) -> None:
    """Run ``model`` (grafted, float32 PGN subgraph) once on an input of ``shape`` (N x C x H x W).

    Raises :class:`UnsupportedModelError` naming the failure, or the maps that are not finite
    (with what to change), so that the caller writes nothing.
    """
    import onnxruntime as ort
    meta = read_metadata(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feeds = {meta.input.name: _random_input(session, meta.input.name, shape)}
        if meta.gt_input is not None:
            feeds[meta.gt_input] = np.zeros((shape[0], *_gt_size(model, meta.head.logits_output, shape)), np.int64)
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    except Exception as exc:  # ONNX Runtime raises its own exception types
        raise UnsupportedModelError(
            f"the grafted model does not run on ONNX Runtime (CPU) at input shape {'x'.join(map(str, shape))}: "
            f"{first_line(exc)}; nothing was written"
        ) from None
    bad = [name for name in meta.pgn_outputs if not np.isfinite(outputs[name]).all()]
    if bad:
        raise UnsupportedModelError(
            f"the grafted maps {', '.join(bad)} are not finite at input shape {'x'.join(map(str, shape))} "
            "(float32 over- or underflows |psi|^p or its root: choose p nearer 1); nothing was written"
        )


def _random_input(session: object, name: str, shape: Sequence[int]) -> np.ndarray:
    """Standard-normal input of ``shape`` in the dtype the model's input ``name`` declares."""
    declared = next(i for i in session.get_inputs() if i.name == name)
    dtype = np.float16 if "float16" in declared.type else np.float64 if "double" in declared.type else np.float32
    return np.random.default_rng(0).standard_normal(tuple(shape)).astype(dtype)


def _gt_size(model: onnx.ModelProto, logits: str, shape: Sequence[int]) -> tuple[int, int]:
    """H x W of the logits output where the graph declares it, else the input's."""
    output = next((o for o in model.graph.output if o.name == logits), None)
    dims = output.type.tensor_type.shape.dim if output is not None else []
    if len(dims) == 4 and all(d.HasField("dim_value") for d in dims[2:]):
        return dims[2].dim_value, dims[3].dim_value
    return int(shape[2]), int(shape[3])
