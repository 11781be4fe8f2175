"""(d) Per-pixel back-propagation (the naive method) against the closed form, on a crop.

The network runs once on a crop; the classifier inputs ``psi_i`` are detached and the logits
recomputed from the classifier weights with autograd on, so that each pixel's backward pass
reaches only the last layer (:func:`pgn_deploy.reference.autograd_pgn`, exact form, label
``uni``, p = 0.5). Seconds per classifier pixel are extrapolated to a megapixel. Each backward
pass computes the weight gradient over the whole crop, so the per-pixel cost grows with the
map: extrapolating from a crop *underestimates* the naive method at full size.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.eager import classifier_convs
from benchmarks.models import build_module
from pgn_deploy.reference import autograd_pgn, pgn_map

P, LABEL, FORM = 0.5, "uni", "exact"
CLOSED_FORM_REPEATS = 20


def _head(model: str, crop: tuple[int, int]) -> tuple[list[torch.Tensor], list[torch.nn.Conv2d], tuple[int, int]]:
    """Classifier inputs (detached), the classifier convs, and the classifier resolution."""
    net = build_module(model)
    convs = classifier_convs(net)
    captured: list[torch.Tensor] = []
    hooks = [conv.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0].detach())) for conv in convs]
    x = torch.randn(1, 3, *crop, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net(x)
    for hook in hooks:
        hook.remove()
    size = max((tuple(psi.shape[-2:]) for psi in captured), key=lambda s: s[0] * s[1])
    return captured, convs, size


def _resize(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return t if tuple(t.shape[-2:]) == size else F.interpolate(t, size=size, mode="bilinear", align_corners=False)


def run(model: str, crop: tuple[int, int], max_pixels: int) -> dict[str, Any]:
    """Seconds per classifier pixel of both methods on a ``crop`` of ``model``."""
    features, convs, size = _head(model, crop)
    weights = [conv.weight.detach().clone().requires_grad_(True) for conv in convs]
    biases = [conv.bias.detach() if conv.bias is not None else None for conv in convs]
    logits = sum(_resize(F.conv2d(psi, w, b), size) for psi, w, b in zip(features, weights, biases))
    all_pixels = [(0, y, x) for y in range(size[0]) for x in range(size[1])]
    order = np.random.default_rng(0).permutation(len(all_pixels))[:max_pixels]
    pixels = [all_pixels[i] for i in order]
    start = time.perf_counter()
    autograd_pgn(logits, weights, pixels, P, LABEL)
    naive_s = (time.perf_counter() - start) / len(pixels)

    resized = [_resize(psi, size) for psi in features]
    head_logits = logits.detach()
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(CLOSED_FORM_REPEATS):
            pgn_map(resized, head_logits, P, LABEL, FORM)
    closed_s = (time.perf_counter() - start) / CLOSED_FORM_REPEATS / (size[0] * size[1])
    return {
        "model": model,
        "crop": list(crop),
        "classifier_size": list(size),
        "pixels_timed": len(pixels),
        "naive_s_per_pixel": naive_s,
        "naive_s_per_megapixel": naive_s * 1e6,
        "closed_form_torch_s_per_pixel": closed_s,
        "speedup_closed_form_torch": naive_s / closed_s,
    }
