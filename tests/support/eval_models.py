"""A tiny segmentation network with dropout for the evaluation tests, saved as an SDK checkpoint.

:class:`TinyDropoutSeg`: two 3x3 conv-ReLU layers at full resolution, a dropout, the 1x1
classifier (19 Cityscapes classes). With random weights its class map varies over the image
(unlike a deep random network with BatchNorm, whose prediction is one class), which the
segment-level metrics need. Exporting and grafting it takes about a second.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pgn_deploy import export_model
from pgn_deploy.contract import make_spec

NUM_CLASSES = 19
SIZE = (64, 128)


class TinyDropoutSeg(nn.Module):
    """conv3x3-ReLU, conv3x3-ReLU, Dropout(``dropout``; ``None``: no dropout layer), 1x1
    classifier; logits at input size."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 12, dropout: float | None = 0.3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                  nn.Identity() if dropout is None else nn.Dropout(dropout))
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


def save_checkpoint(path: Path, seed: int = 0, dropout: float | None = 0.3) -> Path:
    """A randomly initialised :class:`TinyDropoutSeg` in the SDK checkpoint convention."""
    torch.manual_seed(seed)
    model = TinyDropoutSeg(dropout=dropout).eval()
    torch.save({
        "arch": f"{__name__}:TinyDropoutSeg",
        "arch_kwargs": {"dropout": dropout},
        "state_dict": model.state_dict(),
        "input": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "channel_order": "RGB",
                  "scale": 255.0, "size": list(SIZE)},
    }, path)
    return path


def grafted_model(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """``(checkpoint, grafted model)``: PGN uni and oh for p = 0.5 and 2, pred, msp, entropy."""
    checkpoint = save_checkpoint(folder / f"tiny_seed{seed}.pth", seed)
    result = export_model(checkpoint, folder / f"tiny_seed{seed}.pgn.onnx",
                          spec=make_spec(p=(0.5, 2.0), labels="both", pred=True, baselines=True))
    return checkpoint, result.path
