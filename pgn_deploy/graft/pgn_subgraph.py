"""The PGN subgraph: every requested map from the classifier head, in one float32 subgraph.

Math (``docs/math.md``): per pixel, ``PGN = ||a * g||_p * (sum_i ||psi_i||_p^p [+ 1])^(1/p)``
with ``g`` the class factor of the form/label, ``a`` the per-class factor of the affine ops
after the classifier (1 when there are none) and ``psi_i`` the inputs of the classifier(s).
The graph computes it as ``root_p(G_p * F_p)`` with ``G_p = sum_h |a_h|^p |g_h|^p`` and
``F_p = sum_i sum_e |psi_ie|^p [+ 1]``: one root per map, no E x C tensor. For a k x k
classifier the gradient at a pixel is ``g (x) P`` with ``P`` the E x k x k input patch, so
``F_p`` is the window sum of ``sum_e |psi_e|^p`` over the kernel's window: a pooling (or a
ones-kernel Conv) of that one-channel map with the classifier's own pads and dilations. For a
per-token MatMul head, ``sum_e |psi_te|^p`` is taken over the last axis, broadcast to the
classifier's output shape and pushed through copies of the head's layout ops (Transpose,
Reshape, token Slice), then one channel is kept. Work is shared: the
softmax, ``|psi|``, ``|g|``, the argmax/one-hot masks and every ``F_p`` are computed once for
all (label, p) pairs. ``|x|^p`` is ``x`` for ``p = 1``, ``x * x`` for 2, Sqrt for 0.5, a square
or cube of a smaller shared power where one exists, ``exp(max(p ln x, -87))`` for other
``p < 1`` and Pow otherwise; every channel sum is a MatMul with a row of ones. ``paper``/``uni``
needs no class tensor at all: ``||g||_p = (C - 1)/C * ||S||_p`` (and ``||S||_1 = 1``).

Resolution ``feature``: the maps are computed at the classifier's resolution and each one is
resized on its own into its named N x 1 x H x W output: with ``upsample="matmul"`` (or
``"auto"``, the default, for a classifier map of at most ``MATMUL_MAX_ROWS`` rows) and a model
that resizes its logits with one linear Resize, by two MatMuls with interpolation matrices
shared by all maps (:mod:`pgn_deploy.graft.interpolation`), else by a copy of the
model's resize ops (same attributes; output size taken from the logits' runtime shape); no
channel stack (a Concat and a Split would copy every full-size map once more;
``benchmarks/NOTES.md``, attempt 3). Resolution
``output``: the softmax of the model's resized logits and ``psi`` pushed through the same resize
ops (E channels at H x W: costly, exact per output pixel).

The softmax and log-softmax over the classes are built from ReduceMax, Sub, Exp, a channel sum and
Div/Log rather than ``Softmax``/``LogSoftmax(axis=1)``: ONNX Runtime computes those over a
non-last axis by transposing to the last axis and back, about 4x the cost
(``benchmarks/NOTES.md``, attempt 5).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx_ir as ir

from pgn_deploy.contract import BASELINES, GT_INPUT, PRED, PGNSpec, UnsupportedModelError
from pgn_deploy.graft.graph_builder import FLOAT, GraphBuilder
from pgn_deploy.graft.head import Branch, Head, Window, affine_operand, attribute, constant_array
from pgn_deploy.graft.interpolation import MATMUL_MAX_ROWS, matmul_resizer
from pgn_deploy.graft.penultimate import PenultimateHead, penultimate_maps

# Ops whose output is never negative: when one of them makes psi, |psi| = psi and the Abs is
# skipped. (The probabilities are non-negative by construction and passed as such.)
NONNEGATIVE_OPS = ("Relu", "Sigmoid", "HardSigmoid", "Softmax", "Abs", "Exp", "Softplus")
# The smallest argument of Exp whose result is a normal float32 (exp(-87) = 1.6e-38).
EXP_FLOOR = -87.0
# Resize modes that keep a non-negative tensor non-negative (convex weights).
_CONVEX_MODES = ("linear", "nearest")


@dataclasses.dataclass
class PGNOutputs:
    """Names of what :func:`add_pgn_outputs` added to the graph."""

    maps: list[str]
    pred: str | None
    baselines: list[str]
    gt_input: str | None
    upsample: str
    class_logits: str


def add_pgn_outputs(
    graph: ir.Graph, head: Head, spec: PGNSpec, classifier_rows: int | None = None,
    penultimate: PenultimateHead | None = None,
) -> PGNOutputs:
    """Append the PGN subgraph of ``spec`` for ``head`` to ``graph`` and its outputs.

    ``head``'s values must carry dtype and shape where known (see ``graft``). Outputs: the maps
    ``pgn_<label>_p<p>`` (float32 N x 1 x H x W, or N x 1 x h x w with ``keep_feature_size``),
    ``pred`` (int32 N x H x W) and ``msp``/``entropy`` (float32 N x 1 x H x W) when asked; with
    label ``gt`` an int64 N x H x W graph input ``pgn_gt`` at the logits' output size.
    ``classifier_rows``: the head's height at the model's nominal input size, for
    ``upsample="auto"`` (``None``: unknown, the model's resize ops are used).
    ``penultimate``: the conv before the classifier, needed when ``spec.layers`` has
    ``penultimate`` (:mod:`pgn_deploy.graft.penultimate`); those maps follow the last layer's.
    Raises :class:`~pgn_deploy.contract.UnsupportedModelError` for ``resolution="output"`` on
    a k x k or per-token head whose logits are resized (the gradient per output pixel then
    mixes several input windows and has no closed form).
    """
    if spec.resolution == "output" and any(n.op_type == "Resize" for n in head.chain) and any(
            b.linear or not b.window.pointwise for b in head.branches):
        raise UnsupportedModelError(
            "resolution 'output' needs a 1x1 classifier when the logits are resized (a k x k or per-token "
            "head mixes several windows per output pixel); use resolution 'feature'")
    return _PGNGraph(GraphBuilder(graph), head, spec, classifier_rows, penultimate).build()


@dataclasses.dataclass
class _Features:
    """One branch's psi as float32 (at the working resolution for a pointwise conv, as the
    classifier sees it otherwise); ``nonneg``: known to be >= 0; ``channels``: E."""

    value: ir.Value
    nonneg: bool
    channels: int | None
    branch: Branch


class _PGNGraph:
    def __init__(
        self, builder: GraphBuilder, head: Head, spec: PGNSpec, classifier_rows: int | None,
        penultimate: PenultimateHead | None = None,
    ) -> None:
        self.b = builder
        self.penultimate = penultimate
        self.classifier_rows = classifier_rows
        self.head = head
        self.spec = spec
        self.num_classes = head.num_classes
        self.at_output = spec.resolution == "output"
        self.working = head.logits if self.at_output else head.head_logits  # N x C x h x w of the maps
        self.scale = None if head.scale is None else np.abs(head.scale)
        self.class_logits = self._class_logits()  # at the classifier's resolution

    # ------------------------------------------------------------------ outputs
    def build(self) -> PGNOutputs:
        gt = self._gt_input() if "gt" in self.spec.labels else None
        probs = self._probabilities(self.b.to_float(self.head.logits if self.at_output else self.class_logits))
        last = "last" in self.spec.layers
        features = [self._branch_features(branch) for branch in self.head.branches] if last else []
        maps = [
            self._pgn_map(probs, features, label, p, gt)
            for label in self.spec.labels
            for p in self.spec.p
        ] if last else []
        if "penultimate" in self.spec.layers:
            maps += penultimate_maps(self, self.penultimate, probs, gt)
        names = self.spec.map_names
        upsample = self._emit_maps(maps, names)
        pred = self._pred() if self.spec.pred else None
        baselines = self._baselines() if self.spec.baselines else []
        gt_name = GT_INPUT if gt is not None else None
        return PGNOutputs(names, pred, baselines, gt_name, upsample, self.class_logits.name)

    def _class_logits(self) -> ir.Value:
        """The logits the softmax sees at the classifier's resolution: the head logits with the
        per-class affine nodes after them applied (the graph's own tensors while they follow
        the head logits directly; copies once a resize came between: a per-class affine
        commutes with a resize whose weights sum to one)."""
        value = self.head.head_logits
        for node in self.head.post_affine:
            if value in node.inputs:
                value = node.outputs[0]
                continue
            operand = affine_operand(node)
            inputs = [value if v is operand else v for v in node.inputs]
            attributes = {name: attr.value for name, attr in node.attributes.items()}
            value = self.b.op(node.op_type, inputs, attributes)
        return value

    @property
    def _feature_sized(self) -> bool:
        return not self.at_output and self.spec.keep_feature_size

    def _emit_maps(self, maps: list[ir.Value], names: list[str]) -> str:
        """Emit each map as the output of its name; at resolution ``feature`` (not kept at the
        feature size) each one is first resized on its own (two MatMuls with interpolation
        matrices shared by all maps, or a copy of the model's resize ops), so that an output
        dropped later (``pgn-bench --maps``) leaves nodes of its own unused. Returns the
        upsampling used, ``"matmul"`` or ``"resize"``."""
        chain = [] if self.at_output or self.spec.keep_feature_size else self.head.chain
        like = self.head.head_logits if self._feature_sized else self.head.logits
        wanted = self.spec.upsample == "matmul" or (
            self.spec.upsample == "auto" and self.classifier_rows is not None
            and self.classifier_rows <= MATMUL_MAX_ROWS)
        resize = matmul_resizer(self.b, chain, self.head.head_logits, self.head.logits) if chain and wanted else None
        for value, name in zip(maps, names):
            self._emit(resize(value) if resize else self._mirror(chain, value), name, like)
        return "matmul" if resize else "resize"

    def _emit(self, value: ir.Value, name: str, like: ir.Value, dtype: ir.DataType = FLOAT,
              channels: int | None = 1) -> None:
        """Make ``value`` the graph output ``name`` (renamed: it is one of ours), typed ``dtype``
        N x ``channels`` x H x W (``None``: N x H x W) with ``like``'s dims."""
        value.name = self.b.claim(name)
        dims = list(like.shape) if like.shape is not None and like.shape.rank() == 4 else [None] * 4
        value.dtype = dtype
        value.shape = ir.Shape(
            [dims[0], dims[2], dims[3]] if channels is None else [dims[0], channels, dims[2], dims[3]])
        self.b.graph.outputs.append(value)

    def _pred(self) -> str:
        argmax = self.b.op("ArgMax", [self.b.to_float(self.head.logits)], {"axis": 1, "keepdims": 0})
        pred = self.b.op("Cast", [argmax], {"to": int(ir.DataType.INT32)})
        self._emit(pred, PRED, self.head.logits, ir.DataType.INT32, channels=None)
        return PRED

    def _baselines(self) -> list[str]:
        """``msp = 1 - max softmax``, ``entropy = -sum S log S`` (nats) from the output logits.
        The largest probability is ``1 / sum_c exp(z - max_c z)`` (its own term is exp(0) = 1),
        so msp needs no pass over the classes of its own."""
        logits = self.b.to_float(self.head.logits)
        log_probs = self._log_probabilities(logits)
        probs = self._probabilities(logits)
        max_prob = self.b.op("Reciprocal", [self._exp_sum(logits)])
        msp = self.b.op("Sub", [self.b.const(1.0), max_prob])
        plogp = self.b.op("Mul", [probs, log_probs])
        entropy = self.b.op("Neg", [self._channel_sum(plogp, self.num_classes, self.head.logits)])
        for value, name in zip((msp, entropy), BASELINES):
            self._emit(value, name, self.head.logits)
        return list(BASELINES)

    def _gt_input(self) -> ir.Value:
        """The ``pgn_gt`` input (int64 N x H x W), nearest-sampled to the working resolution."""
        dims = list(self.head.logits.shape) if self.head.logits.shape is not None else [None] * 4
        gt = ir.Value(name=self.b.claim(GT_INPUT), type=ir.TensorType(ir.DataType.INT64),
                      shape=ir.Shape([dims[0], dims[2], dims[3]]))
        self.b.graph.inputs.append(gt)
        if self.at_output:
            return gt
        # PyTorch's nearest, float32 like ATen: index = min(floor(i * float(in / out)), in - 1).
        zero, one = self.b.const(0, np.int64), self.b.const(1, np.int64)
        for axis in (1, 2):
            size_in, size_out = self.b.dim(gt, axis), self.b.dim(self.head.head_logits, axis + 1)
            scale = self.b.op("Div", [self.b.to_float(size_in), self.b.to_float(size_out)])
            index = self.b.to_float(self.b.op("Range", [zero, size_out, one]))
            index = self.b.op("Floor", [self.b.op("Mul", [index, scale])])
            index = self.b.op("Cast", [index], {"to": int(ir.DataType.INT64)})
            index = self.b.op("Min", [index, self.b.op("Sub", [size_in, one])])
            gt = self.b.op("Gather", [gt, index], {"axis": axis})
        return gt

    # ------------------------------------------------------------------ the maps
    def _pgn_map(self, probs: ir.Value, features: list[_Features], label: str, p: float,
                 gt: ir.Value | None) -> ir.Value:
        feature_sum = self._feature_sum(features, p)
        class_sum = self._class_sum(probs, label, p, gt)
        product = feature_sum if class_sum is None else self.b.op("Mul", [class_sum, feature_sum])
        pgn = self._power(product, 1.0 / p)
        if self.spec.form == "paper" and label == "uni":  # ||g||_p = (C - 1)/C * ||S||_p
            pgn = self.b.op("Mul", [pgn, self.b.const((self.num_classes - 1) / self.num_classes)])
        return pgn

    def _feature_sum(self, features: list[_Features], p: float) -> ir.Value:
        """``F_p = sum_i sum_e |psi_ie|^p [+ 1 with bias]`` (N x 1 x h x w), once per p."""

        def make() -> ir.Value:
            total = None
            for psi in features:
                part = self._branch_p_sum(psi, p)
                total = part if total is None else self.b.op("Add", [total, part])
            if self.spec.bias:
                total = self.b.op("Add", [total, self.b.const(1.0)])
            return total

        return self.b.memo(("feature_sum", p), make)

    def _branch_p_sum(self, psi: _Features, p: float) -> ir.Value:
        """``sum_e |psi_e|^p`` of one branch over its classifier's input window, N x 1 x h x w
        at the working resolution (see the module doc for k x k and per-token heads)."""
        branch = psi.branch
        if branch.linear:
            return self._mirror(branch.path, self._token_p_sum(psi, p))
        if not branch.window.pointwise:
            per_pixel = self._p_sum(psi.value, p, psi.nonneg, psi.channels, like=psi.value)
            return self._mirror(branch.path, self._window_sum(per_pixel, branch.window))
        return self._p_sum(psi.value, p, psi.nonneg, psi.channels)

    def _window_sum(self, x: ir.Value, window: Window) -> ir.Value:
        """The sum of the one-channel map ``x`` over each output pixel's input ``window`` (a
        conv's pads, dilations, strides and auto_pad; zero padding contributes nothing, as in
        the gradient): ``k_h k_w`` times an ``AveragePool`` that counts the padding (dilations
        need opset 19 there), else a Conv with a ones kernel. On ONNX Runtime's CPU provider the
        pooling takes 0.30 ms for a 3x3 window over 512 x 1024, the Conv 7.2 ms (it goes through
        im2col; ``benchmarks/results/kxk_head_profile.md``), and a one-channel Conv gets
        ONNX Runtime's blocked layout and a reorder back."""
        attributes: dict[str, object] = {"kernel_shape": list(window.kernel)}
        if window.auto_pad in ("NOTSET", ""):
            attributes["pads"] = list(window.pads)
        else:
            attributes["auto_pad"] = window.auto_pad
        if window.dilations != (1, 1):
            attributes["dilations"] = list(window.dilations)
        if window.strides != (1, 1):
            attributes["strides"] = list(window.strides)
        if window.dilations == (1, 1) or self.b.opset >= 19:
            mean = self.b.op("AveragePool", [x], attributes | {"count_include_pad": 1})
            return self.b.op("Mul", [mean, self.b.const(float(window.kernel[0] * window.kernel[1]))])
        return self.b.op("Conv", [x, self.b.const(np.ones((1, 1, *window.kernel)))], attributes)

    def _token_p_sum(self, psi: _Features, p: float) -> ir.Value:
        """``sum_e |psi_te|^p`` of a per-token head (N x T x E, E last), laid out like its
        logits: broadcast to the classifier's output shape, pushed through copies of the layout
        ops, channel 0 kept (N x 1 x h x w)."""
        branch = psi.branch
        magnitude = psi.value if psi.nonneg or p == 2.0 else self.b.memo(
            ("abs", psi.value), lambda: self.b.op("Abs", [psi.value]))
        powered = self.b.op("Mul", [psi.value, psi.value]) if p == 2.0 else self._shared_power(magnitude, p)
        per_token = self.b.op("MatMul", [powered, self.b.const(np.ones((psi.channels, 1)))])
        x = self.b.op("Expand", [per_token, self.b.op("Shape", [branch.conv.outputs[0]])])
        for node in branch.layout:
            attributes = {name: attr.value for name, attr in node.attributes.items()}
            x = self.b.op(node.op_type, [x, *node.inputs[1:]], attributes)
        one = self.b.const([1], np.int64)
        return self.b.op("Slice", [x, self.b.const([0], np.int64), one, one])

    def _class_sum(self, probs: ir.Value, label: str, p: float, gt: ir.Value | None) -> ir.Value | None:
        """``G_p = sum_h |g_h|^p`` (N x 1 x h x w); ``None`` when it is 1 (paper uni, p = 1)."""
        if self.spec.form == "paper":
            if label == "uni":
                return None if p == 1.0 and self.scale is None else self._class_p_sum(probs, p, nonneg=True)
            return self._class_p_sum(self._off_target(probs, label, gt), p, nonneg=True)
        if label == "uni":
            centered = self.b.memo(
                ("centered", probs), lambda: self.b.op("Sub", [probs, self.b.const(1.0 / self.num_classes)]))
            return self._class_p_sum(centered, p, nonneg=False)
        # exact oh/gt: g = S off the target and S_t - 1 = -(sum of the others) at the target,
        # summed from the others rather than 1 - S_t (no cancellation when S_t is near 1).
        off_target = self._off_target(probs, label, gt)
        rest = self.b.memo(("rest", label), lambda: self._channel_sum(off_target, self.num_classes))
        target_term = self._power(rest, p)
        if self.scale is not None:  # |a_t|^p of the target class t (0 without a target)
            mask = self._target_mask(label, probs, gt, as_float=True)
            weight = self.b.memo(("target_weight", label, p),
                                 lambda: self._channel_sum(mask, self.num_classes, weights=self.scale**p))
            target_term = self.b.op("Mul", [target_term, weight])
        elif label == "gt":  # a class id outside [0, C) (an ignore label) has no target: g = S
            has_target = self.b.memo(("has_target",), lambda: self.b.reduce(
                "ReduceMax", self._target_mask(label, probs, gt, as_float=True)))
            target_term = self.b.op("Mul", [target_term, has_target])
        return self.b.op("Add", [self._class_p_sum(off_target, p, nonneg=True), target_term])

    def _off_target(self, probs: ir.Value, label: str, gt: ir.Value | None) -> ir.Value:
        """``S`` with the target class(es) zeroed (N x C x h x w), shared across p."""
        mask = self._target_mask(label, probs, gt)
        return self.b.memo(("off_target", label), lambda: self.b.op("Where", [mask, self.b.const(0.0), probs]))

    def _target_mask(self, label: str, probs: ir.Value, gt: ir.Value | None, as_float: bool = False) -> ir.Value:
        """Boolean N x C x h x w mask of the target class: paper ``oh``: every maximal class
        (ties compare with the max); exact ``oh``: the first maximal class; ``gt``: ``pgn_gt``."""

        def make() -> ir.Value:
            if label == "oh" and self.spec.form == "paper":
                return self.b.op("Equal", [probs, self.b.reduce("ReduceMax", probs)])
            classes = gt if label == "gt" else self.b.op("ArgMax", [probs], {"axis": 1, "keepdims": 0})
            ids = self.b.const(np.arange(self.num_classes).reshape(1, -1, 1, 1), np.int64)
            classes = self.b.op("Unsqueeze", [classes, self.b.const([1], np.int64)])
            return self.b.op("Equal", [classes, ids])

        mask = self.b.memo(("target_mask", label), make)
        if as_float:
            return self.b.memo(("target_mask_float", label), lambda: self.b.op("Cast", [mask], {"to": int(FLOAT)}))
        return mask

    def _power(self, x: ir.Value, p: float) -> ir.Value:
        """``x^p`` for ``x >= 0`` with the cheapest op (also the root ``x^(1/p)``)."""
        if p == 1.0:
            return x
        if p == 2.0:
            return self.b.op("Mul", [x, x])
        if p == 0.5:
            return self.b.op("Sqrt", [x])
        return self.b.op("Pow", [x, self.b.const(p)])

    def _exp_log_power(self, x: ir.Value, p: float) -> ir.Value:
        """``x^p`` for ``x >= 0`` and ``0 < p < 1`` as ``exp(max(p ln x, EXP_FLOOR))``.

        On ONNX Runtime's CPU provider ``Pow`` calls ``std::pow`` per element (2.4-3.1 ms over
        256 x 32 x 64) and ``Exp`` of an argument below ``EXP_FLOOR`` (where exp underflows)
        takes a slow path; clamped, Log + Mul + Max + Exp take 1.3 ms. At ``x = 0`` the term is
        ``exp(-87) = 1.6e-38`` instead of 0: never NaN, and below float32 resolution of any sum
        it enters (a pixel whose terms are all zero gets ``(E * 1.6e-38)^(1/p)``, which
        underflows to 0 for ``p <= 0.5``). Relative error about 1e-7 elsewhere (measured;
        ``benchmarks/NOTES.md``, attempt 6).
        """
        log = self.b.memo(("log", x), lambda: self.b.op("Log", [x]))
        scaled = self.b.op("Mul", [log, self.b.const(p)])
        return self.b.op("Exp", [self.b.op("Max", [scaled, self.b.const(EXP_FLOOR)])])

    def _p_sum(self, x: ir.Value, p: float, nonneg: bool, channels: int | None,
               weights: np.ndarray | None = None, like: ir.Value | None = None) -> ir.Value:
        """``sum_c w_c |x_c|^p`` over the ``channels`` of ``x`` (N x C x h x w, or N x C x (h w);
        ``None``: unknown, a ReduceSum; never guessed), N x 1 x h x w with the dims of ``like``
        (default: the working logits); ``weights`` ``w`` default to 1."""

        def make() -> ir.Value:
            # flattened first where the sum is a MatMul: ONNX Runtime would run a Mul of a conv's
            # output in its blocked channel layout and add a reorder of the product
            source = self.flat(x) if isinstance(channels, int) else x
            magnitude = source if nonneg or p == 2.0 else self.b.memo(
                ("abs", source), lambda: self.b.op("Abs", [source]))
            powered = self.b.op("Mul", [source, source]) if p == 2.0 else self._shared_power(magnitude, p)
            return self._channel_sum(powered, channels, like, weights=weights, flattened=isinstance(channels, int))

        return self.b.memo(("p_sum", x, p, weights is not None), make)

    def flat(self, x: ir.Value) -> ir.Value:
        """``x`` (N x C x h x w) seen as N x C x (h w), once per ``x``."""
        return self.b.memo(("flat", x), lambda: self.b.op("Reshape", [x, self.b.const([0, 0, -1], np.int64)]))

    def _class_p_sum(self, x: ir.Value, p: float, nonneg: bool) -> ir.Value:
        """``sum_h |a_h|^p |x_h|^p`` over the classes (``a``: the head's per-class factor)."""
        return self._p_sum(x, p, nonneg, self.num_classes, None if self.scale is None else self.scale**p)

    def _channel_sum(self, x: ir.Value, channels: int | None, like: ir.Value | None = None,
                     weights: np.ndarray | None = None, flattened: bool = False) -> ir.Value:
        """``sum_c x_c`` over axis 1, keepdims: N x 1 x h x w with N, h, w of ``like`` (default:
        the working logits). With a known channel count it is a MatMul of a row of ones with
        ``x`` seen as N x channels x (h w): on ONNX Runtime's CPU provider 0.05 ms against
        0.43 ms for ``ReduceSum(axis=1)`` over 256 x 32 x 64 (``benchmarks/NOTES.md``, attempt 7).
        ``weights`` (``channels`` values) make it a weighted sum; ``flattened``: ``x`` is
        already N x channels x (h w)."""
        like = self.working if like is None else like
        if not isinstance(channels, int):
            return self.b.reduce("ReduceSum", x)
        flat = x if flattened else self.flat(x)
        row = np.ones((1, channels)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(1, channels)
        total = self.b.op("MatMul", [self.b.const(row), flat])
        shape = self.b.memo(("map_shape", like), lambda: self.b.op(
            "Concat", [self.b.dims(like, 0, 1), self.b.const([1], np.int64), self.b.dims(like, 2, 4)], {"axis": 0}))
        return self.b.op("Reshape", [total, shape])

    def _shared_power(self, x: ir.Value, p: float) -> ir.Value:
        """``x^p`` (``x >= 0``) of a ``|x|^p`` term, once per ``(x, p)``. When the spec has a
        smaller ``q`` with ``p = 2q`` or ``3q`` that needs a Pow of its own (``q`` not 0.5, 1
        or 2), ``x^p`` is ``x^q`` squared or cubed: one or two Muls instead of another Pow
        (benchmarks/NOTES.md: ``|psi|^0.3`` from ``|psi|^0.1``)."""

        def make() -> ir.Value:
            for q in sorted(self.spec.p):
                k = round(p / q)
                if q < p and q not in (0.5, 1.0, 2.0) and k in (2, 3) and math.isclose(p, k * q, rel_tol=1e-9):
                    base = self._shared_power(x, q)
                    square = self.b.op("Mul", [base, base])
                    return square if k == 2 else self.b.op("Mul", [square, base])
            return self._exp_log_power(x, p) if p < 1.0 and p != 0.5 else self._power(x, p)

        return self.b.memo(("power", x, p), make)

    # ------------------------------------------------------------------ inputs of the maps
    def _probabilities(self, logits: ir.Value) -> ir.Value:
        """Softmax over the classes (axis 1), ``e / sum_c e`` with ``e = exp(z - max_c z)``:
        in [0, 1], finite for any finite logits (the largest ``e`` is 1, the sum >= 1). Shares
        ``e`` and its sum with :meth:`_log_probabilities` of the same logits. Not ONNX's
        ``Softmax(axis=1)``: see the module docstring."""
        return self.b.memo(("softmax", logits),
                           lambda: self.b.op("Div", [self._shifted_exp(logits), self._exp_sum(logits)]))

    def _log_probabilities(self, logits: ir.Value) -> ir.Value:
        """Log-softmax over the classes, ``z - max_c z - log sum_c exp(z - max_c z)``: finite
        for any finite logits (no log of an underflowed probability)."""
        return self.b.memo(
            ("log_softmax", logits),
            lambda: self.b.op("Sub", [self._shifted(logits), self.b.op("Log", [self._exp_sum(logits)])]),
        )

    def _shifted(self, logits: ir.Value) -> ir.Value:
        """``z - max_c z`` (<= 0, 0 at a maximal class), once per logits."""
        return self.b.memo(("shifted", logits), lambda: self.b.op("Sub", [logits, self.b.reduce("ReduceMax", logits)]))

    def _shifted_exp(self, logits: ir.Value) -> ir.Value:
        """``exp(z - max_c z)`` (in [0, 1]), once per logits."""
        return self.b.memo(("shifted_exp", logits), lambda: self.b.op("Exp", [self._shifted(logits)]))

    def _exp_sum(self, logits: ir.Value) -> ir.Value:
        """``sum_c exp(z - max_c z)`` (N x 1 x h x w, >= 1), once per logits."""
        return self.b.memo(("exp_sum", logits),
                           lambda: self._channel_sum(self._shifted_exp(logits), self.num_classes, logits))

    def _branch_features(self, branch: Branch) -> _Features:
        """psi of one branch as float32, resized like the branch (and like the logits when the
        resolution is ``output``)."""
        psi = branch.features
        producer = psi.producer()
        pointwise = not branch.linear and branch.window.pointwise
        nodes = branch.path + (self.head.chain if self.at_output else []) if pointwise else []
        nonneg = (
            producer is not None
            and producer.op_type in NONNEGATIVE_OPS
            and all(n.op_type != "Resize" or attribute(n, "mode", "nearest") in _CONVEX_MODES for n in nodes)
        )
        channels = branch.channels
        if channels is None and psi.shape is not None and psi.shape.rank() == 4 and isinstance(psi.shape[1], int):
            channels = psi.shape[1]
        return _Features(self._mirror(nodes, self.b.to_float(psi)), nonneg, channels, branch)

    def _mirror(self, nodes: list[ir.Node], x: ir.Value) -> ir.Value:
        """Apply the model's spatial ops ``nodes`` (Resize/Slice, forward order) to ``x``."""
        for node in nodes:
            x = self._mirror_one(node, x)
        return x

    def _mirror_one(self, node: ir.Node, x: ir.Value) -> ir.Value:
        attributes = {name: attr.value for name, attr in node.attributes.items()}
        if node.op_type == "Slice":
            return self.b.op("Slice", [x, *node.inputs[1:]], attributes)
        roi, scales, sizes = (list(node.inputs[1:]) + [None] * 3)[:3]
        if "axes" not in attributes:  # sizes/scales cover N and C too: give ours
            if constant_array(scales) is None or sizes is not None:
                scales = None
                sizes = self.b.op("Concat", [self.b.dims(x, 0, 2), self.b.dims(node.outputs[0], 2, 4)], {"axis": 0})
        return self.b.op("Resize", [x, roi, scales, sizes], attributes)
