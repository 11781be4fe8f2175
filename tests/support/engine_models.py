"""Grafted models for the engine tests, exported once per test process and cached on disk.

``grafted(name)`` returns the path of ``name``.pgn.onnx (fp32) and ``grafted(name, "fp16")``
its fp16 copy from :func:`pgn_deploy.engines.precision.convert_precision`. Models:

* ``tiny``: 3x3 conv (16 channels) -> ReLU -> 1x1 classifier -> bilinear resize, random weights;
* ``bigpsi``: the same with 256 feature channels scaled so that ``sum |psi|^2`` per pixel
  is about 1e6 (far above float16's 65504) while every activation stays below 65504;
* ``lraspp`` / ``deeplabv3``: torchvision's mobilenet_v3_large LR-ASPP / DeepLabV3, random
  weights (``weights=None``), exported at 96 x 128;
* ``overflow``: ``tiny`` with its first conv scaled so that activations exceed 65504;
* ``demo``: the shipped demo checkpoint ``export/models/demo_synthroad.pth`` (when present).

Every model is grafted with p in {0.5, 1, 2}, labels uni and oh, ``pred`` and the baselines.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pgn_deploy.contract import PGNSpec, make_spec, save_onnx

REPO = Path(__file__).resolve().parents[2]
DEMO_CHECKPOINT = REPO / "export" / "models" / "demo_synthroad.pth"
SIZE = (96, 128)
SPEC = PGNSpec(p=(0.5, 1.0, 2.0), labels=("uni", "oh"), pred=True, baselines=True)
MODELS = ("tiny", "bigpsi", "lraspp", "deeplabv3", "demo")

_CACHE = Path(tempfile.mkdtemp(prefix="pgn_engine_models_"))
atexit.register(shutil.rmtree, _CACHE, True)


def _small_net(features: int, scale: float):
    import torch
    from torch import nn

    class SmallSeg(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, features, 3, stride=2, padding=1), nn.ReLU())
            self.classifier = nn.Conv2d(features, 5, 1)

        def forward(self, x):
            logits = self.classifier(self.body(x))
            return nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    torch.manual_seed(0)
    net = SmallSeg().eval()
    with torch.no_grad():
        net.body[0].weight.mul_(scale)
        net.body[0].bias.fill_(0.1 * scale)
        net.classifier.weight.div_(scale)
    return net


def _torchvision_net(name: str):
    import torch
    import torchvision

    torch.manual_seed(0)
    builder = getattr(torchvision.models.segmentation, f"{name}_mobilenet_v3_large")
    kwargs = {"weights": None, "weights_backbone": None, "num_classes": 5}
    if name == "deeplabv3":
        kwargs["aux_loss"] = False
    return builder(**kwargs).eval()


def _export(net, path: Path) -> Path:
    import torch

    from pgn_deploy.export.onnx_export import export_onnx
    from pgn_deploy.graft.attach import graft

    example = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(0))
    save_onnx(graft(export_onnx(net, example, None, exporter="torchscript"), SPEC), path)
    return path


def grafted(name: str, precision: str = "fp32") -> Path:
    """Path of the grafted model ``name`` in ``precision`` (fp32 or fp16)."""
    return _grafted(name, precision)


@functools.cache
def _grafted(name: str, precision: str) -> Path:
    if precision != "fp32":
        from pgn_deploy.engines.precision import convert_precision

        return convert_precision(grafted(name), _CACHE / f"{name}.{precision}.pgn.onnx", precision)
    path = _CACHE / f"{name}.pgn.onnx"
    if name == "tiny":
        return _export(_small_net(16, 1.0), path)
    if name == "bigpsi":
        return _export(_small_net(256, 60.0), path)
    if name == "overflow":
        return _export(_small_net(16, 20000.0), path)
    if name in ("lraspp", "deeplabv3"):
        return _export(_torchvision_net(name), path)
    if name == "demo":
        from pgn_deploy.export.api import export_model

        export_model(DEMO_CHECKPOINT, path, spec=make_spec(p=SPEC.p, labels=SPEC.labels, pred=True, baselines=True))
        return path
    raise ValueError(name)


def images(count: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Seeded smooth RGB uint8 test images of ``SIZE`` (noise blurred to image-like statistics)."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        noise = rng.normal(0, 1, (*SIZE, 3)).astype(np.float32)
        smooth = cv2.GaussianBlur(noise, (0, 0), 3)
        out.append(np.clip(128 + smooth * (100 / smooth.std()), 0, 255).astype(np.uint8))
    return out
