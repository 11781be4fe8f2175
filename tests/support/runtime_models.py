"""Small grafted models for the runtime tests, made without torch.

``build_model`` writes a tiny segmentation network (3x3 Conv stride 2 -> ReLU -> 1x1 Conv ->
bilinear Resize to the input size) built with ``onnx.helper``, grafted by
:func:`pgn_deploy.graft.attach.graft` like any third-party ONNX model: PGN maps for p = 0.5
and 2 (label ``uni``), the ``msp``/``entropy`` baselines and optionally ``pred``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pgn_deploy import contract as C

NUM_CLASSES = 5
FEATURES = 8
P_VALUES = (0.5, 2.0)


def plain_model(batch: int | str = "N", seed: int = 0) -> onnx.ModelProto:
    """The tiny network, input ``input`` (batch x 3 x H x W), output ``logits`` at H x W."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (FEATURES, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, FEATURES).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.5, (NUM_CLASSES, FEATURES, 1, 1)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.1, NUM_CLASSES).astype(np.float32), "b2"),
        numpy_helper.from_array(np.array([0], np.int64), "s0"),
        numpy_helper.from_array(np.array([2], np.int64), "s2"),
        numpy_helper.from_array(np.array([4], np.int64), "s4"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["conv1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["conv1"], ["psi"]),
        helper.make_node("Conv", ["psi", "w2", "b2"], ["head"], name="classifier"),
        helper.make_node("Shape", ["head"], ["head_shape"]),
        helper.make_node("Shape", ["input"], ["input_shape"]),
        helper.make_node("Slice", ["head_shape", "s0", "s2"], ["nc"]),
        helper.make_node("Slice", ["input_shape", "s2", "s4"], ["hw"]),
        helper.make_node("Concat", ["nc", "hw"], ["logit_size"], axis=0),
        helper.make_node("Resize", ["head", "", "", "logit_size"], ["logits"], mode="linear"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_seg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, NUM_CLASSES, "H", "W"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def build_model(path: Path, *, pred: bool = True, batch: int | str = "N",
                input_info: C.InputInfo | None = None, metadata: bool = True, seed: int = 0) -> Path:
    """Write the grafted tiny model (or, with ``metadata=False``, the plain one) to ``path``.

    ``batch``: a symbol (dynamic batch) or a fixed size; ``input_info``: the input description
    stored in the metadata (default: ImageNet-normalized RGB, any size).
    """
    from pgn_deploy.graft.attach import graft  # the exporter side; the runtime never imports it

    model = plain_model(batch, seed)
    if metadata:
        info = input_info or C.InputInfo(dynamic_batch=isinstance(batch, str))
        spec = C.PGNSpec(p=P_VALUES, labels=("uni",), pred=pred, baselines=True)
        model = graft(model, spec, input_info=info)
    C.save_onnx(model, path)
    return path
