"""Graft PGN onto an ONNX segmentation model: one model returning segmentation and PGN maps.

``graft(model, spec)`` finds the classifier head (:mod:`pgn_deploy.graft.head`), appends the
PGN subgraph (:mod:`pgn_deploy.graft.pgn_subgraph`) and writes the ``pgn_deploy`` metadata.
The original nodes, inputs and outputs are left as they are, so the original outputs stay
bit-identical; the result passes ``onnx.checker.check_model(full_check=True)``.
"""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np
import onnx
import onnx_ir as ir

from pgn_deploy.contract import (
    BASELINES,
    GT_INPUT,
    METADATA_KEY,
    PRED,
    BadInputError,
    InputInfo,
    Metadata,
    PGNSpec,
    UnsupportedModelError,
    check_weights,
    write_metadata,
)
from pgn_deploy.graft.head import Head, find_head, locate_head
from pgn_deploy.graft.penultimate import BatchNormFold, locate_penultimate
from pgn_deploy.graft.pgn_subgraph import add_pgn_outputs

__all__ = ["find_head", "graft"]

"""What the maps are the gradient of: the checkpoint's classifier weights (an exporter's fold of
a BatchNorm or scale undone) or the weights stored in the graph."""

_PRECISIONS = {ir.DataType.FLOAT16: "fp16", ir.DataType.BFLOAT16: "bf16"}
PROBE_SIZE = (512, 512)
"""Input size at which ``upsample="auto"`` measures the classifier map when the model's own
size is unknown (pgn-export's default example size)."""


def graft(
    model: onnx.ModelProto,
    spec: PGNSpec,
    *,
    head: str | None = None,
    input_info: InputInfo | None = None,
    class_names: list[str] | None = None,
    folded_scale: Sequence[float] | None = None,
    weights: str = "graph",
    weights_note: str = "",
    bn_folds: Sequence[BatchNormFold] = (),
) -> onnx.ModelProto:
    """A new model: ``model`` plus the PGN outputs of ``spec`` and the ``pgn_deploy`` metadata.

    ``head`` names a node of the classifier head when the automatic search picks the wrong one;
    ``input_info`` describes the image input (default: the first graph input, ImageNet
    normalization); ``class_names`` must have one name per class. ``model`` is not modified.
    ``weights``: which classifier weights the maps are the gradient of, recorded in the
    metadata with ``weights_note``: ``"graph"`` (those stored in the graph) or ``"trained"``
    (the checkpoint's; ``folded_scale``, one factor per class, is then what an exporter folded
    into them, ``W_graph = a * W_trained``, and the class factor is scaled by it).
    ``bn_folds``: the BatchNorms an exporter folded into convs; when given, the penultimate maps
    take the trained kernel's factor from them (:mod:`pgn_deploy.graft.penultimate`; a
    BatchNormalization kept in the graph is read there for either ``weights``).
    Raises :class:`UnsupportedModelError` (no head, already grafted, opset < 13) or
    :class:`BadInputError` (bad ``head``/``class_names``, output names already taken).
    """
    if any(prop.key == METADATA_KEY for prop in model.metadata_props):
        raise UnsupportedModelError("the model is already grafted (it has pgn_deploy metadata); graft the original")
    graph_model = ir.from_proto(model)
    graph = graph_model.graph
    check_weights(weights)
    found = locate_head(graph, head)
    # before a folded classifier scale joins found.scale: the penultimate maps need the graph's dphi/dpsi
    # the exporter's BatchNorm factors mean the trained penultimate kernel, whatever the
    # classifier's own weights could be matched to
    penultimate = locate_penultimate(found, bn_folds, "trained" if bn_folds else weights) \
        if "penultimate" in spec.layers else None
    if folded_scale is not None and weights == "trained":
        if len(folded_scale) != found.num_classes:
            raise BadInputError(
                f"{len(folded_scale)} folded factors given for a model with {found.num_classes} classes")
        folded = np.asarray(folded_scale, dtype=np.float64)
        found.scale = folded if found.scale is None else found.scale * folded
    if class_names is not None and len(class_names) != found.num_classes:
        raise BadInputError(f"{len(class_names)} class names given for a model with {found.num_classes} classes")
    _check_free_names(graph, spec)
    _name_classifier_convs(graph, found)
    _annotate_types(model, found, [penultimate.pre_activation, penultimate.inputs] if penultimate else [])
    input_info = input_info or _default_input_info(model)
    info = found.info()
    outputs = add_pgn_outputs(graph, found, spec, _classifier_rows(model, found, input_info.size), penultimate)
    info = dataclasses.replace(info, head_logits=outputs.class_logits, weights=weights, weights_note=weights_note)
    grafted = ir.to_proto(graph_model)
    original_outputs = [o.name for o in model.graph.output]
    write_metadata(
        grafted,
        Metadata(
            spec=dataclasses.replace(spec, upsample=outputs.upsample),
            head=info,
            num_classes=found.num_classes,
            input=input_info,
            original_outputs=original_outputs,
            pgn_outputs=outputs.maps,
            pred=outputs.pred,
            baselines=outputs.baselines,
            class_names=list(class_names) if class_names is not None else None,
            precision=_PRECISIONS.get(found.head_logits.dtype, "fp32"),
            gt_input=outputs.gt_input,
            penultimate=penultimate.info if penultimate else None,
        ),
    )
    try:
        onnx.checker.check_model(without_weights(grafted), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise UnsupportedModelError(f"the grafted model fails the ONNX checker: {exc}") from None
    return grafted


def without_weights(model: onnx.ModelProto, max_bytes: int = 4096) -> onnx.ModelProto:
    """A structural copy of ``model`` whose initializers over ``max_bytes`` are typed graph
    inputs instead: the same graph for the checker and shape inference, without serializing
    the weights (seconds for a ResNet-50)."""
    graph = model.graph
    small, large = [], []
    for init in graph.initializer:
        (large if init.ByteSize() > max_bytes else small).append(init)
    inputs = list(graph.input)
    declared = {i.name for i in inputs}
    inputs += [
        onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
        for init in large
        if init.name not in declared
    ]
    light_graph = onnx.helper.make_graph(
        list(graph.node), graph.name, inputs, list(graph.output), small, value_info=list(graph.value_info)
    )
    light = onnx.helper.make_model(light_graph, opset_imports=list(model.opset_import), functions=list(model.functions))
    light.ir_version = model.ir_version
    return light


def _check_free_names(graph: ir.Graph, spec: PGNSpec) -> None:
    """The names the graft adds must not exist in the graph yet."""
    wanted = list(spec.map_names)
    wanted += [PRED] if spec.pred else []
    wanted += list(BASELINES) if spec.baselines else []
    wanted += [GT_INPUT] if "gt" in spec.labels else []
    taken = {v.name for v in graph.inputs} | {v.name for v in graph.outputs} | set(graph.initializers)
    taken |= {v.name for node in graph.all_nodes() for v in node.outputs}
    clashes = [name for name in wanted if name in taken]
    if clashes:
        raise BadInputError(f"the model already has tensors named {', '.join(clashes)}; rename them before grafting")


def _name_classifier_convs(graph: ir.Graph, head: Head) -> None:
    """Unnamed classifier convs get a name, so that the metadata can point at them."""
    taken = {node.name for node in graph.all_nodes()}
    names = (name for k in itertools.count() if (name := f"pgn/classifier_conv_{k}") not in taken)
    for branch in head.branches:
        if not branch.conv.name:
            branch.conv.name = next(names)


def _annotate_types(model: onnx.ModelProto, head: Head, extra: Sequence[ir.Value] = ()) -> None:
    """Give the head's values the dtype and shape ONNX shape inference finds (the graft
    chooses casts and declares output shapes from them); the model itself is not changed."""
    inferred = onnx.shape_inference.infer_shapes(without_weights(model), data_prop=True)
    known = {
        info.name: info
        for info in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)
    }
    values = [head.logits, head.head_logits, *(b.features for b in head.branches), *extra]
    for value in values:
        info = known.get(value.name)
        if info is None or not info.type.HasField("tensor_type"):
            continue
        if value.type is None:
            value.type = ir.serde.deserialize_type_proto_for_type(info.type)
        if value.shape is None:
            value.shape = ir.serde.deserialize_type_proto_for_shape(info.type)


def _classifier_rows(model: onnx.ModelProto, head: Head, size: tuple[int, int] | None) -> int | None:
    """Height of the classifier's output for an input of ``size`` (H, W; default
    :data:`PROBE_SIZE`), by ONNX shape inference with the image input fixed to 1 x C x H x W;
    ``None`` when inference cannot tell."""
    light = without_weights(model)
    dims = _image_input(light, model).type.tensor_type.shape.dim
    if len(dims) != 4:
        return None
    for dim, value in zip(dims, (1, None, *(size or PROBE_SIZE))):
        if value is not None:
            dim.Clear()
            dim.dim_value = value
    try:
        inferred = onnx.shape_inference.infer_shapes(light, data_prop=True)
    except onnx.shape_inference.InferenceError:
        return None
    info = next((v for v in inferred.graph.value_info if v.name == head.head_logits.name), None)
    shape = info.type.tensor_type.shape.dim if info is not None else []
    return shape[2].dim_value if len(shape) == 4 and shape[2].HasField("dim_value") else None


def _image_input(model: onnx.ModelProto, original: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The first graph input of ``model`` that is not an initializer of ``original`` (the
    image; :func:`without_weights` turns large initializers into inputs)."""
    initializers = {init.name for init in original.graph.initializer}
    return next(i for i in model.graph.input if i.name not in initializers)


def _default_input_info(model: onnx.ModelProto) -> InputInfo:
    """ImageNet-normalized RGB NCHW on the first graph input; dynamic dims as declared."""
    first = _image_input(model, model)
    dims = first.type.tensor_type.shape.dim
    static = [d.HasField("dim_value") for d in dims]
    size = (dims[2].dim_value, dims[3].dim_value) if len(dims) == 4 and all(static[2:]) else None
    return InputInfo(
        name=first.name,
        size=size,
        dynamic_batch=not (dims and static[0]),
        dynamic_size=size is None,
    )
