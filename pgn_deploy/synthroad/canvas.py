"""Drawing primitives of SynthRoad: a pinhole camera over a flat ground and a labelled canvas.

World coordinates are in camera heights (1 unit is about 1.5 m): X to the right, Y up from
the ground, Z forward from the camera, which sits at (0, 1, 0) and looks along +Z. The
:class:`Canvas` paints polygons into a label map (train ids) and a material map at once, so
labels and pixels always agree; :meth:`Canvas.colorize` turns materials into RGB with
per-material colour and noise textures, and :func:`finish_image` applies lighting, blur and
sensor noise.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

_COORD_LIMIT = 30000.0  # keeps projected coordinates well inside OpenCV's fixed-point range


@dataclasses.dataclass(frozen=True)
class Camera:
    """Pinhole camera ``height`` x ``width`` pixels, focal ``f`` pixels, principal point
    (``cx``, ``cy``); ``cy`` is the horizon row, ``cx`` the vanishing point's column."""

    height: int
    width: int
    f: float
    cx: float
    cy: float

    @property
    def z_near(self) -> float:
        """Depth of the ground seen at the bottom image row."""
        return self.f / (self.height - self.cy)

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points (X, Y, Z), Z > 0 -> (N, 2) float pixel coordinates (u, v)."""
        points = np.asarray(points, np.float64)
        z = points[:, 2]
        if not (z > 0).all():
            raise ValueError("SynthRoad projects only points in front of the camera (Z > 0)")
        u = self.cx + self.f * points[:, 0] / z
        v = self.cy + self.f * (1.0 - points[:, 1]) / z
        return np.clip(np.stack([u, v], axis=1), -_COORD_LIMIT, _COORD_LIMIT)

    def pixels(self, size: float, z: float) -> float:
        """Image size in pixels of a length ``size`` (world units) at depth ``z``."""
        return self.f * size / z


def box_x(x0: float, x1: float, y0: float, y1: float, z: float) -> np.ndarray:
    """Upright rectangle facing the camera (plane Z = z)."""
    return np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], np.float64)


def box_z(x: float, y0: float, y1: float, z0: float, z1: float) -> np.ndarray:
    """Upright rectangle along the street (plane X = x), e.g. a facade or a car's side."""
    return np.array([[x, y0, z0], [x, y0, z1], [x, y1, z1], [x, y1, z0]], np.float64)


def box_y(x0: float, x1: float, y: float, z0: float, z1: float) -> np.ndarray:
    """Horizontal rectangle at height y, e.g. a ground patch (y = 0) or a car roof."""
    return np.array([[x0, y, z0], [x1, y, z0], [x1, y, z1], [x0, y, z1]], np.float64)


@dataclasses.dataclass
class Material:
    """Base colour (RGB, 0..255) and relative noise amplitudes: per pixel (``fine``), over a
    few pixels (``medium``) and over tens of pixels (``coarse``)."""

    rgb: tuple[float, float, float]
    fine: float = 0.03
    medium: float = 0.04
    coarse: float = 0.05


class Canvas:
    """Label map, material map and shade map of one frame, painted together.

    ``label``: H x W uint8 train ids; ``material``: H x W uint16 index into ``materials``;
    ``shade``: H x W float32 brightness factor (shadows on the ground, darker faces).
    """

    def __init__(self, camera: Camera, background_label: int, background: Material):
        h, w = camera.height, camera.width
        self.camera = camera
        self.materials: list[Material] = [background]
        self.label = np.full((h, w), background_label, np.uint8)
        self.material = np.zeros((h, w), np.uint16)
        self.shade = np.ones((h, w), np.float32)

    def add_material(self, material: Material) -> int:
        """Register a material; returns its index for :meth:`fill`."""
        if len(self.materials) >= 65535:
            raise RuntimeError("a SynthRoad frame uses at most 65535 materials")
        self.materials.append(material)
        return len(self.materials) - 1

    def fill(self, polygons: list[np.ndarray], label: int, material: int, shade: float = 1.0) -> None:
        """Fill image-space polygons ((N, 2) float pixel coordinates) with a label and material."""
        if not polygons:
            return
        pts = [np.round(p).astype(np.int32) for p in polygons]
        cv2.fillPoly(self.label, pts, int(label))
        cv2.fillPoly(self.material, pts, int(material))
        cv2.fillPoly(self.shade, pts, float(shade))

    def fill_world(self, quads: list[np.ndarray], label: int, material: int, shade: float = 1.0) -> None:
        """Fill world-space polygons ((N, 3) points, Z > 0) projected through the camera."""
        if not quads:
            return
        flat = self.camera.project(np.concatenate(quads))
        self.fill(np.split(flat, np.cumsum([len(q) for q in quads])[:-1]), label, material, shade)

    def ellipse(self, center: tuple[float, float], axes: tuple[float, float], angle: float,
                label: int, material: int, shade: float = 1.0) -> None:
        """Fill an image-space ellipse (centre and half axes in pixels, angle in degrees)."""
        poly = cv2.ellipse2Poly(
            (int(round(center[0])), int(round(center[1]))),
            (max(1, int(round(axes[0]))), max(1, int(round(axes[1])))),
            int(round(angle)), 0, 360, 10,
        )
        self.fill([poly.astype(np.float64)], label, material, shade)

    def shadow(self, quads: list[np.ndarray], factor: float) -> None:
        """Darken the ground under world-space polygons (labels and materials unchanged)."""
        flat = np.round(self.camera.project(np.concatenate(quads))).astype(np.int32)
        cv2.fillPoly(self.shade, np.split(flat, np.cumsum([len(q) for q in quads])[:-1]), float(factor))

    def colorize(self, rng: np.random.Generator, gradient: dict[int, tuple[np.ndarray, np.ndarray]]
                 ) -> np.ndarray:
        """RGB image (H x W x 3 float32, 0..255 scale) of the painted materials.

        ``gradient`` maps a material to (colour at the top row, colour at the horizon): its
        base colour is blended vertically (the sky).
        """
        h, w = self.label.shape
        fine = rng.standard_normal((h, w), dtype=np.float32)
        medium = _smooth_noise(rng, h, w, 5)
        coarse = _smooth_noise(rng, h, w, 40)
        table = np.array([m.rgb for m in self.materials], np.float32)
        amps = np.array([(m.fine, m.medium, m.coarse) for m in self.materials], np.float32)
        mat = self.material
        texture = 1.0 + amps[mat, 0] * fine + amps[mat, 1] * medium + amps[mat, 2] * coarse
        image = table[mat]
        for index, (top, horizon) in gradient.items():
            t = np.clip(np.arange(h, dtype=np.float32) / max(self.camera.cy, 1.0), 0.0, 1.0) ** 1.5
            rows = top[None, :] * (1.0 - t[:, None]) + horizon[None, :] * t[:, None]
            where = mat == index
            image[where] = np.broadcast_to(rows[:, None, :], (h, w, 3))[where]
        return image * (texture * self.shade)[..., None]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Zero-mean noise of unit scale varying over about ``cell`` pixels (H x W float32)."""
    small = rng.standard_normal((h // cell + 2, w // cell + 2), dtype=np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def finish_image(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Lighting (gain, colour cast, gamma), lens blur and sensor noise; -> H x W x 3 uint8."""
    gain = rng.uniform(0.65, 1.25)
    tint = 1.0 + rng.uniform(-0.07, 0.07, size=3).astype(np.float32)
    gamma = rng.uniform(0.8, 1.25)
    out = np.clip(image * (gain * tint / 255.0).astype(np.float32), 0.0, 1.0)
    out = cv2.pow(out, gamma) * 255.0
    sigma = rng.uniform(0.0, 0.9)
    if sigma > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    noise = rng.standard_normal(out.shape, dtype=np.float32)
    out += noise * np.float32(rng.uniform(1.0, 4.0)) + np.float32(0.5)
    return np.clip(out, 0, 255).astype(np.uint8)
