"""The study's networks (random weights: speed does not depend on them) and their ONNX files.

Each network is exported once (dynamic batch and size) and grafted with every variant of
:data:`VARIANTS`; files are cached in a work folder keyed by model and variant, so a second run
reuses them.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import torch

from pgn_deploy.benchmark import plain_model
from pgn_deploy.contract import PGNSpec, save_onnx
from pgn_deploy.export.onnx_export import export_onnx
from pgn_deploy.graft.attach import graft

NUM_CLASSES = 19
TEN_P = (0.1, 0.3, 0.5, 1.0, 2.0)
TEN_LABELS = ("uni", "oh")
EXPORT_SIZE = (256, 512)

VARIANTS: dict[str, PGNSpec] = {
    "one": PGNSpec(),  # pgn-export's default: pgn_uni_p0.5, resized like the logits
    "ten": PGNSpec(p=TEN_P, labels=TEN_LABELS),
    "one_keep": PGNSpec(keep_feature_size=True),
    "ten_keep": PGNSpec(p=TEN_P, labels=TEN_LABELS, keep_feature_size=True),
    "one_output": PGNSpec(resolution="output"),
    "ten_output": PGNSpec(p=TEN_P, labels=TEN_LABELS, resolution="output"),
    "ten_penultimate": PGNSpec(p=TEN_P, labels=TEN_LABELS, layers=("penultimate",)),
    "twenty": PGNSpec(p=TEN_P, labels=TEN_LABELS, layers=("last", "penultimate")),
}
"""Grafted variants: one map or all ten (5 p x 2 labels); maps resized to the output size
(default), kept at the classifier's size (``_keep``) or computed per output pixel (``_output``);
the ten maps of the penultimate layer (``ten_penultimate``) and the published code's twenty
(both layers, ``twenty``; ``docs/penultimate.md``). The grafts see the exported ONNX file only,
so the penultimate maps differentiate the BN-folded kernel: the same nodes as the trained
kernel's (the factor is folded into a constant), hence the same cost."""


def _demo() -> torch.nn.Module:
    from pgn_deploy.models.demo import DemoDeepLabV3Plus

    return DemoDeepLabV3Plus(num_classes=NUM_CLASSES)


def _torchvision(name: str) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        import torchvision.models.segmentation as seg

        return getattr(seg, name)(weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=False)

    return build


def _smp_unet(kernel: int) -> Callable[[], torch.nn.Module]:
    """segmentation_models_pytorch's Unet (ResNet-18 encoder, no pretrained weights): its own
    3x3 classifier, or the same network with a 1x1 classifier (the k x k window sum's cost)."""

    def build() -> torch.nn.Module:
        import segmentation_models_pytorch as smp

        model = smp.Unet("resnet18", encoder_weights=None, classes=NUM_CLASSES)
        conv = model.segmentation_head[0]
        model.segmentation_head[0] = torch.nn.Conv2d(conv.in_channels, NUM_CLASSES, kernel, padding=kernel // 2)
        return model

    return build


BUILDERS: dict[str, Callable[[], torch.nn.Module]] = {
    "smp_unet_resnet18": _smp_unet(3),
    "smp_unet_resnet18_1x1": _smp_unet(1),
    "demo": _demo,
    "deeplabv3_mobilenet_v3_large": _torchvision("deeplabv3_mobilenet_v3_large"),
    "lraspp_mobilenet_v3_large": _torchvision("lraspp_mobilenet_v3_large"),
    "deeplabv3_resnet50": _torchvision("deeplabv3_resnet50"),
}


def build_module(name: str) -> torch.nn.Module:
    """The network ``name`` of :data:`BUILDERS` with seeded random weights, in eval mode."""
    torch.manual_seed(0)
    return BUILDERS[name]().eval()


class ModelFiles:
    """ONNX files of one network under ``work/<name>/``: the export, each variant, the plain."""

    def __init__(self, name: str, work: Path) -> None:
        self.name = name
        self.folder = work / name
        self.folder.mkdir(parents=True, exist_ok=True)

    def exported(self) -> Path:
        path = self.folder / "export.onnx"
        if not path.is_file():
            example = torch.randn(1, 3, *EXPORT_SIZE, generator=torch.Generator().manual_seed(0))
            export_onnx(build_module(self.name), example, path, exporter="torchscript", dynamic=True)
        return path

    def variant(self, variant: str) -> Path:
        """The grafted model of :data:`VARIANTS` ``variant``."""
        path = self.folder / f"{variant}.pgn.onnx"
        if not path.is_file():
            save_onnx(graft(onnx.load(str(self.exported())), VARIANTS[variant]), path)
        return path

    def plain(self) -> Path:
        """The plain model derived from the one-map graft (as ``pgn-bench --compare-plain`` does)."""
        path = self.folder / "plain.onnx"
        if not path.is_file():
            save_onnx(plain_model(onnx.load(str(self.variant("one")))), path)
        return path

    def file(self, variant: str) -> Path:
        """``plain`` or a variant name."""
        return self.plain() if variant == "plain" else self.variant(variant)
