"""(d) Per-pixel back-propagation (the naive method) against the closed form, on a crop.

The network runs once on a crop; the classifier inputs ``psi_i`` are detached and the logits
recomputed from the classifier weights with autograd on, so that each pixel's backward pass
reaches only the last layer (:func:`pgn_deploy.reference.autograd_pgn`, label ``uni``,
p = 0.5). Two quantities, each the naive twin of a graft:

- ``feature``: one backward pass per pixel of the classifier's map (``h x w``), the gradient
  the default graft computes before it resizes the map;
- ``output``: one backward pass per pixel of the model's output (``H x W``), through the
  model's bilinear resize of the logits: the per-output-pixel gradient that
  ``--resolution output`` computes in closed form, and the "10^6 gradients" per megapixel the paper counts.

Costs are given per image megapixel (the pixels of the model's input and output), so both
methods are charged for the same map of the same image (up to the class factor: the naive
method differentiates the true loss, the grafts it is compared with use the default ``paper``
form, whose ``uni`` class factor saves one or two elementwise ops over the classes; in the
``--resolution output`` graft the resize of psi to the output size takes more than half of
the PGN nodes' time). Each backward pass computes the weight
gradient over the whole crop, so the per-pixel cost grows with the map: extrapolating from a
crop *underestimates* the naive method at full size.
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
CLOSED_FORM_REPEATS = 5
RESOLUTIONS = ("feature", "output")


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
    """The bilinear resize (``align_corners=False``) the benchmark models apply to their logits."""
    return t if tuple(t.shape[-2:]) == size else F.interpolate(t, size=size, mode="bilinear", align_corners=False)


def _naive_seconds_per_pixel(logits: torch.Tensor, weights: list[torch.Tensor], max_pixels: int) -> float:
    """Seconds per pixel of ``logits`` (``1 x C x h x w``, built from ``weights`` with autograd)
    for one backward pass each, over ``max_pixels`` pixels drawn at random."""
    height, width = logits.shape[-2:]
    order = np.random.default_rng(0).permutation(height * width)[:max_pixels]
    pixels = [(0, int(i) // width, int(i) % width) for i in order]
    start = time.perf_counter()
    autograd_pgn(logits, weights, pixels, P, LABEL)
    return (time.perf_counter() - start) / len(pixels)


def _closed_form_seconds(features: list[torch.Tensor], logits: torch.Tensor) -> float:
    """Seconds of the closed form in torch for the whole map of ``logits``."""
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(CLOSED_FORM_REPEATS):
            pgn_map(features, logits, P, LABEL, FORM)
    return (time.perf_counter() - start) / CLOSED_FORM_REPEATS


def run(model: str, crop: tuple[int, int], max_pixels: int) -> dict[str, Any]:
    """Per resolution (:data:`RESOLUTIONS`): seconds per pixel of the naive method, and both
    methods' seconds per image megapixel, on a ``crop`` of ``model``."""
    features, convs, size = _head(model, crop)
    weights = [conv.weight.detach().clone().requires_grad_(True) for conv in convs]
    biases = [conv.bias.detach() if conv.bias is not None else None for conv in convs]
    head_logits = sum(_resize(F.conv2d(psi, w, b), size) for psi, w, b in zip(features, weights, biases))
    grids = {"feature": size, "output": tuple(crop)}
    image_megapixels = crop[0] * crop[1] / 1e6
    record: dict[str, Any] = {"model": model, "crop": list(crop), "classifier_size": list(size)}
    for resolution, grid in grids.items():
        naive_s = _naive_seconds_per_pixel(_resize(head_logits, grid), weights, max_pixels)
        closed_s = _closed_form_seconds([_resize(psi, grid) for psi in features], _resize(head_logits.detach(), grid))
        map_pixels = grid[0] * grid[1]
        record[resolution] = {
            "map_size": list(grid),
            "pixels_timed": min(max_pixels, map_pixels),
            "naive_s_per_pixel": naive_s,
            "naive_s_per_image_megapixel": naive_s * map_pixels / image_megapixels,
            "closed_form_torch_s_per_image_megapixel": closed_s / image_megapixels,
            "speedup_closed_form_torch": naive_s * map_pixels / closed_s,
        }
    return record
