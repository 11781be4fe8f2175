"""Find the pixel-wise classifier head of an ONNX segmentation graph.

The head is the classifier -- a 2-D ``Conv`` (any kernel size, padding and dilation; group 1,
stride 1), several of them summed by Add/Sum, or a per-token ``MatMul``/``Gemm`` with a constant
weight over the last axis -- whose output reaches a logits output of the graph only through ops
that do not mix pixels:

* value-preserving ops, skipped: ``Identity``, ``Cast``, ``Dropout``;
* spatial ops, mirrored later on the PGN maps: ``Resize`` (any mode) and ``Slice`` on the
  spatial axes only;
* per-class affine ops (``phi = a * (K psi) + b``): ``Mul``/``Div``/``Add``/``Sub`` by a constant
  that is one value or one value per class, and ``BatchNormalization`` with constant
  statistics; their factors ``a`` scale the class factor of the gradient (``g' = a * g``);
* joins: ``Add``/``Sum`` of several 1x1-conv branches (constant addends count as bias); a
  branch may be resized or sliced before the join;
* for a per-token head, the layout ops between the tokens (N x T x C or N x H x W x C) and the
  N x C x h x w logits (``Transpose``, ``Reshape``, ``Squeeze``, ``Unsqueeze``, ``Flatten``,
  ``Slice`` of a class or register token): mirrored on the one-channel maps;
* at the very end, layout ops (the tensor before them is taken as the N x C x H x W logits)
  and ``Softmax``/``LogSoftmax``/``ArgMax`` over the class axis (looked through: the graft
  uses the logits before them).

The walk starts at every graph output in order and the first output that leads to a head
wins (torchvision's ``out`` comes before ``aux``). ``hint`` (a node name: one of the
classifiers, the join, or one of the mirrored ops) restricts the search to the head
containing that node. A refusal names the op that stopped the walk and the rule it broke.
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
AFFINE_OPS = ("Mul", "Div", "Add", "Sub", "BatchNormalization")
LAYOUT_OPS = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten")
CLASS_AXIS_OPS = ("Softmax", "LogSoftmax", "ArgMax")
LINEAR_OPS = ("MatMul", "Gemm")
CHANNEL_AXES = (1, -3)
MIN_OPSET = 13
_TORCH_MODES = {"linear": "bilinear", "cubic": "bicubic", "nearest": "nearest"}


@dataclasses.dataclass(frozen=True)
class Window:
    """The input window of one conv output pixel: a Conv's ``kernel`` (kh, kw), ONNX ``pads``
    (top, left, bottom, right), ``dilations``, ``strides`` and ``auto_pad``."""

    kernel: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    auto_pad: str = "NOTSET"
    strides: tuple[int, int] = (1, 1)

    @classmethod
    def of(cls, node: ir.Node) -> Window:
        """The window of the Conv ``node`` (kernel from ``kernel_shape`` or its weight's shape)."""
        weight = node.inputs[1].shape if len(node.inputs) > 1 and node.inputs[1] is not None else None
        kernel = attribute(node, "kernel_shape", None) or (list(weight)[2:] if weight is not None else [1, 1])
        return cls(
            kernel=tuple(int(k) for k in kernel),
            pads=tuple(int(p) for p in attribute(node, "pads", [0, 0, 0, 0])),
            dilations=tuple(int(d) for d in attribute(node, "dilations", [1, 1])),
            auto_pad=str(attribute(node, "auto_pad", "NOTSET")),
            strides=tuple(int(s) for s in attribute(node, "strides", [1, 1])),
        )

    @property
    def pointwise(self) -> bool:
        """A 1x1 kernel without padding or stride: the window is the pixel itself."""
        return (self.kernel == (1, 1) and not any(self.pads) and self.auto_pad in ("NOTSET", "VALID")
                and self.strides == (1, 1))


@dataclasses.dataclass
class Branch:
    """One classifier (a Conv, or a per-token MatMul/Gemm); ``path`` holds the spatial ops
    between its output and the join (forward order), which the PGN subgraph applies to the
    conv's input ``psi`` as well. ``window``: the Conv's kernel geometry; ``layout``: for a
    per-token head, the ops from its output (N x T x C) to the N x C x h x w logits (forward
    order); ``channels``: E, read from the weight (``None`` when unknown)."""

    conv: ir.Node
    path: list[ir.Node]
    window: Window = Window()
    layout: list[ir.Node] = dataclasses.field(default_factory=list)
    channels: int | None = None

    @property
    def features(self) -> ir.Value:
        """psi: the classifier's input, N x E x h_i x w_i (Conv) or N x T x E (per-token)."""
        return self.conv.inputs[0]

    @property
    def linear(self) -> bool:
        """Whether this is a per-token MatMul/Gemm head."""
        return self.conv.op_type in LINEAR_OPS


@dataclasses.dataclass
class Head:
    """The classifier head in an ``onnx_ir`` graph.

    ``head_logits``: the summed classifier output at the feature resolution (N x C x h x w);
    ``chain``: the spatial ops from ``head_logits`` to ``logits`` (forward order);
    ``logits``: the model's N x C x H x W logits after its own resize; ``output``: the graph
    output that the logits reach; ``affine``: every per-class affine node of the head and
    ``post_affine`` those after ``head_logits`` (forward order: the PGN subgraph applies them
    to ``head_logits`` to get the logits the softmax sees); ``scale``: the per-class factor
    ``a`` of all affine nodes (C values, ``None`` when there is none); ``passed``: the
    Softmax/LogSoftmax/ArgMax nodes after ``logits``.
    """

    branches: list[Branch]
    join: ir.Node | None
    head_logits: ir.Value
    chain: list[ir.Node]
    logits: ir.Value
    output: ir.Value
    num_classes: int
    affine: list[ir.Node] = dataclasses.field(default_factory=list)
    post_affine: list[ir.Node] = dataclasses.field(default_factory=list)
    scale: np.ndarray | None = None
    passed: list[ir.Node] = dataclasses.field(default_factory=list)

    @property
    def nodes(self) -> list[ir.Node]:
        """Every node of the head: convs, branch ops, the join, the chain and the affine ops."""
        nodes = [n for b in self.branches for n in (b.conv, *b.path, *b.layout)]
        return nodes + ([self.join] if self.join is not None else []) + self.chain + self.affine

    def info(self) -> HeadInfo:
        """The :class:`~pgn_deploy.contract.HeadInfo` written into the metadata."""
        resize = [n for n in self.chain if n.op_type == "Resize"]
        windows = [b.window for b in self.branches] if not all(b.window.pointwise for b in self.branches) else []
        return HeadInfo(
            conv_nodes=[b.conv.name for b in self.branches],
            features=[b.features.name for b in self.branches],
            logits=self.logits.name,
            head_logits=self.head_logits.name,
            logits_output=self.output.name,
            resize="+".join(resize_mode(n) for n in resize) or "none",
            align_corners=any(
                attribute(n, "coordinate_transformation_mode", "half_pixel") == "align_corners" for n in resize),
            feature_resize=[
                "+".join(resize_mode(n) for n in b.path if n.op_type == "Resize") or "none"
                for b in self.branches
            ],
            kind="linear" if any(b.linear for b in self.branches) else "conv",
            kernel=[list(w.kernel) for w in windows],
            pads=[list(w.pads) for w in windows],
            dilations=[list(w.dilations) for w in windows],
            affine=[n.name for n in self.affine],
            class_scale=None if self.scale is None else [float(v) for v in self.scale],
            passed=[n.name for n in self.passed],
            layout=[n.name for b in self.branches for n in b.layout],
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
        convs = [n.name for n in graph if n.op_type == "Conv" and n.domain == ""]
        raise BadInputError(f"--head {hint!r}: no node of that name; Conv nodes: {', '.join(convs) or 'none'}")
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
        "no pixel-wise classifier head (a Conv or per-token MatMul reaching a logits output through "
        "pixel-wise ops) was found; " + "; ".join(failures)
    )


def resize_mode(node: ir.Node) -> str:
    """The PyTorch name of a Resize node's interpolation (``bilinear``, ``nearest``, ...)."""
    mode = attribute(node, "mode", "nearest")
    return _TORCH_MODES.get(mode, mode)


@dataclasses.dataclass
class _Walk:
    """What a backward walk collected: branches, spatial ``chain`` (forward order), the
    head-logits value, the join, and the affine nodes (forward order) with the class axis of
    each (1: N x C x h x w, -1: tokens N x T x C)."""

    branches: list[Branch]
    chain: list[ir.Node]
    head_logits: ir.Value
    join: ir.Node | None
    affine: list[tuple[ir.Node, int]]
    post_affine: list[ir.Node]


def _head_of_output(output: ir.Value) -> Head:
    if output.shape is not None and output.shape.rank() not in (3, 4):
        producer = output.producer()
        made_by = f" (made by {producer.op_type} {producer.name!r}{_before(producer)})" if producer else ""
        raise _Stop(f"rank {output.shape.rank()}{made_by}, not a per-pixel map")
    logits, passed = output, []
    while (node := logits.producer()) is not None and (node.op_type in LAYOUT_OPS or _on_class_axis(node)):
        if node.op_type in CLASS_AXIS_OPS:
            passed.append(node)
        logits = node.inputs[0]
    walk = _walk_to_classifiers(logits)
    classes = {_num_classes(b) for b in walk.branches}
    if len(classes) != 1 or None in classes:
        raise _Stop(f"the classifiers have unknown or different class counts {sorted(map(str, classes))}")
    num_classes = classes.pop()
    scale = _affine_scale(walk.affine, num_classes)
    return Head(walk.branches, walk.join, walk.head_logits, walk.chain, logits, output, num_classes,
                [n for n, _ in walk.affine], walk.post_affine, scale, passed[::-1])


def _on_class_axis(node: ir.Node) -> bool:
    """A Softmax/LogSoftmax/ArgMax over axis 1 of a 4-D tensor (the classes)."""
    if node.op_type not in CLASS_AXIS_OPS or node.domain != "":
        return False
    default = 0 if node.op_type == "ArgMax" else -1
    axis = attribute(node, "axis", default)
    rank = node.inputs[0].shape.rank() if node.inputs[0].shape is not None else None
    return axis == 1 or (axis == -3 and rank == 4)


def _walk_to_classifiers(value: ir.Value) -> _Walk:
    """Walk back from ``value`` (N x C x H x W) to the classifier(s); see :class:`_Walk`."""
    chain: list[ir.Node] = []
    affine: list[tuple[ir.Node, int]] = []
    seen: list[str] = []
    while True:
        node = value.producer()
        if node is None:
            raise _Stop(f"reached the graph input {value.name!r}{_after(seen)}")
        if node.op_type == "Conv" and node.domain == "":
            return _Walk([_conv_branch(node)], chain[::-1], value, None, affine[::-1], _post(affine))
        if node.op_type in SKIPPED_OPS:
            value = node.inputs[0]
        elif node.op_type in SPATIAL_OPS and _is_spatial(node):
            chain.append(node)
            value = node.inputs[0]
        elif node.op_type in JOIN_OPS and node.domain == "" and _join_operands(node):
            operands = _join_operands(node)
            walks = [_walk_to_classifiers(operand) for operand in operands]
            if len(walks) > 1 and any(w.affine for w in walks):
                raise _Stop(f"{node.op_type} {node.name!r} joins branches of which one has a per-class scale "
                            "of its own (the gradient is then no single outer product)")
            branches = [dataclasses.replace(b, path=b.path + w.chain) for w in walks for b in w.branches]
            inner = [a for w in walks for a in w.affine]
            return _Walk(branches, chain[::-1], value, node, inner + affine[::-1], _post(affine))
        elif (operand := affine_operand(node)) is not None:
            affine.append((node, 1))
            value = operand
        elif node.op_type in (*LAYOUT_OPS, *LINEAR_OPS, "Slice") and _reaches_matmul(value):
            branch, token_affine = _linear_branch(value, seen)
            return _Walk([branch], chain[::-1], value, None, token_affine + affine[::-1], _post(affine))
        else:
            raise _Stop(f"stopped at {node.op_type} {node.name!r}{_after(seen)}{_before(node)}: "
                        "not a pixel-wise op (Resize, spatial Slice, per-class affine, Add of branches)")
        seen.append(node.op_type)


def _post(affine: list[tuple[ir.Node, int]]) -> list[ir.Node]:
    """The affine nodes met on the way back from the logits (collected backwards) in forward
    order: they come after the head logits, so the PGN subgraph applies them itself."""
    return [n for n, _ in affine[::-1]]


def _join_operands(node: ir.Node) -> list[ir.Value]:
    """The non-constant operands of an Add/Sum (constant addends are bias)."""
    return [v for v in node.inputs if v is not None and not _is_constant(v)]


def affine_operand(node: ir.Node) -> ir.Value | None:
    """The tensor operand of a per-class affine node (``x * c``, ``x / c``, ``x - c``, ``c - x``,
    BatchNormalization with constant statistics), else None."""
    if node.domain != "" or node.op_type not in AFFINE_OPS:
        return None
    if node.op_type == "BatchNormalization":
        stats_constant = all(v is not None and _is_constant(v) for v in node.inputs[1:5])
        return node.inputs[0] if stats_constant and len(node.outputs) == 1 else None
    first, second = node.inputs[0], node.inputs[1]
    if _is_constant(second) and not _is_constant(first):
        return first
    if node.op_type in ("Mul", "Sub") and _is_constant(first) and not _is_constant(second):
        return second
    return None


def _affine_factor(node: ir.Node, axis: int, num_classes: int) -> np.ndarray:
    """The per-class factor (C values) of one affine node; raises :class:`_Stop` when the
    constant is not one value or one value per class along the class ``axis``."""
    if node.op_type == "BatchNormalization":
        scale, _, _, var = (constant_array(v).astype(np.float64) for v in node.inputs[1:5])
        return scale / np.sqrt(var + float(attribute(node, "epsilon", 1e-5)))
    first_is_tensor = not _is_constant(node.inputs[0])
    constant = constant_array(node.inputs[1] if first_is_tensor else node.inputs[0]).astype(np.float64)
    target = (1, num_classes, 1, 1) if axis == 1 else (num_classes,)
    try:
        per_class = np.broadcast_to(constant, target).reshape(-1) if constant.ndim <= len(target) else None
    except ValueError:
        per_class = None
    if per_class is None:
        raise _Stop(f"{node.op_type} {node.name!r} uses a constant of shape {list(constant.shape)}: "
                    "not one value or one value per class")
    if node.op_type == "Mul":
        return per_class.copy()
    if node.op_type == "Div":
        return 1.0 / per_class
    return np.full(num_classes, 1.0 if first_is_tensor or node.op_type == "Add" else -1.0)


def _affine_scale(affine: list[tuple[ir.Node, int]], num_classes: int) -> np.ndarray | None:
    """The product of the affine nodes' factors, or None when every factor is 1."""
    scale = np.ones(num_classes)
    for node, axis in affine:
        scale = scale * _affine_factor(node, axis, num_classes)
    return None if np.all(scale == 1.0) else scale


def _conv_branch(node: ir.Node) -> Branch:
    """A Conv classifier as a branch; raises :class:`_Stop` for one the graft cannot score."""
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    shape = list(weight.shape) if weight is not None and weight.shape is not None else None
    if shape is None or len(shape) != 4:
        raise _Stop(f"Conv {node.name!r} is not a 2-D convolution with a known weight shape")
    group = attribute(node, "group", 1)
    if group != 1:
        raise _Stop(f"the classifier Conv {node.name!r} is grouped (group={group}): its gradient per pixel is "
                    "not one outer product of the class factor and the input patch; grouped classifiers are not "
                    "supported")
    strides = list(attribute(node, "strides", [1, 1]))
    if strides != [1, 1]:
        raise _Stop(f"the classifier Conv {node.name!r} has strides {strides}: a strided classifier's output pixels "
                    "do not each see one input window the maps can be aligned with; only stride 1 is supported")
    return Branch(node, [], Window.of(node), channels=shape[1] if isinstance(shape[1], int) else None)


def _linear_branch(value: ir.Value, seen: list[str]) -> tuple[Branch, list[tuple[ir.Node, int]]]:
    """A per-token head ending in ``value`` (N x C x h x w): walk back through layout ops,
    token Slices, constant biases and per-class affine ops to a MatMul/Gemm with a constant
    weight over the last axis. Returns the branch and the affine nodes (forward order)."""
    layout: list[ir.Node] = []
    affine: list[tuple[ir.Node, int]] = []
    start = value
    while True:
        node = value.producer()
        if node is None:
            raise _Stop(f"reached the graph input {value.name!r}{_after(seen)}")
        if node.op_type in LINEAR_OPS and node.domain == "":
            return _matmul_branch(node, layout[::-1], start), affine[::-1]
        if node.op_type in LAYOUT_OPS or node.op_type == "Slice":
            layout.append(node)
            value = node.inputs[0]
        elif node.op_type in SKIPPED_OPS:
            value = node.inputs[0]
        elif node.op_type == "Add" and len(_join_operands(node)) == 1:
            value = _join_operands(node)[0]  # a constant bias
        elif (operand := affine_operand(node)) is not None and node.op_type != "BatchNormalization":
            affine.append((node, -1))
            value = operand
        else:
            raise _Stop(f"stopped at {node.op_type} {node.name!r}{_after(seen + [n.op_type for n in layout])}"
                        f"{_before(node)}: between a per-token classifier and the logits only layout ops, "
                        "token Slices and per-class affine ops are allowed")
        seen = seen + [node.op_type]


def _reaches_matmul(value: ir.Value) -> bool:
    """Whether layout ops, Slices, skipped ops and constant operands lead back from ``value`` to a
    MatMul/Gemm (a per-token head), so that the layout walk applies."""
    while (node := value.producer()) is not None:
        if node.op_type in LINEAR_OPS:
            return True
        if node.op_type in (*LAYOUT_OPS, *SKIPPED_OPS, "Slice"):
            value = node.inputs[0]
        elif node.op_type in ("Add", "Mul", "Div", "Sub") and affine_operand(node) is not None:
            value = affine_operand(node)
        elif node.op_type == "Add" and len(_join_operands(node)) == 1:
            value = _join_operands(node)[0]
        else:
            return False
    return False


def _matmul_branch(node: ir.Node, layout: list[ir.Node], head_logits: ir.Value) -> Branch:
    """A MatMul/Gemm over the last axis with a constant E x C weight as a branch."""
    weight = node.inputs[1]
    array = constant_array(weight)
    if array is None or array.ndim != 2:
        raise _Stop(f"{node.op_type} {node.name!r} has no constant 2-D weight: not a per-token classifier")
    trans_b = node.op_type == "Gemm" and attribute(node, "transB", 0) == 1
    if node.op_type == "Gemm" and (attribute(node, "transA", 0) or attribute(node, "alpha", 1.0) != 1.0):
        raise _Stop(f"Gemm {node.name!r} uses transA or alpha != 1: not supported as a per-token classifier")
    channels = array.shape[1] if trans_b else array.shape[0]
    if not layout:
        raise _Stop(f"{node.op_type} {node.name!r} feeds the logits with no layout op between: its last axis "
                    "would be the width, not the classes")
    if head_logits.shape is not None and head_logits.shape.rank() != 4:
        raise _Stop(f"the per-token head's layout ops end in rank {head_logits.shape.rank()}, not N x C x h x w")
    return Branch(node, [], Window(), layout, int(channels))


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


def _num_classes(branch: Branch) -> int | None:
    node = branch.conv
    if branch.linear:
        array = constant_array(node.inputs[1])
        trans_b = node.op_type == "Gemm" and attribute(node, "transB", 0) == 1
        return int(array.shape[0] if trans_b else array.shape[1])
    for value, axis in ((node.inputs[1], 0), (node.outputs[0], 1)):
        if value is not None and value.shape is not None and value.shape.rank() == 4:
            dim = value.shape[axis]
            if isinstance(dim, int):
                return dim
    return None
