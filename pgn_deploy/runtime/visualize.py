"""Pictures of a result: coloured segmentation, PGN heatmap, and the Figure-1 style overlay.

Every function takes and returns BGR uint8 images (OpenCV's order), H x W x 3.

Scales. A calibrated map is shown on its in-distribution percentile rank ``r``
(:func:`pgn_deploy.runtime.stats.percentile_rank`), coloured by ``-log10(1 - r) / 3``: dark for
the typical in-distribution pixel, the top of the colour map for a score above 99.9 % of all
in-distribution pixels, so frames and models compare. An uncalibrated map has no unit: its
colours span this image's 1st..99th percentile and say nothing across images (the colour bar
says so). Beside every heatmap a colour bar (:func:`colorbar`) gives the scale and its unit,
beside every segmentation a legend (:func:`legend`) names the classes present.
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


RANK_DECADES = 3.0  # calibrated colours saturate at rank 1 - 10^-3 = 0.999
PANEL_WIDTH = 132  # width of the colour bar and legend panels, pixels
PANEL_BACKGROUND = (32, 32, 32)
MASK_COLOR = (255, 255, 0)  # BGR cyan: OoD mask contour
BOX_COLOR = (0, 255, 0)  # BGR green: instance boxes


def rank_position(rank: np.ndarray) -> np.ndarray:
    """Colour position in [0, 1] of percentile ranks: ``min(-log10(1 - rank), 3) / 3`` (NaN -> 0)."""
    rank = np.nan_to_num(np.asarray(rank, np.float64), nan=0.0)
    rest = np.clip(1.0 - rank, 10.0 ** -RANK_DECADES, 1.0)
    return np.clip(-np.log10(rest) / RANK_DECADES, 0.0, 1.0)


def rank_heatmap(rank: np.ndarray) -> np.ndarray:
    """Percentile-rank map (H x W in [0, 1]) -> BGR heatmap on the :func:`rank_position` scale."""
    return cv2.applyColorMap(np.rint(rank_position(rank) * 255.0).astype(np.uint8), COLORMAP)


def _text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float,
          color: tuple[int, int, int] = (255, 255, 255)) -> None:
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def _font_scale(height: int) -> float:
    return float(np.clip(height / 700.0, 0.35, 0.6))


def colorbar(height: int, ticks: list[tuple[float, str]], title: list[str],
             marks: list[tuple[float, str]] | None = None) -> np.ndarray:
    """A ``height`` x :data:`PANEL_WIDTH` panel: the colour map bottom (0) to top (1), ``ticks``
    (position in [0, 1], label) on its right, ``title`` lines above it, and ``marks`` (e.g. the
    OoD threshold) as cyan lines across the bar."""
    panel = np.full((height, PANEL_WIDTH, 3), PANEL_BACKGROUND, np.uint8)
    scale = _font_scale(height)
    line = int(round(22 * scale / 0.45))
    top = 6 + line * len(title) + line // 2
    bottom = height - max(8, line // 2)
    for k, text in enumerate(title):
        _text(panel, text, (4, 4 + line * (k + 1) - line // 4), scale)
    if bottom - top < 10:
        return panel
    gradient = np.linspace(255, 0, bottom - top).astype(np.uint8)[:, None]
    bar = cv2.applyColorMap(np.repeat(gradient, 18, axis=1), COLORMAP)
    panel[top:bottom, 6:24] = bar

    def row(position: float) -> int:
        return int(round(bottom - 1 - position * (bottom - top - 1)))

    for position, label in ticks:
        y = row(position)
        cv2.line(panel, (24, y), (29, y), (255, 255, 255), 1)
        _text(panel, label, (32, y + line // 4), scale)
    for position, label in marks or []:
        y = row(position)
        cv2.line(panel, (2, y), (28, y), MASK_COLOR, 2)
        _text(panel, label, (32, y + line // 4), scale, MASK_COLOR)
    return panel


def rank_colorbar(height: int, threshold: float | None = None) -> np.ndarray:
    """The colour bar of calibrated heatmaps (unit: in-distribution percentile rank)."""
    ticks = [(0.0, "0"), (1 / 3, "0.9"), (2 / 3, "0.99"), (1.0, ">=0.999")]
    marks = [(float(rank_position(threshold)), f"thr {threshold:g}")] if threshold is not None else []
    return colorbar(height, ticks, ["in-distrib.", "percentile rank"], marks)


def raw_colorbar(height: int, lo: float, hi: float, threshold: float | None = None) -> np.ndarray:
    """The colour bar of uncalibrated heatmaps: raw values ``lo``..``hi`` of this image only."""
    ticks = [(0.0, f"{lo:.3g}"), (0.5, f"{(lo + hi) / 2:.3g}"), (1.0, f"{hi:.3g}")]
    marks = []
    if threshold is not None and hi > lo and lo <= threshold <= hi:
        marks = [((threshold - lo) / (hi - lo), f"thr {threshold:.3g}")]
    return colorbar(height, ticks, ["raw score, no unit", "this image 1-99%"], marks)


def legend(height: int, pred: np.ndarray, colors: np.ndarray, names: list[str] | None) -> np.ndarray:
    """A ``height`` x :data:`PANEL_WIDTH` panel naming the classes present in ``pred``, most
    pixels first, each with its colour swatch (as many as fit; the rest counted)."""
    panel = np.full((height, PANEL_WIDTH, 3), PANEL_BACKGROUND, np.uint8)
    scale = _font_scale(height)
    line = int(round(22 * scale / 0.45))
    counts = np.bincount(pred[(pred >= 0) & (pred < len(colors))].ravel(), minlength=len(colors))
    present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    _text(panel, "classes", (4, line - line // 4), scale)
    fit = max(0, (height - line - 4) // line)
    shown = present if len(present) <= fit else present[:max(0, fit - 1)]
    for k, cls in enumerate(shown):
        y = line + 4 + k * line
        panel[y:y + line - 4, 4:4 + line - 4] = colors[cls]
        name = names[cls] if names and cls < len(names) else f"class {cls}"
        _text(panel, name[:14], (line + 4, y + line - 7), scale)
    if len(shown) < len(present):
        _text(panel, f"+{len(present) - len(shown)} more", (4, line + 4 + len(shown) * line + line - 7), scale)
    return panel


def draw_detections(image: np.ndarray, mask: np.ndarray | None,
                    boxes: list[tuple[tuple[int, int, int, int], str]]) -> np.ndarray:
    """``image`` with the OoD ``mask``'s contour (cyan) and instance ``boxes`` ``((x, y, w, h),
    label)`` (green, label above the box)."""
    out = image.copy()
    if mask is not None:
        contours, _ = cv2.findContours(np.ascontiguousarray(mask, np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, MASK_COLOR, 1, cv2.LINE_AA)
    scale = _font_scale(out.shape[0])
    for (x, y, w, h), label in boxes:
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), BOX_COLOR, 2)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = max(0, y - th - base - 2)
        cv2.rectangle(out, (x, top), (min(x + tw + 4, out.shape[1] - 1), top + th + base + 2), BOX_COLOR, -1)
        cv2.putText(out, label, (x + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out


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
            label: str = "", legend_panel: np.ndarray | None = None, bar: np.ndarray | None = None,
            mask: np.ndarray | None = None,
            boxes: list[tuple[tuple[int, int, int, int], str]] | None = None) -> np.ndarray:
    """The paper's Figure 1: segmentation blended over the image, and the heatmap blended over
    it below (``stack``) or to the right (``side``); ``label`` captions the heatmap panel.

    Both panels show the OoD ``mask`` contour and the instance ``boxes`` (:func:`draw_detections`).
    ``legend_panel`` and ``bar`` (from :func:`legend` and :func:`colorbar`, :data:`PANEL_WIDTH`
    wide, :func:`panel_heights` high) go right of the segmentation and of the heatmap
    (``stack``: 2H x (W + P)), or stacked in one column at the right (``side``: H x (2W + P)).
    """
    if layout not in LAYOUTS:
        raise BadInputError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    top = draw_detections(blend(image, segmentation, SEGMENTATION_WEIGHT), mask, boxes or [])
    bottom = draw_detections(blend(image, heat, HEATMAP_WEIGHT), mask, boxes or [])
    if label:
        bottom = caption(bottom, label)
    if layout == "stack":
        if legend_panel is not None and bar is not None:
            top, bottom = np.hstack([top, legend_panel]), np.hstack([bottom, bar])
        return np.vstack([top, bottom])
    picture = np.hstack([top, bottom])
    if legend_panel is not None and bar is not None:
        picture = np.hstack([picture, np.vstack([legend_panel, bar])])
    return picture


def panel_heights(layout: str, height: int) -> tuple[int, int]:
    """Heights of the legend and the colour bar :func:`overlay` takes for an image ``height`` high."""
    return (height, height) if layout == "stack" else (height // 2, height - height // 2)
