"""The BatchNorms a PyTorch exporter folds into convs, for the penultimate maps' BN factor.

Both of PyTorch's ONNX exporters (TorchScript with constant folding, dynamo with its optimizer)
fold an eval-mode ``BatchNorm2d`` into the ``Conv2d`` before it, so the exported graph has
lost ``gamma / sqrt(var + eps)``. The gradient w.r.t. the *trained* kernel needs that factor
(``docs/penultimate.md``): this module computes, for every conv followed by a BatchNorm in
the module, the folded kernel the exporter writes and the factor; the graft recognises the
conv in the graph by its kernel (:class:`pgn_deploy.graft.penultimate.BatchNormFold`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pgn_deploy.contract import require
from pgn_deploy.graft.penultimate import BatchNormFold


def batch_norm_folds(module: Any) -> list[BatchNormFold]:
    """Every ``Conv2d`` immediately followed by a ``BatchNorm2d`` of as many channels (in module
    registration order, as in ``nn.Sequential`` and torchvision's heads) as a
    :class:`BatchNormFold`: the folded float32 kernel and the float64 factor. A pairing that is
    wrong costs nothing: the graft uses a factor only for the conv whose kernel matches."""
    torch = require("torch", "reading BatchNorm factors")
    folds = []
    modules = [m for _, m in module.named_modules()]
    for conv, norm in zip(modules, modules[1:]):
        if not (isinstance(conv, torch.nn.Conv2d) and isinstance(norm, torch.nn.BatchNorm2d)):
            continue
        if norm.running_var is None or conv.out_channels != norm.num_features:
            continue
        with torch.no_grad():
            var = norm.running_var.double()
            gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(var)
            scale = (gamma / torch.sqrt(var + norm.eps)).cpu().numpy()
            kernel = conv.weight.double().cpu().numpy()
        folded = (kernel * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
        folds.append(BatchNormFold(folded, scale))
    return folds
