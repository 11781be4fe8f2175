"""Segmentation networks written for the graft tests (random weights, small, fast to export).

* :class:`DeepLabV3Plus` -- an encoder-decoder in the DeepLabV3+ layout: strided encoder,
  ASPP at 1/16, decoder at 1/4 fusing low-level features, 1x1 classifier, x4 bilinear upsample.
* :class:`TinySegNet` -- one to three classifier branches (optionally at different strides and
  resized before the sum), logits resized to the input size with a chosen mode.
* :func:`onnx_head_model` -- the same kind of network built directly as an ONNX graph (no
  PyTorch export), for hypothesis-generated heads.
"""
from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class _ASPP(nn.Module):
    def __init__(self, cin: int, cout: int, rates: tuple[int, ...] = (2, 3)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_bn_relu(cin, cout, 1)] + [_conv_bn_relu(cin, cout, 3, dilation=r) for r in rates]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU())
        self.project = _conv_bn_relu(cout * (len(rates) + 2), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ layout with a small encoder; returns ``{"out": N x C x H x W}``."""

    def __init__(self, num_classes: int = 6, width: int = 8) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(_conv_bn_relu(3, w, stride=2), _conv_bn_relu(w, 2 * w, stride=2))  # 1/4
        self.encoder = nn.Sequential(_conv_bn_relu(2 * w, 4 * w, stride=2),
                                     _conv_bn_relu(4 * w, 4 * w, stride=2))  # 1/16
        self.aspp = _ASPP(4 * w, 4 * w)
        self.low_project = _conv_bn_relu(2 * w, w, 1)
        self.decoder = nn.Sequential(_conv_bn_relu(5 * w, 4 * w), _conv_bn_relu(4 * w, 4 * w))
        self.classifier = nn.Conv2d(4 * w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low = self.stem(x)
        high = self.aspp(self.encoder(low))
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.classifier(self.decoder(torch.cat([high, self.low_project(low)], dim=1)))
        return {"out": F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)}


class TinySegNet(nn.Module):
    """Branch i: ``psi_i = act(Conv(x, stride_i))``, ``K_i psi_i`` (1x1) resized to branch 0's size
    when its stride differs; the sum is resized to the input size with ``mode``."""

    def __init__(
        self,
        num_classes: int = 5,
        channels: tuple[int, ...] = (7,),
        strides: tuple[int, ...] = (4,),
        relu: bool = True,
        mode: str = "bilinear",
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.features = nn.ModuleList([nn.Conv2d(3, e, 3, s, 1) for e, s in zip(channels, strides)])
        self.classifiers = nn.ModuleList([nn.Conv2d(e, num_classes, 1, bias=i == 0) for i, e in enumerate(channels)])
        self.relu, self.mode, self.align_corners = relu, mode, align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for feature, classifier in zip(self.features, self.classifiers):
            psi = feature(x)
            logits = classifier(F.relu(psi) if self.relu else psi)
            if total is not None and logits.shape[-2:] != total.shape[-2:]:
                logits = F.interpolate(logits, size=total.shape[-2:], mode="bilinear", align_corners=False)
            total = logits if total is None else total + logits
        if self.mode == "none":
            return total
        kwargs = {} if self.mode == "nearest" else {"align_corners": self.align_corners}
        return F.interpolate(total, size=x.shape[-2:], mode=self.mode, **kwargs)


def onnx_head_model(
    num_classes: int,
    channels: list[int],
    strides: list[int],
    relu: list[bool],
    mode: str = "linear",
    coordinate_mode: str = "half_pixel",
    seed: int = 0,
    opset: int = 17,
    zero_classifier: bool = False,
    feature_scale: float = 0.5,
) -> onnx.ModelProto:
    """An ONNX graph like :class:`TinySegNet` built with ``onnx.helper`` (input ``input``,
    N x 3 x H x W; output ``out``, N x C x H x W): branch i = ``[Relu](Conv3x3/stride_i)`` -> 1x1
    classifier -> bilinear resize to branch 0's size -> Add -> Resize(``mode``) to the input
    size. ``zero_classifier``: all classifier weights and biases 0 (every class tied);
    ``feature_scale``: scale of the feature conv weights (0: every psi is 0)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def node(op_type: str, inputs: list[str], output: str, **attributes) -> None:
        nodes.append(helper.make_node(op_type, inputs, [output], name=f"{op_type}_{output}", **attributes))

    def init(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def sizes_like(name: str, channels_of: str, spatial_of: str) -> str:
        for part, source, (start, end) in (("nc", channels_of, (0, 2)), ("hw", spatial_of, (2, 4))):
            node("Shape", [source], f"{name}_{part}_shape")
            bounds = [init(f"{name}_{part}_{b}", np.array([v], np.int64)) for b, v in (("start", start), ("end", end))]
            node("Slice", [f"{name}_{part}_shape", *bounds], f"{name}_{part}")
        node("Concat", [f"{name}_nc", f"{name}_hw"], name, axis=0)
        return name

    branch_logits = []
    for i, (e, s, act) in enumerate(zip(channels, strides, relu)):
        w = init(f"w{i}", rng.standard_normal((e, 3, 3, 3)).astype(np.float32) * feature_scale)
        node("Conv", ["input", w], f"conv{i}", kernel_shape=[3, 3], pads=[1] * 4, strides=[s, s])
        psi = f"conv{i}"
        if act:
            node("Relu", [psi], f"psi{i}")
            psi = f"psi{i}"
        scale = 0.0 if zero_classifier else 1.0
        k = init(f"k{i}", rng.standard_normal((num_classes, e, 1, 1)).astype(np.float32) * scale)
        b = init(f"b{i}", rng.standard_normal(num_classes).astype(np.float32) * scale)
        node("Conv", [psi, k, b], f"logits{i}", kernel_shape=[1, 1])
        branch_logits.append(f"logits{i}")
    for i in range(1, len(branch_logits)):
        if strides[i] != strides[0]:
            sizes = sizes_like(f"branch_sizes{i}", branch_logits[i], branch_logits[0])
            node("Resize", [branch_logits[i], "", "", sizes], f"aligned{i}", mode="linear")
            branch_logits[i] = f"aligned{i}"
    head = branch_logits[0]
    if len(branch_logits) > 1:
        node("Sum", branch_logits, "head")
        head = "head"
    sizes = sizes_like("out_sizes", head, "input")
    extra = {"nearest_mode": "floor"} if mode == "nearest" else {}
    node("Resize", [head, "", "", sizes], "out", mode=mode, coordinate_transformation_mode=coordinate_mode, **extra)
    graph = helper.make_graph(
        nodes,
        "tiny_head",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", num_classes, "H", "W"])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
