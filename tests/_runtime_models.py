"""Small grafted-contract ONNX models for the runtime tests (no torch).

``build_model`` makes a tiny segmentation network (3x3 Conv stride 2 -> ReLU -> 1x1 Conv ->
bilinear Resize to the input size) that carries the grafted model's contract: PGN maps
(paper form, label ``uni``), the ``msp``/``entropy`` baselines, optionally ``pred``, and the
``pgn_deploy`` metadata. The PGN subgraph follows ``shared/spec/pgn-math.md``.
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


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def build_model(path: Path, *, pred: bool = True, batch: int | str = "N",
                input_info: C.InputInfo | None = None, metadata: bool = True, seed: int = 0) -> Path:
    """Write the model to ``path`` and return it. ``batch``: a symbol (dynamic) or a fixed size."""
    rng = np.random.default_rng(seed)
    inits = [
        _const("w1", rng.normal(0, 0.5, (FEATURES, 3, 3, 3)).astype(np.float32)),
        _const("b1", rng.normal(0, 0.1, FEATURES).astype(np.float32)),
        _const("w2", rng.normal(0, 0.5, (NUM_CLASSES, FEATURES, 1, 1)).astype(np.float32)),
        _const("b2", rng.normal(0, 0.1, NUM_CLASSES).astype(np.float32)),
        _const("axis1", np.array([1], np.int64)),
        _const("one", np.array(1.0, np.float32)),
        _const("uni", np.array((NUM_CLASSES - 1) / NUM_CLASSES, np.float32)),
        _const("s0", np.array([0], np.int64)),
        _const("s2", np.array([2], np.int64)),
        _const("s4", np.array([4], np.int64)),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["conv1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["conv1"], ["psi"]),
        helper.make_node("Conv", ["psi", "w2", "b2"], ["head"], name="head_conv"),
        helper.make_node("Shape", ["head"], ["head_shape"]),
        helper.make_node("Shape", ["input"], ["input_shape"]),
        helper.make_node("Slice", ["head_shape", "s0", "s2"], ["nc"]),
        helper.make_node("Slice", ["input_shape", "s2", "s4"], ["hw"]),
        helper.make_node("Concat", ["nc", "hw"], ["logit_size"], axis=0),
        helper.make_node("Resize", ["head", "", "", "logit_size"], ["logits"], mode="linear"),
        # PGN, paper form, label uni: ||S (C-1)/C||_p * ||psi||_p at feature resolution
        helper.make_node("Softmax", ["head"], ["probs"], axis=1),
        helper.make_node("Mul", ["probs", "uni"], ["g"]),
        helper.make_node("Abs", ["psi"], ["abs_psi"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, NUM_CLASSES, "H", "W"])]
    pgn_names = []
    for p in P_VALUES:
        name = C.pgn_output_name("uni", p)
        pgn_names.append(name)
        tag = C.format_p(p).replace(".", "_")
        inits += [_const(f"p{tag}", np.array(p, np.float32)), _const(f"ip{tag}", np.array(1 / p, np.float32))]
        nodes += [
            helper.make_node("Pow", ["g", f"p{tag}"], [f"gp{tag}"]),
            helper.make_node("ReduceSum", [f"gp{tag}", "axis1"], [f"gs{tag}"], keepdims=1),
            helper.make_node("Pow", [f"gs{tag}", f"ip{tag}"], [f"gn{tag}"]),
            helper.make_node("Pow", ["abs_psi", f"p{tag}"], [f"fp{tag}"]),
            helper.make_node("ReduceSum", [f"fp{tag}", "axis1"], [f"fs{tag}"], keepdims=1),
            helper.make_node("Pow", [f"fs{tag}", f"ip{tag}"], [f"fn{tag}"]),
            helper.make_node("Mul", [f"gn{tag}", f"fn{tag}"], [f"m{tag}"]),
            helper.make_node("Shape", [f"m{tag}"], [f"ms{tag}"]),
            helper.make_node("Slice", [f"ms{tag}", "s0", "s2"], [f"mnc{tag}"]),
            helper.make_node("Concat", [f"mnc{tag}", "hw"], [f"msize{tag}"], axis=0),
            helper.make_node("Resize", [f"m{tag}", "", "", f"msize{tag}"], [name], mode="linear"),
        ]
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, 1, "H", "W"]))
    nodes += [
        helper.make_node("Softmax", ["logits"], ["out_probs"], axis=1),
        helper.make_node("ReduceMax", ["out_probs", "axis1"], ["max_prob"], keepdims=1),
        helper.make_node("Sub", ["one", "max_prob"], ["msp"]),
        helper.make_node("Log", ["out_probs"], ["log_probs"]),
        helper.make_node("Mul", ["out_probs", "log_probs"], ["plogp"]),
        helper.make_node("ReduceSum", ["plogp", "axis1"], ["neg_entropy"], keepdims=1),
        helper.make_node("Neg", ["neg_entropy"], ["entropy"]),
    ]
    outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, 1, "H", "W"]) for n in C.BASELINES]
    if pred:
        nodes += [
            helper.make_node("ArgMax", ["logits"], ["pred64"], axis=1, keepdims=0),
            helper.make_node("Cast", ["pred64"], ["pred"], to=TensorProto.INT32),
        ]
        outputs.append(helper.make_tensor_value_info("pred", TensorProto.INT32, [batch, "H", "W"]))
    graph = helper.make_graph(
        nodes, "tiny_seg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, "H", "W"])],
        outputs, inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    if metadata:
        spec = C.PGNSpec(p=P_VALUES, labels=("uni",), pred=pred, baselines=True)
        head = C.HeadInfo(conv_nodes=["head_conv"], features=["psi"], logits="logits",
                          head_logits="head", logits_output="logits", resize="linear")
        info = input_info or C.InputInfo(dynamic_batch=isinstance(batch, str))
        C.write_metadata(model, C.Metadata(
            spec=spec, head=head, num_classes=NUM_CLASSES, input=info, original_outputs=["logits"],
            pgn_outputs=pgn_names, pred="pred" if pred else None, baselines=list(C.BASELINES),
        ))
    C.save_onnx(model, path)
    return path
