"""Preprocessing inside the graph: a model that takes camera frames (uint8 N x H x W x 3) as they come.

:func:`add_input_format` replaces the float N x 3 x H x W image input by a uint8
N x H x W x 3 input of the same name and prepends, in this order (the order and float32
arithmetic of :func:`pgn_deploy.runtime.preprocess.preprocess_image`, so both give the same
tensor):

1. ``Cast`` to float32, then ``Transpose`` to N x 3 x H x W (uint8 stays on the graph input:
   TensorRT has no uint8 Transpose; the arithmetic runs on whole planes, since per-channel
   arithmetic on a last axis of size 3 is several times slower in ONNX Runtime: 3.8 ms for
   these steps at 512 x 1024 on one CPU thread, against 9.5 ms for the same in numpy);
2. ``Gather(indices=[2, 1, 0], axis=1)`` when the frames' channel order (``uint8-nhwc-rgb`` or
   ``uint8-nhwc-bgr``) differs from the order the network was trained on;
3. ``Div(scale)``, ``Sub(mean)``, ``Div(std)`` per channel (float32 constants of shape
   1 x 3 x 1 x 1), then a ``Cast`` to the network's input type if it is not float32.

Every value is computed by the same float32 operations as in Python, so the tensor is the same
bit for bit (reordering and transposing move values without changing them).

Resizing is not done in the graph: a model exported with ``input.resize`` still expects the
caller (the runtime) to resize frames to ``input.size``. Nodes and constants are named
``pgn_pre/...``. The metadata's ``input.format`` and ``input.layout`` (``NHWC``) say what the
graph takes.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pgn_deploy.contract import (
    INPUT_FORMATS,
    BadInputError,
    InputInfo,
    UnsupportedModelError,
    read_metadata,
    write_metadata,
)

PREFIX = "pgn_pre/"


def check_input_format(input_format: str) -> str:
    """``input_format`` if it is one of :data:`~pgn_deploy.contract.INPUT_FORMATS`, else a BadInputError."""
    if input_format not in INPUT_FORMATS:
        raise BadInputError(f"unknown input format {input_format!r}; choose from {', '.join(INPUT_FORMATS)}")
    return input_format


def add_input_format(model: onnx.ModelProto, input_format: str) -> onnx.ModelProto:
    """A copy of the grafted ``model`` whose image input takes ``input_format``.

    ``"float-nchw"`` returns an unchanged copy. Raises :class:`BadInputError` for an unknown
    format and :class:`UnsupportedModelError` for a model that already takes uint8 frames or
    whose image input is not N x 3 x H x W.
    """
    check_input_format(input_format)
    meta = read_metadata(model)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    if input_format == "float-nchw":
        return result
    if meta.input.uint8:
        raise UnsupportedModelError(f"the model already takes {meta.input.format} frames")
    graph = result.graph
    image = next((i for i in graph.input if i.name == meta.input.name), None)
    dims = list(image.type.tensor_type.shape.dim) if image is not None else []
    if len(dims) != 4 or (dims[1].HasField("dim_value") and dims[1].dim_value != 3):
        raise UnsupportedModelError(f"the image input {meta.input.name!r} is not N x 3 x H x W")
    network_type = image.type.tensor_type.elem_type
    inner = _free_name(graph, f"{PREFIX}network_input")
    for node in graph.node:
        node.input[:] = [inner if name == meta.input.name else name for name in node.input]
    frames = helper.make_tensor_value_info(meta.input.name, TensorProto.UINT8, [_dim(dims[0]), _dim(dims[2]),
                                                                                 _dim(dims[3]), 3])
    graph.input.remove(image)
    graph.input.insert(0, frames)
    nodes, inits = _preprocess_nodes(meta.input.name, inner, input_format, meta.input, network_type)
    graph.initializer.extend(inits)
    for node in reversed(nodes):
        graph.node.insert(0, node)
    meta.input = dataclasses.replace(meta.input, format=input_format, layout="NHWC")
    write_metadata(result, meta)
    onnx.checker.check_model(result)
    return result


def _dim(dim: onnx.TensorShapeProto.Dimension) -> int | str | None:
    if dim.HasField("dim_value"):
        return dim.dim_value
    return dim.dim_param or None


def _free_name(graph: onnx.GraphProto, name: str) -> str:
    taken = {v for node in graph.node for v in (*node.input, *node.output)}
    taken |= {i.name for i in graph.input} | {t.name for t in graph.initializer}
    candidate, k = name, 0
    while candidate in taken:
        k += 1
        candidate = f"{name}_{k}"
    return candidate


def _preprocess_nodes(source: str, target: str, input_format: str, info: InputInfo,
                      network_type: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes (graph order) and constants turning uint8 frames ``source`` into ``target``."""
    def name(hint: str) -> str:
        return f"{PREFIX}{hint}"

    inits = [
        numpy_helper.from_array(np.asarray(info.scale, np.float32), name("scale")),
        numpy_helper.from_array(np.asarray(info.mean, np.float32).reshape(1, 3, 1, 1), name("mean")),
        numpy_helper.from_array(np.asarray(info.std, np.float32).reshape(1, 3, 1, 1), name("std")),
    ]
    nodes = [helper.make_node("Cast", [source], [name("float")], name=name("cast"), to=TensorProto.FLOAT),
             helper.make_node("Transpose", [name("float")], [name("nchw")], name=name("to_nchw"), perm=[0, 3, 1, 2])]
    current = name("nchw")
    frame_order = input_format.rsplit("-", 1)[1].upper()
    if frame_order != info.channel_order:
        inits.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), name("reverse_index")))
        nodes.append(helper.make_node("Gather", [current, name("reverse_index")], [name("reordered")],
                                      name=name("reorder"), axis=1))
        current = name("reordered")
    steps = (("Div", "scale"), ("Sub", "mean"), ("Div", "std"))
    for k, (op, constant) in enumerate(steps):
        last = k == len(steps) - 1
        output = target if last and network_type == TensorProto.FLOAT else name(f"by_{constant}")
        nodes.append(helper.make_node(op, [current, name(constant)], [output], name=name(f"{op.lower()}_{constant}")))
        current = output
    if network_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [current], [target], name=name("to_network_type"), to=network_type))
    return nodes, inits
