"""Penultimate-layer PGN maps: the gradient w.r.t. the conv before the classifier.

Head (ONNX ops): ``Conv_k -> [BatchNormalization] -> [Relu | LeakyRelu | Clip] -> [Dropout /
Identity] -> the 1x1 classifier``. Per classifier pixel the gradient w.r.t. the conv's kernel
is the outer product ``s (x) P`` with ``s_f = (K^T g)_f * act'(z_f) * scale_f`` (``K`` the
classifier weights, ``g`` the class factor of the form and label, ``z`` the activation's input,
``scale_f = gamma_f / sqrt(var_f + eps)`` for the trained kernel before the BN fold, 1 for the
kernel as it is in the graph) and ``P`` the conv's input patch (its padding, dilation and
stride), so the p-norm is ``||s||_p * (window sum of ||psi2||_p^p)^(1/p)``
(``docs/penultimate.md``).

The graph computes ``K^T g`` as a MatMul of the constant ``scale * K^T`` (E x C) with ``g``
flattened over the pixels, ``act'`` as a mask read on ``psi``, ``sum_f |s_f|^p`` as a channel sum,
and the window sum as a pooling of the one-channel map ``sum_e |psi2_e|^p`` (the last layer's
window sum for k x k classifiers): no unfold of E2 x k x k values. The class factor,
``|psi2|^p`` and the powers are shared with the last layer's maps.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from pgn_deploy.contract import UnsupportedModelError, check_weights
from pgn_deploy.graft.head import SKIPPED_OPS, Head, Window, attribute, constant_array

if TYPE_CHECKING:
    from pgn_deploy.graft.pgn_subgraph import _PGNGraph

ACTIVATION_OPS = ("Relu", "LeakyRelu", "Clip")
FOLD_RTOL = 1e-5


@dataclasses.dataclass(frozen=True)
class BatchNormFold:
    """A BatchNorm that the exporter folded into the conv before it: ``kernel`` is the folded
    kernel (E x E2 x k x k, ``W * scale``) as it appears in the graph, ``scale`` the factor
    ``gamma / sqrt(var + eps)`` (E). The graft recognises the conv by its kernel."""

    kernel: np.ndarray
    scale: np.ndarray


@dataclasses.dataclass
class PenultimateHead:
    """The conv before the classifier and what its gradient needs.

    ``pre_activation``: ``z`` (N x E x h x w); ``features``: ``psi``, the classifier's input;
    ``activation``: the activation node or ``None``
    (identity); ``scale``: the per-channel factor applied to ``s`` (``None``: 1);
    ``classifier_weight``: ``dphi/dpsi`` (C x E): ``K``, times the per-class factor ``a`` of the
    affine ops after the classifier when there are any.
    """

    conv: ir.Node
    batch_norm: ir.Node | None
    activation: ir.Node | None
    pre_activation: ir.Value
    features: ir.Value
    classifier_weight: np.ndarray
    scale: np.ndarray | None
    info: dict[str, Any]

    @property
    def inputs(self) -> ir.Value:
        """psi2: the conv's input, N x E2 x H2 x W2."""
        return self.conv.inputs[0]


def locate_penultimate(head: Head, folds: Sequence[BatchNormFold] = (), weights: str = "trained") -> PenultimateHead:
    """The penultimate conv of ``head`` and its BN factor for ``weights`` (see the module doc).

    ``trained`` (default): the gradient w.r.t. the kernel before the BN fold: the factor is read
    from a kept BatchNormalization node or from the exporter's ``folds``; when the BN was folded
    and no fold matches, the graph's kernel is used and ``info["weights"]`` says ``graph``.
    Raises :class:`UnsupportedModelError` naming the reason for heads of another shape.
    """
    check_weights(weights)
    if len(head.branches) != 1 or head.branches[0].path:
        raise UnsupportedModelError(
            "penultimate-layer maps need one classifier conv fed directly by the penultimate block; "
            f"this head has {len(head.branches)} branches" + (" with resized inputs" if head.branches[0].path else ""))
    branch = head.branches[0]
    if branch.linear or not branch.window.pointwise:
        raise UnsupportedModelError(
            "penultimate-layer maps need a 1x1 classifier conv; this head's classifier is "
            + ("a per-token MatMul/Gemm" if branch.linear else f"a {'x'.join(map(str, branch.window.kernel))} conv"))
    classifier = branch.conv
    kernel = constant_array(classifier.inputs[1])
    if kernel is None:
        raise UnsupportedModelError(f"the classifier conv {classifier.name!r} has no constant weights")
    value = _skip(classifier.inputs[0])
    activation = value.producer()
    if activation is not None and activation.op_type not in ACTIVATION_OPS:
        activation = None
    if activation is not None:
        _activation_bounds(activation)  # refuses a Clip with non-constant bounds
        value = activation.inputs[0]
    pre_activation = value
    producer = _skip(value).producer()
    batch_norm = producer if producer is not None and producer.op_type == "BatchNormalization" else None
    conv = _skip(batch_norm.inputs[0]).producer() if batch_norm is not None else producer
    if conv is None or conv.op_type != "Conv" or conv.domain != "":
        found = "the graph input" if conv is None else f"{conv.op_type} {conv.name!r}"
        raise UnsupportedModelError(
            "penultimate-layer maps need Conv -> [BatchNormalization] -> [Relu/LeakyRelu/Clip] -> [Dropout] -> "
            f"classifier; before the classifier's activation there is {found}")
    _check_conv(conv)
    scale, info = _bn_scale(conv, batch_norm, folds, weights)
    info |= {"conv": conv.name, "activation": activation.op_type if activation is not None else "identity",
             "inputs": conv.inputs[0].name, "pre_activation": pre_activation.name,
             "scale": None if scale is None else [float(v) for v in scale]}
    if activation is not None and activation.op_type == "LeakyRelu":
        info["negative_slope"] = float(attribute(activation, "alpha", 0.01))
    elif activation is not None:
        info["bounds"] = [float(b) if np.isfinite(b) else None for b in _activation_bounds(activation)]
    classifier_weight = kernel.reshape(kernel.shape[0], -1).astype(np.float64)
    if head.scale is not None:  # per-class affine after the classifier: dphi/dpsi = diag(a) K
        classifier_weight = classifier_weight * np.asarray(head.scale, np.float64)[:, None]
    return PenultimateHead(conv, batch_norm, activation, pre_activation, branch.features, classifier_weight, scale,
                           info)


def _skip(value: ir.Value) -> ir.Value:
    """Walk back over value-preserving ops (Identity, Cast, Dropout)."""
    while (node := value.producer()) is not None and node.op_type in SKIPPED_OPS:
        value = node.inputs[0]
    return value


def _check_conv(conv: ir.Node) -> None:
    weight = conv.inputs[1]
    if attribute(conv, "group", 1) != 1:
        raise UnsupportedModelError(
            f"the penultimate conv {conv.name!r} is grouped: its gradient is not one outer product")
    if attribute(conv, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedModelError(f"the penultimate conv {conv.name!r} uses auto_pad; re-export with explicit pads")
    if weight is None or weight.shape is None or weight.shape.rank() != 4:
        raise UnsupportedModelError(f"the penultimate conv {conv.name!r} has no 2-D kernel of known shape")


def _bn_scale(
    conv: ir.Node, batch_norm: ir.Node | None, folds: Sequence[BatchNormFold], weights: str
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The factor on ``s`` and the metadata record of where it came from."""
    if batch_norm is not None:
        gamma, var = constant_array(batch_norm.inputs[1]), constant_array(batch_norm.inputs[4])
        if gamma is None or var is None:
            raise UnsupportedModelError(f"BatchNormalization {batch_norm.name!r} has no constant scale/variance")
        eps = float(attribute(batch_norm, "epsilon", 1e-5))
        scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        return scale, {"batch_norm": "kept", "weights": "trained", "scale_from": "graph"}
    kernel = constant_array(conv.inputs[1])
    fold = next((f for f in folds if kernel is not None and _same_kernel(f.kernel, kernel)), None)
    if fold is None:  # no BN, or one folded by an exporter that did not say so
        return None, {"batch_norm": "not in the graph", "weights": "graph", "scale_from": "none"}
    if weights == "graph":
        return None, {"batch_norm": "folded", "weights": "graph", "scale_from": "none"}
    return np.asarray(fold.scale, np.float64), {"batch_norm": "folded", "weights": "trained", "scale_from": "exporter"}


def _same_kernel(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.allclose(a, b, rtol=FOLD_RTOL, atol=1e-7 * float(np.abs(a).max(initial=0.0)))


def _activation_bounds(node: ir.Node) -> tuple[float, float]:
    """``(low, high)`` where the activation's derivative is 1 (Clip's bounds; ReLU: (0, inf))."""
    if node.op_type != "Clip":
        return 0.0, np.inf
    inputs = list(node.inputs) + [None, None]
    bounds = []
    for value, default in ((inputs[1], -np.inf), (inputs[2], np.inf)):
        if value is None:
            bounds.append(default)
            continue
        array = constant_array(value)
        if array is None:
            raise UnsupportedModelError(f"Clip {node.name!r} has non-constant bounds")
        bounds.append(float(array))
    return bounds[0], bounds[1]


# --------------------------------------------------------------------------- the maps
def penultimate_maps(
    graph: _PGNGraph, penultimate: PenultimateHead, probs: ir.Value, gt: ir.Value | None
) -> list[ir.Value]:
    """The penultimate maps of ``graph.spec`` (labels outer, p inner), N x 1 x h x w float32 at
    the classifier's resolution, built with ``graph``'s shared helpers."""
    return [_map(graph, penultimate, probs, label, p, gt) for label in graph.spec.labels for p in graph.spec.p]


def _map(
    graph: _PGNGraph, head: PenultimateHead, probs: ir.Value, label: str, p: float, gt: ir.Value | None
) -> ir.Value:
    b = graph.b
    s = b.memo(("penultimate_s", label), lambda: _signal(graph, head, probs, label, gt))
    channels = head.classifier_weight.shape[1]
    product = b.op("Mul", [graph._p_sum(s, p, nonneg=False, channels=channels), _window_sum(graph, head, p)])
    pgn = graph._power(product, 1.0 / p)
    if graph.spec.form == "paper" and label == "uni":  # g = (C - 1)/C * S: linear in s
        pgn = b.op("Mul", [pgn, b.const((graph.num_classes - 1) / graph.num_classes)])
    return pgn


def _signal(graph: _PGNGraph, head: PenultimateHead, probs: ir.Value, label: str, gt: ir.Value | None) -> ir.Value:
    """``s = (scale * K^T) g`` masked by ``act'(z)``: N x E x (h w), flat over the pixels.

    A MatMul of the constant E x C matrix with ``g`` seen as N x C x (h w), not a 1 x 1 Conv:
    ONNX Runtime's CPU provider runs a Conv in its blocked channel layout and inserts a reorder
    of the E x h x w result (and of every tensor multiplied with it) back to NCHW."""
    b = graph.b
    g = graph.flat(_class_factor(graph, probs, label, gt))
    transposed = head.classifier_weight.T.astype(np.float64)
    if head.scale is not None:
        transposed = transposed * head.scale[:, None]
    s = b.op("MatMul", [b.const(transposed), g])
    if head.activation is None:
        return s
    if head.activation.op_type == "LeakyRelu":
        return b.op("Mul", [s, b.memo(("penultimate_slope",), lambda: graph.flat(_leaky_slope(graph, head)))])
    # a float mask and a Mul: ONNX Runtime's CPU Where took 1.5 ms over 256 x 64 x 128, a Mul 0.3 ms
    mask = b.memo(("penultimate_mask",), lambda: graph.flat(b.op(
        "Cast", [_inside(graph, head)], {"to": int(ir.DataType.FLOAT)})))
    return b.op("Mul", [s, mask])


def _inside(graph: _PGNGraph, head: PenultimateHead) -> ir.Value:
    """Where the activation's derivative is 1: ``low < z < high``, read on the activation's
    output ``psi`` (the classifier's input, which the last layer's maps read too): ``psi =
    clip(z, low, high)`` lies strictly inside exactly where ``z`` does. Reading ``z`` instead
    would keep ONNX Runtime from fusing the conv with its activation."""
    b = graph.b
    low, high = _activation_bounds(head.activation)
    psi = b.to_float(head.features)
    inside = b.op("Greater", [psi, b.const(low)])
    if np.isfinite(high):
        inside = b.op("And", [inside, b.op("Less", [psi, b.const(high)])])
    return inside


def _leaky_slope(graph: _PGNGraph, head: PenultimateHead) -> ir.Value:
    """LeakyRelu's derivative, 1 where ``z > 0`` else ``alpha``; for ``alpha > 0`` read on
    ``psi`` (positive exactly where ``z`` is), else on ``z``."""
    b = graph.b
    alpha = float(attribute(head.activation, "alpha", 0.01))
    x = b.to_float(head.features if alpha > 0 else head.pre_activation)
    return b.op("Where", [b.op("Greater", [x, b.const(0.0)]), b.const(1.0), b.const(alpha)])


def _class_factor(graph: _PGNGraph, probs: ir.Value, label: str, gt: ir.Value | None) -> ir.Value:
    """The class factor ``g`` (N x C x h x w) as a tensor: paper ``uni`` without its constant
    ``(C - 1)/C`` (applied to the map); exact ``oh``/``gt`` with ``S_t - 1`` written as minus
    the sum of the other classes (no cancellation when ``S_t`` is near 1)."""
    b = graph.b
    if graph.spec.form == "paper":
        return probs if label == "uni" else graph._off_target(probs, label, gt)
    if label == "uni":
        return b.memo(("centered", probs), lambda: b.op("Sub", [probs, b.const(1.0 / graph.num_classes)]))
    off_target = graph._off_target(probs, label, gt)
    rest = b.memo(("rest", label), lambda: graph._channel_sum(off_target, graph.num_classes))
    mask = graph._target_mask(label, probs, gt)
    return b.memo(("class_factor", label), lambda: b.op("Where", [mask, b.op("Neg", [rest]), probs]))


def _window_sum(graph: _PGNGraph, head: PenultimateHead, p: float) -> ir.Value:
    """``||P||_p^p``: the conv's window sum of ``sum_e |psi2_e|^p`` (N x 1 x h x w)."""
    from pgn_deploy.graft.pgn_subgraph import NONNEGATIVE_OPS

    b = graph.b

    def make() -> ir.Value:
        psi2 = b.to_float(head.inputs)
        producer = head.inputs.producer()
        nonneg = producer is not None and producer.op_type in NONNEGATIVE_OPS
        shape = head.inputs.shape
        channels = shape[1] if shape is not None and shape.rank() == 4 and isinstance(shape[1], int) else None
        per_pixel = graph._p_sum(psi2, p, nonneg, channels, like=head.inputs)
        window = Window.of(head.conv)
        return per_pixel if window.pointwise else graph._window_sum(per_pixel, window)

    return b.memo(("window_sum", p), make)
