"""Pictures of a result: coloured segmentation, PGN heatmap, and the Figure-1 style overlay.

Every function takes and returns BGR uint8 images (OpenCV's order), H x W x 3.
"""
from __future__ import annotations

import colorsys

import cv2
import numpy as np

from pgn_deploy.contract import BadInputError

# Cityscapes' 19 training classes, RGB (road, sidewalk, building, wall, fence, pole, traffic
# light, traffic sign, vegetation, terrain, sky, person, rider, car, truck, bus, train,
# motorcycle, bicycle)
CITYSCAPES_RGB = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
COLORMAP = cv2.COLORMAP_INFERNO
LAYOUTS = ("stack", "side")
SEGMENTATION_WEIGHT = 0.6  # share of the class colour in the top panel
HEATMAP_WEIGHT = 0.75  # share of the heatmap in the bottom panel


def palette(num_classes: int) -> np.ndarray:
    """``num_classes`` x 3 uint8 BGR colours: Cityscapes' for 19 classes, else evenly spread
    hues (golden-ratio steps, fixed saturation and value): deterministic for any count."""
    if num_classes < 1:
        raise BadInputError(f"num_classes must be >= 1, got {num_classes}")
    if num_classes == len(CITYSCAPES_RGB):
        rgb = np.array(CITYSCAPES_RGB, dtype=np.uint8)
    else:
        hues = (np.arange(num_classes) * 0.6180339887498949) % 1.0
        rgb = np.array([[round(255 * c) for c in colorsys.hsv_to_rgb(h, 0.7, 0.95)] for h in hues], dtype=np.uint8)
    return rgb[:, ::-1].copy()


def colorize(pred: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Class map (H x W ints) -> BGR image; ids outside the palette are black."""
    valid = (pred >= 0) & (pred < len(colors))
    image = np.zeros((*pred.shape, 3), dtype=np.uint8)
    image[valid] = colors[pred[valid]]
    return image


def heatmap(score: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Score map -> BGR heatmap: ``clip((score - lo) / (hi - lo), 0, 1)`` scaled to 0..255
    (rounded), coloured with ``COLORMAP_INFERNO``; NaN shows as ``lo``, an empty range as 0."""
    values = np.nan_to_num(score.astype(np.float64), nan=lo, posinf=hi, neginf=lo)
    scaled = np.clip((values - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(values)
    return cv2.applyColorMap(np.rint(scaled * 255.0).astype(np.uint8), COLORMAP)


def blend(image: np.ndarray, layer: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * image + weight * layer``, rounded to uint8."""
    return cv2.addWeighted(image, 1.0 - weight, layer, weight, 0.0)


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` with ``text`` in its top-left corner (white on a dark band)."""
    out = image.copy()
    scale = max(0.35, min(out.shape[1] / 1400.0, 1.0))
    (width, height), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (min(width + 8, out.shape[1]), height + base + 6), (0, 0, 0), -1)
    cv2.putText(out, text, (4, height + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def overlay(image: np.ndarray, segmentation: np.ndarray, heat: np.ndarray, layout: str = "stack",
            label: str = "") -> np.ndarray:
    """The paper's Figure 1: segmentation blended over the image, and the heatmap blended over
    it below (``stack``, 2H x W) or to the right (``side``, H x 2W); ``label`` captions the
    heatmap panel."""
    if layout not in LAYOUTS:
        raise BadInputError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    top = blend(image, segmentation, SEGMENTATION_WEIGHT)
    bottom = blend(image, heat, HEATMAP_WEIGHT)
    if label:
        bottom = caption(bottom, label)
    return np.vstack([top, bottom]) if layout == "stack" else np.hstack([top, bottom])
