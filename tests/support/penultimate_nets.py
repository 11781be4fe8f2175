"""A tiny network whose head is ``Conv_k -> BN -> act -> Dropout -> 1x1 classifier -> resize``,
for the penultimate-layer tests, and its two ONNX exports (BN kept or folded)."""
from __future__ import annotations

import io

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from pgn_deploy import reference as R
from pgn_deploy.export.onnx_export import export_onnx

SIZE = (2, 3, 19, 25)  # odd sizes, batch 2


class PenultimateNet(nn.Module):
    """A tiny segmentation net whose head is ``Conv_k -> BN -> act -> Dropout -> classifier``."""

    def __init__(self, kernel: int = 3, dilation: int = 2, bias: bool = True, activation: str = "relu", seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.conv = nn.Conv2d(8, 12, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation, bias=bias)
        self.bn = nn.BatchNorm2d(12)
        self.act = R.activation_module(activation, 0.1)
        self.drop = nn.Dropout(0.2)
        self.cls = nn.Conv2d(12, 5, 1)
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
            self.bn.weight.copy_(torch.rand(12, generator=gen) * 2 + 0.2)
            self.bn.running_mean.copy_(torch.randn(12, generator=gen))
            self.bn.running_var.copy_(torch.rand(12, generator=gen) * 3 + 0.1)
            self.cls.weight.mul_(0.3)  # logits of a few units: float32 keeps the small softmax terms
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.cls(self.drop(self.act(self.bn(self.conv(self.stem(x))))))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def export(net: nn.Module, bn: str) -> onnx.ModelProto:
    """``bn="kept"``: the TorchScript exporter without constant folding (BatchNormalization
    stays); ``"folded"``: pgn-export's default export (BN folded into the conv)."""
    x = torch.randn(*SIZE)
    if bn == "kept":
        buffer = io.BytesIO()
        torch.onnx.export(net, (x,), buffer, dynamo=False, input_names=["input"], output_names=["out"],
                          opset_version=17, do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE,
                          dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}})
        model = onnx.load_from_string(buffer.getvalue())
        assert "BatchNormalization" in {node.op_type for node in model.graph.node}
        return model
    return export_onnx(net, x, exporter="torchscript")
