"""Out-of-distribution objects of SynthRoad.

Shapes (stars, jagged polygons, blob clusters, rings, crosses, crescents) that no street class
has, covered with textures (checkers, stripes, concentric rings, rainbow gradients, speckled
solids) in vivid, fully saturated colours that the in-distribution palette never uses. On the
``road`` placement the objects stand on visible road within about 45 m, sized as 0.2-0.9 m
debris; on ``anywhere`` they are larger (0.7-3.5 m) and stand on any ground or float anywhere
in the frame. The returned instance map is exactly the set of pixels painted.
"""
from __future__ import annotations

import colorsys

import cv2
import numpy as np

from pgn_deploy.synthroad.classes import ROAD, SIDEWALK, TERRAIN
from pgn_deploy.synthroad.scene import Street

_SHAPES = ("star", "jagged", "blobs", "ring", "cross", "crescent")
_TEXTURES = ("checker", "stripes", "rings", "rainbow", "speckle")


def paint_ood_objects(rng: np.random.Generator, image: np.ndarray, street: Street, placement: str
                      ) -> np.ndarray:
    """Paint 1-3 objects into ``image`` (H x W x 3 float32, 0..255, changed in place); a spot
    that leaves no visible pixel is drawn again (up to five tries per object).

    Returns the instance map (H x W uint8): k on the pixels of the k-th object that was
    painted (a later object covers an earlier one), 0 elsewhere.
    """
    h, w = street.canvas.label.shape
    instances = np.zeros((h, w), np.uint8)
    wanted, placed = int(rng.integers(1, 4)), 0
    for _ in range(5 * wanted):
        if placed == wanted:
            break
        spot = _pick_spot(rng, street, placement, instances)
        if spot is None:
            continue
        u, v, size, grounded = spot
        mask = _shape_mask(rng, h, w, u, v, size, grounded)
        if not mask.any():
            continue
        placed += 1
        if grounded:
            _cast_shadow(image, mask, u, v, size)
        ys, xs = np.nonzero(mask)
        box = np.s_[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
        image[box][mask[box]] = _texture(rng, ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min())[mask[box]]
        instances[mask] = instances.max() + 1
    return instances


def _pick_spot(rng: np.random.Generator, street: Street, placement: str, taken: np.ndarray
               ) -> tuple[float, float, float, bool] | None:
    """(u, v, size in pixels, stands on the ground) of a new object, or None if no room."""
    cam, label = street.camera, street.canvas.label
    h, w = label.shape
    floating = placement == "anywhere" and rng.uniform() < 0.3
    if floating:
        return rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.1, 0.3) * h, False
    rows = np.arange(h)[:, None]
    far = cam.cy + cam.f / 30.0  # ground closer than 30 units (about 45 m)
    classes = (ROAD,) if placement == "road" else (ROAD, SIDEWALK, TERRAIN)
    where = np.isin(label, classes) & (rows > far) & (taken == 0)
    where[:, :4] = where[:, -4:] = False
    candidates = np.flatnonzero(where)
    if candidates.size == 0:
        return None
    v, u = divmod(int(candidates[rng.integers(candidates.size)]), w)
    depth = cam.f / max(v - cam.cy, 1.0)
    lo, hi = (0.15, 0.6) if placement == "road" else (0.5, 2.3)
    size = float(np.clip(cam.pixels(rng.uniform(lo, hi), depth), 8, (0.3 if placement == "road" else 0.45) * h))
    return float(u), float(v), size, True


def _shape_mask(rng: np.random.Generator, h: int, w: int, u: float, v: float, size: float,
                grounded: bool) -> np.ndarray:
    """Boolean mask of one random shape of height ``size`` pixels; its lowest point at (u, v)
    when ``grounded``, else centred there."""
    add, cut = _unit_shape(rng, str(rng.choice(_SHAPES)))
    stretch = np.array([rng.uniform(0.6, 1.8), 1.0])
    angle = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    polys = [(p @ rot.T) * stretch for p in add + cut]
    pts = np.concatenate(polys[: len(add)])
    scale = size / max(np.ptp(pts[:, 1]), 1e-6)
    offset = np.array([u, v]) - (np.array([pts[:, 0].mean(), pts[:, 1].max()]) * scale if grounded
                                 else pts.mean(axis=0) * scale)
    canvas = np.zeros((h, w), np.uint8)
    placed = [np.round(p * scale + offset).astype(np.int32) for p in polys]
    for poly in placed[: len(add)]:
        cv2.fillPoly(canvas, [poly], 1)
    for poly in placed[len(add):]:
        cv2.fillPoly(canvas, [poly], 0)
    return canvas.astype(bool)


def _circle(cx: float, cy: float, r: float, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _unit_shape(rng: np.random.Generator, kind: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Polygons to fill and polygons to cut out, about one unit across, centred at 0."""
    if kind == "star":
        n = int(rng.integers(4, 10))
        t = np.arange(2 * n) * np.pi / n
        r = np.where(np.arange(2 * n) % 2 == 0, 0.5, rng.uniform(0.15, 0.35))
        return [np.stack([r * np.cos(t), r * np.sin(t)], axis=1)], []
    if kind == "jagged":
        n = int(rng.integers(7, 15))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(0.2, 0.5, n)
        return [np.stack([r * np.cos(t), r * np.sin(t)], axis=1)], []
    if kind == "blobs":
        return [_circle(rng.uniform(-0.25, 0.25), rng.uniform(-0.25, 0.25), rng.uniform(0.12, 0.3))
                for _ in range(int(rng.integers(3, 7)))], []
    if kind == "ring":
        return [_circle(0, 0, 0.5)], [_circle(rng.uniform(-0.1, 0.1), 0, rng.uniform(0.15, 0.3))]
    if kind == "cross":
        a, b = rng.uniform(0.08, 0.2), 0.5
        return [np.array([[-a, -b], [a, -b], [a, b], [-a, b]]),
                np.array([[-b, -a], [b, -a], [b, a], [-b, a]])], []
    return [_circle(0, 0, 0.5)], [_circle(rng.uniform(0.2, 0.35), rng.uniform(-0.15, 0.15), 0.45)]


def _vivid(rng: np.random.Generator) -> np.ndarray:
    """A fully saturated, bright colour (RGB 0..255)."""
    return 255.0 * np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.85, 1.0), rng.uniform(0.85, 1.0)))


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An h x w x 3 float32 texture of vivid colours."""
    kind = str(rng.choice(_TEXTURES))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = _vivid(rng)
    b = _vivid(rng) if rng.uniform() < 0.6 else np.full(3, 255.0 * rng.integers(0, 2))
    if kind == "checker":
        cell = rng.uniform(2, 9)
        t = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2)[..., None]
    elif kind == "stripes":
        angle, period = rng.uniform(0, np.pi), rng.uniform(3, 12)
        t = ((xx * np.cos(angle) + yy * np.sin(angle)) % period < period / 2)[..., None]
    elif kind == "rings":
        cx, cy, period = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(3, 10)
        t = (np.hypot(xx - cx, yy - cy) % period < period / 2)[..., None]
    elif kind == "rainbow":
        angle, period = rng.uniform(0, np.pi), rng.uniform(20, 80)
        hue = ((xx * np.cos(angle) + yy * np.sin(angle)) / period % 1.0 * 179).astype(np.uint8)
        hsv = np.stack([hue, np.full_like(hue, 255), np.full_like(hue, 240)], axis=-1)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)
    else:
        t = (rng.uniform(size=(h, w)) < 0.15)[..., None]
    return (a * (1 - t) + b * t).astype(np.float32)


def _cast_shadow(image: np.ndarray, mask: np.ndarray, u: float, v: float, size: float) -> None:
    """Darken the road or ground in a flat ellipse under a standing object (not the object)."""
    h, w = mask.shape
    width = max(np.ptp(np.flatnonzero(mask.any(axis=0))), 2)
    shadow = np.zeros((h, w), np.uint8)
    cv2.ellipse(shadow, (int(u), int(v)), (int(width * 0.6), max(1, int(size * 0.12))), 0, 0, 360, 1, -1)
    image[(shadow > 0) & ~mask] *= 0.55
