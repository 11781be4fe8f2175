"""Find the pixel-wise classifier head of an ONNX segmentation graph.

The head is the 1x1 Conv (group 1, stride 1, no padding) -- or several, summed by Add/Sum --
whose output reaches a logits output of the graph only through ops that do not mix pixels:

* value-preserving ops, skipped: ``Identity``, ``Cast``, ``Dropout``;
* spatial ops, mirrored later on the PGN maps: ``Resize`` (any mode) and ``Slice`` on the
  spatial axes only;
* joins: ``Add``/``Sum`` of several 1x1-conv branches (constant addends count as bias); a
  branch may be resized or sliced before the join;
* layout ops at the very end (``Transpose``, ``Reshape``, ``Squeeze``, ``Unsqueeze``,
  ``Flatten``): the tensor before them is taken as the N x C x H x W logits.

The walk starts at every graph output in order and the first output that leads to a head
wins (torchvision's ``out`` comes before ``aux``). ``hint`` (a node name: one of the convs, the
join, or one of the mirrored ops) restricts the search to the head containing that node.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_ir as ir

from pgn_deploy.contract import BadInputError, HeadInfo, UnsupportedModelError

SKIPPED_OPS = ("Identity", "Cast", "Dropout")
SPATIAL_OPS = ("Resize", "Slice")
JOIN_OPS = ("Add", "Sum")
LAYOUT_OPS = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten")
CHANNEL_AXES = (1, -3)
MIN_OPSET = 13
_TORCH_MODES = {"linear": "bilinear", "cubic": "bicubic", "nearest": "nearest"}


@dataclasses.dataclass
class Branch:
    """One 1x1 classifier conv; ``path`` holds the spatial ops between its output and the join
    (forward order), which the PGN subgraph applies to the conv's input ``psi`` as well."""

    conv: ir.Node
    path: list[ir.Node]

    @property
    def features(self) -> ir.Value:
        """psi: the conv's input, N x E x h_i x w_i."""
        return self.conv.inputs[0]


@dataclasses.dataclass
class Head:
    """The classifier head in an ``onnx_ir`` graph.

    ``head_logits``: the summed classifier output at the feature resolution (N x C x h x w);
    ``chain``: the spatial ops from ``head_logits`` to ``logits`` (forward order);
    ``logits``: the model's N x C x H x W logits after its own resize; ``output``: the graph
    output that the logits reach.
    """

    branches: list[Branch]
    join: ir.Node | None
    head_logits: ir.Value
    chain: list[ir.Node]
    logits: ir.Value
    output: ir.Value
    num_classes: int

    @property
    def nodes(self) -> list[ir.Node]:
        """Every node of the head: convs, branch ops, the join and the chain."""
        nodes = [n for b in self.branches for n in (b.conv, *b.path)]
        return nodes + ([self.join] if self.join is not None else []) + self.chain

    def info(self) -> HeadInfo:
        """The :class:`~pgn_deploy.contract.HeadInfo` written into the metadata."""
        resize = [n for n in self.chain if n.op_type == "Resize"]
        return HeadInfo(
            conv_nodes=[b.conv.name for b in self.branches],
            features=[b.features.name for b in self.branches],
            logits=self.logits.name,
            head_logits=self.head_logits.name,
            logits_output=self.output.name,
            resize="+".join(resize_mode(n) for n in resize) or "none",
            align_corners=any(attribute(n, "coordinate_transformation_mode", "half_pixel") == "align_corners"
                              for n in resize),
            feature_resize=[
                "+".join(resize_mode(n) for n in b.path if n.op_type == "Resize") or "none"
                for b in self.branches
            ],
        )


class _Stop(Exception):
    """The walk met a tensor it cannot pass; ``reason`` names it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def find_head(model: onnx.ModelProto, head: str | None = None) -> HeadInfo:
    """The classifier head of ``model`` (see the module doc); ``head`` names a node to use.

    Raises :class:`UnsupportedModelError` (naming the ops where the walk stopped) when no head
    is found, :class:`BadInputError` when ``head`` names no node of the graph.
    """
    return locate_head(ir.from_proto(model).graph, head).info()


def locate_head(graph: ir.Graph, hint: str | None = None) -> Head:
    """:func:`find_head` on an ``onnx_ir`` graph, returning the graph objects."""
    opset = graph.opset_imports.get("", 0)
    if opset < MIN_OPSET:
        raise UnsupportedModelError(
            f"the model uses ONNX opset {opset}; grafting needs opset >= {MIN_OPSET} (re-export it)"
        )
    if hint is not None and hint not in {n.name for n in graph}:
        convs = [n.name for n in graph if _is_classifier_conv(n)]
        raise BadInputError(f"--head {hint!r}: no node of that name; 1x1 Conv nodes: {', '.join(convs) or 'none'}")
    failures = []
    for output in graph.outputs:
        try:
            found = _head_of_output(output)
        except _Stop as stop:
            failures.append(f"output {output.name!r}: {stop.reason}")
            continue
        if hint is None or hint in {n.name for n in found.nodes}:
            return found
        failures.append(f"output {output.name!r}: its head does not contain node {hint!r}")
    raise UnsupportedModelError(
        "no pixel-wise classifier head (1x1 Conv reaching a logits output through "
        f"{'/'.join(SKIPPED_OPS + SPATIAL_OPS + JOIN_OPS)}) was found; " + "; ".join(failures)
    )


def resize_mode(node: ir.Node) -> str:
    """The PyTorch name of a Resize node's interpolation (``bilinear``, ``nearest``, ...)."""
    mode = attribute(node, "mode", "nearest")
    return _TORCH_MODES.get(mode, mode)


def _head_of_output(output: ir.Value) -> Head:
    if output.shape is not None and output.shape.rank() not in (3, 4):
        producer = output.producer()
        made_by = f" (made by {producer.op_type} {producer.name!r}{_before(producer)})" if producer else ""
        raise _Stop(f"rank {output.shape.rank()}{made_by}, not a per-pixel map")
    logits = output
    while (node := logits.producer()) is not None and node.op_type in LAYOUT_OPS:
        logits = node.inputs[0]
    branches, chain, head_logits, join = _walk_to_convs(logits)
    classes = {_num_classes(b.conv) for b in branches}
    if len(classes) != 1 or None in classes:
        raise _Stop(f"the classifier convs have unknown or different class counts {sorted(map(str, classes))}")
    return Head(branches, join, head_logits, chain, logits, output, classes.pop())


def _walk_to_convs(value: ir.Value) -> tuple[list[Branch], list[ir.Node], ir.Value, ir.Node | None]:
    """Walk back from ``value`` to the classifier conv(s).

    Returns the branches, the spatial ops between the head logits and ``value`` (forward
    order), the head-logits value (the conv output or the join output) and the join node.
    """
    chain: list[ir.Node] = []
    seen: list[str] = []
    while True:
        node = value.producer()
        if node is None:
            raise _Stop(f"reached the graph input {value.name!r}{_after(seen)}")
        if _is_classifier_conv(node):
            return [Branch(node, [])], chain[::-1], value, None
        if node.op_type in SKIPPED_OPS:
            value = node.inputs[0]
        elif node.op_type in SPATIAL_OPS and _is_spatial(node):
            chain.append(node)
            value = node.inputs[0]
        elif node.op_type in JOIN_OPS and node.domain == "":
            branches = []
            for operand in node.inputs:
                if operand is None or _is_constant(operand):
                    continue  # a constant addend is a bias
                sub_branches, sub_chain, _, _ = _walk_to_convs(operand)
                branches += [dataclasses.replace(b, path=b.path + sub_chain) for b in sub_branches]
            if not branches:
                raise _Stop(f"{node.op_type} {node.name!r} adds only constants{_after(seen)}")
            return branches, chain[::-1], value, node
        else:
            raise _Stop(f"stopped at {node.op_type} {node.name!r}{_after(seen)}{_before(node)}")
        seen.append(node.op_type)


def _after(seen: list[str]) -> str:
    return f" (after {' <- '.join(seen)})" if seen else ""


def _before(node: ir.Node, depth: int = 3) -> str:
    """The ops feeding ``node`` along its first input, for the error message."""
    ops = []
    while len(ops) < depth and node.inputs and node.inputs[0] is not None:
        node = node.inputs[0].producer()
        if node is None:
            break
        ops.append(node.op_type)
    return f", fed by {' <- '.join(ops)}" if ops else ""


def attribute(node: ir.Node, name: str, default: object) -> object:
    """The value of a node attribute, ``default`` when it is not set."""
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


def _is_constant(value: ir.Value) -> bool:
    producer = value.producer()
    return value.const_value is not None or (producer is not None and producer.op_type == "Constant")


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The contents of a constant input (initializer or Constant node), else None."""
    if value is None:
        return None
    tensor = value.const_value
    producer = value.producer()
    if tensor is None and producer is not None and producer.op_type == "Constant":
        attr = producer.attributes.get("value")
        tensor = attr.value if attr is not None else None
    return None if tensor is None else tensor.numpy()


def _is_spatial(node: ir.Node) -> bool:
    """Whether a Resize/Slice acts on the spatial axes only (so it can be mirrored on psi)."""
    spatial = {2, 3, -2, -1}
    inputs = list(node.inputs) + [None] * 5
    if node.op_type == "Resize":
        axes = attribute(node, "axes", None)
        if axes is not None:
            return set(axes) <= spatial
        scales = constant_array(inputs[2])
        return scales is None or scales.size == 0 or list(scales[:2]) == [1.0, 1.0]
    if inputs[3] is not None:
        axes = constant_array(inputs[3])
    else:
        starts = constant_array(inputs[1])
        axes = None if starts is None else range(starts.size)
    return axes is not None and {int(a) for a in axes} <= spatial


def _is_classifier_conv(node: ir.Node) -> bool:
    """A 2-D Conv with a 1x1 kernel, group 1, stride 1 and no padding."""
    if node.op_type != "Conv" or node.domain != "" or len(node.inputs) < 2:
        return False
    weight = node.inputs[1]
    kernel = attribute(node, "kernel_shape", None)
    if kernel is None and weight is not None and weight.shape is not None and weight.shape.rank() == 4:
        kernel = list(weight.shape)[2:]
    ones = [1, 1]
    return (
        list(kernel or []) == ones
        and attribute(node, "group", 1) == 1
        and list(attribute(node, "strides", ones)) == ones
        and not any(attribute(node, "pads", [0]))
    )


def _num_classes(conv: ir.Node) -> int | None:
    for value, axis in ((conv.inputs[1], 0), (conv.outputs[0], 1)):
        if value is not None and value.shape is not None and value.shape.rank() == 4:
            dim = value.shape[axis]
            if isinstance(dim, int):
                return dim
    return None
