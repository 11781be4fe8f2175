"""PGN the published code's way: forward hooks on the classifier, closed form in PyTorch.

:class:`EagerPGN` registers forward hooks on the network's 1x1 classifier conv(s) to capture
their inputs ``psi_i`` and outputs; after the forward pass it brings every branch to the
largest classifier resolution (bilinear, as the models here do), sums the logits and runs
:func:`pgn_deploy.reference.pgn_maps` (maps resized to the input size).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmarks.models import NUM_CLASSES
from pgn_deploy.contract import PGNSpec
from pgn_deploy.reference import pgn_maps


def classifier_convs(module: torch.nn.Module) -> list[torch.nn.Conv2d]:
    """The 1x1 convs with one output channel per class (several for LRASPP), in module order."""
    convs = [m for m in module.modules()
             if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.out_channels == NUM_CLASSES]
    if not convs:
        raise ValueError("no 1x1 classifier conv found")
    return convs


def main_output(result: object) -> torch.Tensor:
    """The logits of a torchvision dict result or of a plain tensor result."""
    return result["out"] if isinstance(result, dict) else result


class EagerPGN:
    """``module(x)`` followed by the PGN maps of ``spec`` in torch; returns (logits, maps)."""

    def __init__(self, module: torch.nn.Module, spec: PGNSpec) -> None:
        self.module, self.spec = module, spec
        self._captured: list[tuple[torch.Tensor, torch.Tensor]] = []
        for conv in classifier_convs(module):
            conv.register_forward_hook(self._hook)

    def _hook(self, _conv: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self._captured.append((inputs[0], output))

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self._captured.clear()
        logits = main_output(self.module(x))
        size = max((z.shape[-2:] for _, z in self._captured), key=lambda s: s[0] * s[1])

        def resize(t: torch.Tensor) -> torch.Tensor:
            return t if t.shape[-2:] == size else F.interpolate(t, size=size, mode="bilinear", align_corners=False)

        features = [resize(psi) for psi, _ in self._captured]
        head_logits = sum(resize(z) for _, z in self._captured)
        maps = pgn_maps(features, head_logits, self.spec, output_size=tuple(x.shape[-2:]))
        return logits, maps


def torch_call(fn: Callable[[torch.Tensor], object], x: torch.Tensor) -> Callable[[], object]:
    """``fn(x)`` under ``inference_mode``, synchronized on a GPU so that timing is complete."""
    def call() -> object:
        with torch.inference_mode():
            result = fn(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        return result

    return call
