"""MC dropout with 8 samples as ONNX models: naive (8 full passes) and optimized (the part
before the first dropout layer once, only the rest sampled).

Both return the MC entropy map (entropy of the mean softmax of the samples, N=1 x 1 x H x W),
computed in the graph so that post-processing costs the same for both. Dropout layers are made
to sample in eval mode by :func:`pgn_deploy.eval.paper.baselines.replace_dropout`. The split point is
known per architecture (:func:`split_at_first_dropout`); LRASPP has no dropout layer.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.models import EXPORT_SIZE, build_module
from pgn_deploy.eval.paper.baselines import replace_dropout
from pgn_deploy.export.onnx_export import export_onnx

SAMPLES = 8
Parts = tuple[torch.Tensor, ...]
Prefix = Callable[[torch.Tensor], Parts]
Suffix = Callable[[Parts, torch.Size], torch.Tensor]


def _resize(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _split_demo(net: torch.nn.Module) -> tuple[Prefix, Suffix]:
    def prefix(x: torch.Tensor) -> Parts:
        stem, low, high = net.backbone(x)
        high = _resize(net.aspp(high), low.shape[-2:])
        h = net.decoder[0](torch.cat([high, net.low(low)], dim=1))  # decoder[1] is the first dropout
        return h, net.fine(stem)

    def suffix(parts: Parts, size: torch.Size) -> torch.Tensor:
        h, fine = parts
        mid = _resize(net.decoder[1:](h), fine.shape[-2:])
        return _resize(net.classifier(net.refine(torch.cat([mid, fine], dim=1))), size)

    return prefix, suffix


def _split_torchvision_deeplabv3(net: torch.nn.Module) -> tuple[Prefix, Suffix]:
    aspp = net.classifier[0]  # DeepLabHead = ASPP, 3x3 conv, BN, ReLU, 1x1 classifier
    head = torch.nn.Sequential(*list(net.classifier)[1:])

    def prefix(x: torch.Tensor) -> Parts:
        features = net.backbone(x)["out"]
        return (aspp.project[:3](torch.cat([branch(features) for branch in aspp.convs], dim=1)),)

    def suffix(parts: Parts, size: torch.Size) -> torch.Tensor:
        return _resize(head(aspp.project[3:](parts[0])), size)  # project[3] is the first dropout

    return prefix, suffix


SPLITS = {
    "demo": _split_demo,
    "deeplabv3_mobilenet_v3_large": _split_torchvision_deeplabv3,
    "deeplabv3_resnet50": _split_torchvision_deeplabv3,
}


def split_at_first_dropout(model: str, net: torch.nn.Module) -> tuple[Prefix, Suffix]:
    """(prefix, suffix) with ``suffix(prefix(x), x.shape[-2:])`` = the network's logits; the
    suffix starts with the first dropout layer, the prefix returns every tensor it needs."""
    return SPLITS[model](net)


def _entropy_of_mean(logits: torch.Tensor) -> torch.Tensor:
    mean = torch.softmax(logits, dim=1).mean(dim=0, keepdim=True)
    return -(mean * torch.log(mean.clamp_min(1e-12))).sum(dim=1, keepdim=True)


class MCEntropy(torch.nn.Module):
    """MC entropy of ``SAMPLES`` stochastic passes of an image (batch 1)."""

    def __init__(self, model: str, optimized: bool) -> None:
        super().__init__()
        self.net = build_module(model)
        if replace_dropout(self.net) == 0:
            raise ValueError(f"{model} has no dropout layer")
        self.optimized = optimized
        self.prefix, self.suffix = split_at_first_dropout(model, self.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.optimized:
            parts = tuple(part.repeat(SAMPLES, 1, 1, 1) for part in self.prefix(x))
            return _entropy_of_mean(self.suffix(parts, x.shape[-2:]))
        outputs = self.net(x.repeat(SAMPLES, 1, 1, 1))
        return _entropy_of_mean(outputs["out"] if isinstance(outputs, dict) else outputs)


def mc_file(model: str, optimized: bool, work: Path) -> Path:
    """The exported MC dropout model (cached in ``work/<model>/``)."""
    path = work / model / f"mc{SAMPLES}_{'optimized' if optimized else 'naive'}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        example = torch.randn(1, 3, *EXPORT_SIZE, generator=torch.Generator().manual_seed(0))
        export_onnx(MCEntropy(model, optimized).eval(), example, path, exporter="torchscript", dynamic=True)
    return path
