"""The in-distribution street of a SynthRoad frame.

:func:`paint_street` lays out a straight street seen from a car (random camera pose, road with
2-4 lanes and markings, sidewalks with kerbs, terrain strips, building facades with windows or
vegetation on each side, an open or closed far end, sky with clouds) and places cars, persons,
poles with traffic signs and trees on it, drawn far to near. Everything uses only the ten
classes of :data:`pgn_deploy.synthroad.classes.USED_CLASSES`, and colours that stay natural
(muted, not the saturated ones :mod:`pgn_deploy.synthroad.ood_objects` uses).
"""
from __future__ import annotations

import colorsys
import dataclasses
from collections.abc import Callable

import numpy as np

from pgn_deploy.synthroad.canvas import Camera, Canvas, Material, box_x, box_y, box_z
from pgn_deploy.synthroad.classes import (
    BUILDING,
    CAR,
    PERSON,
    POLE,
    ROAD,
    SIDEWALK,
    SIGN,
    SKY,
    TERRAIN,
    VEGETATION,
)

Z_FAR = 400.0
FACADE_COLORS = [(185, 175, 155), (205, 195, 175), (150, 140, 130), (165, 105, 85),
                 (200, 200, 195), (140, 150, 160), (210, 200, 160), (120, 115, 110)]
PAVING_COLORS = [(150, 150, 145), (172, 162, 142), (160, 122, 112), (128, 128, 134)]
CAR_COLORS = [(228, 228, 228), (30, 30, 35), (118, 118, 124), (170, 170, 176), (112, 22, 24),
              (26, 42, 92), (60, 72, 62), (140, 122, 92), (80, 80, 86)]
SKIN_COLORS = [(225, 190, 160), (200, 150, 120), (140, 95, 70), (92, 62, 46)]


@dataclasses.dataclass
class Side:
    """One side of the street: -1 left, +1 right; lateral X positions of its edges."""

    sign: int
    road_edge: float
    sidewalk: float
    terrain: float
    kind: str  # "building", "green" or "open"

    @property
    def kerb_out(self) -> float:
        """X of the sidewalk's outer edge."""
        return self.road_edge + self.sign * self.sidewalk

    @property
    def facade(self) -> float:
        """X of the facade (or hedge) line."""
        return self.kerb_out + self.sign * self.terrain


@dataclasses.dataclass
class Street:
    """A painted street: its canvas, its sky gradient and the layout the OoD painter reads."""

    canvas: Canvas
    gradient: dict[int, tuple[np.ndarray, np.ndarray]]
    road: tuple[float, float]
    z_end: float

    @property
    def camera(self) -> Camera:
        """The camera of the street's canvas."""
        return self.canvas.camera

    def colorize(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(image H x W x 3 float32 0..255, train ids H x W uint8, a copy)."""
        return self.canvas.colorize(rng, self.gradient), self.canvas.label.copy()


def _jitter(rng: np.random.Generator, rgb, amount: float = 12.0) -> tuple[float, float, float]:
    return tuple(float(np.clip(c + rng.uniform(-amount, amount), 0, 255)) for c in rgb)


def _muted(rng: np.random.Generator) -> tuple[float, float, float]:
    """A natural clothing colour: low saturation, moderate value."""
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.5), rng.uniform(0.15, 0.75))
    return (255 * r, 255 * g, 255 * b)


def paint_street(rng: np.random.Generator, height: int, width: int) -> Street:
    """Lay out and paint one street scene (labels, materials, shade) at ``height`` x ``width``."""
    cam = Camera(height, width, f=width * rng.uniform(0.55, 0.8),
                 cx=width * rng.uniform(0.4, 0.6), cy=height * rng.uniform(0.36, 0.5))
    scene = rng.choice(["urban", "suburban", "rural"], p=[0.5, 0.32, 0.18])
    top = np.array(_jitter(rng, (80, 135, 205), 25), np.float32)
    horizon = np.array(_jitter(rng, (190, 208, 228), 15), np.float32)
    if rng.uniform() < 0.3:  # overcast
        grey = rng.uniform(150, 210)
        top, horizon = np.full(3, grey * 0.9, np.float32), np.full(3, grey, np.float32)
    canvas = Canvas(cam, SKY, Material(tuple(top), 0.01, 0.02, 0.03))
    gradient = {0: (top, horizon)}
    _paint_clouds(rng, canvas)

    lanes = int(rng.integers(2, 5))
    road_width = lanes * rng.uniform(2.0, 2.6)
    left_edge = -rng.uniform(0.2, 0.8) * road_width
    sides = [_make_side(rng, sign, edge, scene)
             for sign, edge in ((-1, left_edge), (1, left_edge + road_width))]
    closed_end = scene == "urban" and rng.uniform() < 0.6
    z_end = rng.uniform(50, 140) if closed_end else Z_FAR

    _paint_ground(rng, canvas, scene)
    _paint_road(rng, canvas, sides, lanes, z_end)
    _paint_far_end(rng, canvas, closed_end, z_end)
    for side in sides:
        _paint_roadside(rng, canvas, side, z_end)
    draws = _place_objects(rng, cam, sides, lanes, scene, z_end)
    for _, draw in sorted(draws, key=lambda item: -item[0]):
        draw(canvas)
    return Street(canvas, gradient, (sides[0].road_edge, sides[1].road_edge), z_end)


def _make_side(rng: np.random.Generator, sign: int, edge: float, scene: str) -> Side:
    if scene == "rural":
        sidewalk = rng.uniform(1.0, 2.0) if rng.uniform() < 0.3 else 0.0
        return Side(sign, edge, sidewalk, rng.uniform(1.0, 6.0),
                    str(rng.choice(["green", "open", "building"], p=[0.5, 0.35, 0.15])))
    terrain = rng.uniform(0.5, 3.0) if scene == "suburban" or rng.uniform() < 0.25 else 0.0
    kind = "building" if scene == "urban" or rng.uniform() < 0.55 else "green"
    return Side(sign, edge, rng.uniform(1.5, 3.5), terrain, kind)


def _paint_clouds(rng: np.random.Generator, canvas: Canvas) -> None:
    cam = canvas.camera
    cloud = canvas.add_material(Material(_jitter(rng, (232, 234, 238), 10), 0.01, 0.06, 0.05))
    for _ in range(int(rng.integers(0, 6))):
        u, v = rng.uniform(0, cam.width), rng.uniform(0, cam.cy * 0.8)
        a = rng.uniform(0.05, 0.2) * cam.width
        for _ in range(int(rng.integers(2, 5))):
            canvas.ellipse((u + rng.uniform(-a, a), v + rng.uniform(-a, a) * 0.2),
                           (a * rng.uniform(0.4, 1.0), a * rng.uniform(0.12, 0.3)), 0, SKY, cloud)


def _paint_ground(rng: np.random.Generator, canvas: Canvas, scene: str) -> None:
    cam = canvas.camera
    grass = (rng.uniform(80, 120), rng.uniform(110, 150), rng.uniform(45, 75))
    dirt = (rng.uniform(120, 150), rng.uniform(100, 120), rng.uniform(70, 90))
    terrain = canvas.add_material(Material(grass if rng.uniform() < 0.7 else dirt, 0.15, 0.15, 0.15))
    z0 = cam.z_near * 0.9
    canvas.fill_world([box_y(-200, 200, 0, z0, Z_FAR)], TERRAIN, terrain)
    if scene != "rural":  # distant tree line behind the terrain
        green = canvas.add_material(Material(_jitter(rng, (60, 85, 45), 10), 0.2, 0.25, 0.1))
        canvas.fill_world([box_x(-300, 300, 0, rng.uniform(4, 12), Z_FAR * 0.95)], VEGETATION, green)


def _paint_road(rng: np.random.Generator, canvas: Canvas, sides: list[Side], lanes: int,
                z_end: float) -> None:
    cam = canvas.camera
    z0 = cam.z_near * 0.9
    x0, x1 = sides[0].road_edge, sides[1].road_edge
    grey = rng.uniform(70, 120)
    asphalt_rgb = _jitter(rng, (grey, grey, grey + 3), 5)
    asphalt = canvas.add_material(Material(asphalt_rgb, 0.08, 0.06, 0.08))
    canvas.fill_world([box_y(x0, x1, 0, z0, z_end)], ROAD, asphalt)
    patch = canvas.add_material(Material(tuple(c * rng.uniform(0.7, 0.9) for c in asphalt_rgb),
                                         0.08, 0.05, 0.05))
    patches = []
    for _ in range(int(rng.integers(0, 4))):
        px, pz = rng.uniform(x0, x1), rng.uniform(z0, 40)
        patches.append(box_y(px, min(px + rng.uniform(0.5, 3), x1), 0, pz, pz + rng.uniform(1, 6)))
    canvas.fill_world(patches, ROAD, patch)

    yellow = rng.uniform() < 0.2
    paint = canvas.add_material(Material(
        _jitter(rng, (220, 190, 60) if yellow else (222, 222, 215), 10), 0.05, 0.08, 0.1))
    lane_width = (x1 - x0) / lanes
    marks, half = [], 0.07
    dash, gap, phase = rng.uniform(1.5, 3.0), rng.uniform(2.5, 5.0), rng.uniform(0, 6)
    for k in range(1, lanes):
        x = x0 + k * lane_width
        if k == lanes // 2 and rng.uniform() < 0.4:  # solid centre line
            marks.append(box_y(x - half, x + half, 0, z0, z_end))
            continue
        z = z0 - phase
        while z < min(z_end, 150):
            if z + dash > z0:
                marks.append(box_y(x - half, x + half, 0, max(z, z0), z + dash))
            z += dash + gap
    if rng.uniform() < 0.6:
        for x in (x0 + 0.25, x1 - 0.25):
            marks.append(box_y(x - half, x + half, 0, z0, z_end))
    if rng.uniform() < 0.2:  # zebra crossing
        zc, stripe = rng.uniform(cam.z_near + 2, 25), rng.uniform(0.35, 0.5)
        xs = np.arange(x0 + 0.3, x1 - 0.3, 2 * stripe)
        marks.extend(box_y(x, x + stripe, 0, zc, zc + rng.uniform(2, 3)) for x in xs)
    canvas.fill_world(marks, ROAD, paint)


def _paint_far_end(rng: np.random.Generator, canvas: Canvas, closed: bool, z_end: float) -> None:
    if not closed:
        return
    facade = canvas.add_material(Material(_jitter(rng, FACADE_COLORS[rng.integers(len(FACADE_COLORS))]),
                                          0.04, 0.04, 0.06))
    height = rng.uniform(5, 25)
    canvas.fill_world([box_x(-200, 200, 0, height, z_end)], BUILDING, facade)
    glass = canvas.add_material(Material(_jitter(rng, (60, 68, 80), 15), 0.05, 0.15, 0.05))
    windows = [box_x(x, x + 0.9, y, y + 1.1, z_end)
               for y in np.arange(1.0, height - 1.2, 2.0) for x in np.arange(-60, 60, 2.2)]
    canvas.fill_world(windows, BUILDING, glass)


def _paint_roadside(rng: np.random.Generator, canvas: Canvas, side: Side, z_end: float) -> None:
    """Sidewalk (kerb, paving joints), then the facades or hedges, far to near."""
    cam = canvas.camera
    z0 = cam.z_near * 0.9
    if side.sidewalk > 0:
        paving_rgb = _jitter(rng, PAVING_COLORS[rng.integers(len(PAVING_COLORS))], 10)
        paving = canvas.add_material(Material(paving_rgb, 0.06, 0.05, 0.06))
        x_in, x_out = sorted((side.road_edge, side.kerb_out))
        canvas.fill_world([box_y(x_in, x_out, 0, z0, z_end)], SIDEWALK, paving)
        joint = canvas.add_material(Material(tuple(c * 0.72 for c in paving_rgb), 0.05, 0.05, 0.05))
        step = rng.uniform(0.8, 2.0)
        canvas.fill_world([box_y(x_in, x_out, 0, z, z + 0.04) for z in np.arange(z0, min(z_end, 80), step)],
                          SIDEWALK, joint)
        kerb = canvas.add_material(Material(_jitter(rng, (185, 185, 180), 15), 0.04, 0.05, 0.05))
        canvas.fill_world([box_z(side.road_edge, 0, 0.1, z0, z_end)], SIDEWALK, kerb)
    if side.kind == "open":
        return
    segments, z = [], z0 * 0.8
    while z < z_end:
        length = rng.uniform(5, 18)
        segments.append((z, min(z + length, z_end)))
        z += length
    glass = canvas.add_material(Material(_jitter(rng, (58, 66, 80), 18), 0.05, 0.15, 0.05))
    face_shade = rng.uniform(0.65, 1.05)
    for za, zb in reversed(segments):
        if side.kind == "green" or rng.uniform() < 0.12:
            _paint_hedge(rng, canvas, side, za, zb)
        else:
            _paint_building(rng, canvas, side, za, zb, glass, face_shade)


def _paint_building(rng: np.random.Generator, canvas: Canvas, side: Side, za: float, zb: float,
                    glass: int, face_shade: float) -> None:
    x, s = side.facade, side.sign
    rgb = _jitter(rng, FACADE_COLORS[rng.integers(len(FACADE_COLORS))], 15)
    wall = canvas.add_material(Material(rgb, 0.04, 0.04, 0.06))
    height = rng.uniform(3.5, 16.0)
    canvas.fill_world([box_x(x, x + s * 12, 0, height, za)], BUILDING, wall, face_shade * 0.85)
    canvas.fill_world([box_z(x, 0, height, za, zb)], BUILDING, wall, face_shade)
    cornice = canvas.add_material(Material(tuple(c * 0.7 for c in rgb), 0.03, 0.03, 0.03))
    canvas.fill_world([box_z(x, height - 0.35, height, za, zb)], BUILDING, cornice, face_shade)
    spacing, win_w, win_h = rng.uniform(1.4, 2.4), rng.uniform(0.45, 0.9), rng.uniform(0.8, 1.3)
    windows = [box_z(x, y, y + win_h, z, z + win_w)
               for y in np.arange(rng.uniform(0.7, 1.2), height - win_h - 0.4, 2.0)
               for z in np.arange(za + 0.4, zb - win_w - 0.2, spacing)]
    canvas.fill_world(windows, BUILDING, glass, face_shade)


def _paint_hedge(rng: np.random.Generator, canvas: Canvas, side: Side, za: float, zb: float) -> None:
    green = canvas.add_material(Material(_jitter(rng, (62, 96, 42), 15), 0.25, 0.25, 0.1))
    canvas.fill_world([box_z(side.facade, 0, rng.uniform(0.6, 2.5), za, zb)], VEGETATION, green)


Draw = tuple[float, Callable[[Canvas], None]]


def _place_objects(rng: np.random.Generator, cam: Camera, sides: list[Side], lanes: int,
                   scene: str, z_end: float) -> list[Draw]:
    """Depth-keyed draw calls for cars, persons, poles (with signs) and trees."""
    z_min, z_max = cam.z_near + 0.3, min(z_end - 3, 70)
    x0, x1 = sides[0].road_edge, sides[1].road_edge
    lane_width = (x1 - x0) / lanes
    draws: list[Draw] = []
    busy = {"urban": (1, 7), "suburban": (0, 5), "rural": (0, 3)}[scene]
    for _ in range(int(rng.integers(*busy))):
        lane = int(rng.integers(lanes))
        xc = x0 + (lane + 0.5 + rng.uniform(-0.15, 0.15)) * lane_width
        draws.append(_car(rng, xc, rng.uniform(z_min + 0.5, z_max)))
    for side in sides:  # parked cars along the kerb
        if scene != "rural" and rng.uniform() < 0.5:
            z = rng.uniform(z_min, z_min + 10)
            for _ in range(int(rng.integers(1, 5))):
                draws.append(_car(rng, side.road_edge - side.sign * 0.75, z))
                z += rng.uniform(3.6, 9)
    def near(lo: float, hi: float) -> float:  # depths biased towards the camera
        return lo + (hi - lo) * rng.uniform() ** 1.5

    walkers = {"urban": (1, 10), "suburban": (0, 7), "rural": (0, 3)}[scene]
    for _ in range(int(rng.integers(*walkers))):
        side = sides[int(rng.integers(2))]
        if side.sidewalk > 0 and rng.uniform() < 0.85:
            x = side.road_edge + side.sign * rng.uniform(0.3, side.sidewalk - 0.2)
        else:
            x = rng.uniform(x0 + 0.5, x1 - 0.5)
        draws.append(_person(rng, x, near(z_min, min(z_max, 35))))
    poles = {"urban": (1, 7), "suburban": (1, 6), "rural": (0, 4)}[scene]
    for _ in range(int(rng.integers(*poles))):
        side = sides[int(rng.integers(2))]
        x = side.road_edge + side.sign * rng.uniform(0.25, max(0.3, min(side.sidewalk, 1.0)))
        draws.append(_pole(rng, x, near(z_min + 0.5, min(z_max, 35)), side.sign))
    trees = {"urban": (0, 4), "suburban": (1, 6), "rural": (2, 8)}[scene]
    for _ in range(int(rng.integers(*trees))):
        side = sides[int(rng.integers(2))]
        offset = side.sidewalk * rng.uniform(0.6, 1.0) + side.terrain * rng.uniform(0.2, 0.9)
        draws.append(_tree(rng, side.road_edge + side.sign * max(offset, 0.6),
                           rng.uniform(z_min + 1, z_max)))
    return draws


def _car(rng: np.random.Generator, xc: float, z0: float) -> Draw:
    w, length = rng.uniform(1.1, 1.3), rng.uniform(2.6, 3.3)
    h = rng.uniform(1.2, 1.45) if rng.uniform() < 0.2 else rng.uniform(0.85, 1.05)
    body_rgb = _jitter(rng, CAR_COLORS[rng.integers(len(CAR_COLORS))], 10)
    side_shade = rng.uniform(0.6, 0.9)
    glass_rgb, light_rgb = _jitter(rng, (30, 34, 44), 8), _jitter(rng, (175, 25, 25), 15)

    def draw(canvas: Canvas) -> None:
        m = canvas.add_material
        body = m(Material(body_rgb, 0.02, 0.03, 0.04))
        glass = m(Material(glass_rgb, 0.03, 0.08, 0.05))
        tyre = m(Material((28, 28, 28), 0.04, 0.04, 0.02))
        light = m(Material(light_rgb, 0.03, 0.05, 0.02))
        plate = m(Material((220, 220, 212), 0.03, 0.03, 0.02))
        x0, x1 = xc - w / 2, xc + w / 2
        belt, cab0 = 0.58 * h, z0 + 0.45
        canvas.shadow([box_y(x0 - 0.1, x1 + 0.1, 0, z0 - 0.25, z0 + length)], 0.45)
        side_x = x0 if x0 > 0 else (x1 if x1 < 0 else None)
        ix0, ix1 = x0 + 0.12 * w, x1 - 0.12 * w
        if side_x is not None:
            canvas.fill_world([box_z(side_x, 0.12, belt, z0, z0 + length)], CAR, body, side_shade)
            canvas.fill_world([box_z(side_x, 0.0, 0.33, z, z + 0.6) for z in (z0 + 0.35, z0 + length - 0.95)],
                              CAR, tyre)
            cab_x = ix0 if side_x == x0 else ix1
            canvas.fill_world([box_z(cab_x, belt, h, cab0, z0 + length - 0.7)], CAR, glass, side_shade)
        canvas.fill_world([box_y(x0, x1, belt, z0, z0 + length)], CAR, body, 1.1)
        canvas.fill_world([box_y(ix0, ix1, h, cab0, z0 + length - 0.7)], CAR, body, 1.15)
        canvas.fill_world([box_x(ix0, ix1, belt, h, cab0)], CAR, body)
        canvas.fill_world([box_x(ix0 + 0.06, ix1 - 0.06, belt + 0.05, h - 0.06, cab0)], CAR, glass)
        canvas.fill_world([box_x(x, x + 0.2, 0.0, 0.25, z0 + 0.3) for x in (x0 + 0.05, x1 - 0.25)], CAR, tyre)
        canvas.fill_world([box_x(x0, x1, 0.12, belt, z0)], CAR, body)
        canvas.fill_world([box_x(x, x + 0.18, belt - 0.16, belt - 0.05, z0) for x in (x0 + 0.05, x1 - 0.23)],
                          CAR, light)
        canvas.fill_world([box_x(xc - 0.2, xc + 0.2, 0.25, 0.35, z0)], CAR, plate)

    return z0, draw


def _person(rng: np.random.Generator, x: float, z: float) -> Draw:
    h = rng.uniform(1.0, 1.25)
    skin = _jitter(rng, SKIN_COLORS[rng.integers(len(SKIN_COLORS))], 10)
    top, legs, hair = _muted(rng), _muted(rng), _jitter(rng, (50, 40, 30), 25)
    stride = rng.uniform(0.0, 0.12)

    def draw(canvas: Canvas) -> None:
        m = canvas.add_material
        cloth_top, cloth_legs = m(Material(top, 0.03, 0.06, 0.03)), m(Material(legs, 0.03, 0.05, 0.03))
        head_skin, head_hair = m(Material(skin, 0.02, 0.03, 0.02)), m(Material(hair, 0.05, 0.05, 0.02))
        canvas.shadow([box_y(x - 0.2, x + 0.25, 0, z - 0.1, z + 0.3)], 0.6)
        leg = 0.07
        canvas.fill_world([box_x(x - 0.1 - stride, x - 0.1 - stride + leg, 0, 0.48 * h, z),
                           box_x(x + 0.03 + stride, x + 0.03 + stride + leg, 0, 0.48 * h, z)],
                          PERSON, cloth_legs)
        canvas.fill_world([np.array([[x - 0.14, 0.46 * h, z], [x + 0.14, 0.46 * h, z],
                                     [x + 0.16, 0.82 * h, z], [x - 0.16, 0.82 * h, z]])], PERSON, cloth_top)
        canvas.fill_world([box_x(x - 0.21, x - 0.15, 0.5 * h, 0.8 * h, z),
                           box_x(x + 0.15, x + 0.21, 0.5 * h, 0.8 * h, z)], PERSON, cloth_top, 0.85)
        canvas.fill_world([box_x(x - 0.04, x + 0.04, 0.8 * h, 0.86 * h, z)], PERSON, head_skin)
        cam = canvas.camera
        u, v = cam.project(np.array([[x, 0.92 * h, z]]))[0]
        r = cam.pixels(0.085 * h, z)
        canvas.ellipse((u, v), (r * 0.8, r), 0, PERSON, head_skin)
        canvas.ellipse((u, v - r * 0.45), (r * 0.85, r * 0.6), 0, PERSON, head_hair)

    return z, draw


def _pole(rng: np.random.Generator, x: float, z: float, sign: int) -> Draw:
    h, w = rng.uniform(3.0, 5.0), rng.uniform(0.12, 0.2)
    metal = _jitter(rng, (130, 132, 135), 35)
    arm = -sign * rng.uniform(0.8, 1.6) if rng.uniform() < 0.3 else 0.0  # street lamp arm
    kind = str(rng.choice(["none", "circle", "triangle", "square", "octagon"], p=[0.2, 0.3, 0.2, 0.2, 0.1]))
    sign_y, size = rng.uniform(1.8, 2.6), rng.uniform(0.55, 0.85)
    colors = {
        "circle": ((185, 30, 32), (232, 232, 232)) if rng.uniform() < 0.6 else ((30, 70, 165), (40, 85, 185)),
        "triangle": ((185, 30, 32), (232, 232, 232)),
        "square": ((30, 70, 165), (225, 225, 225)),
        "octagon": ((185, 30, 32), (200, 40, 40)),
    }.get(kind, ((0, 0, 0), (0, 0, 0)))
    colors = (_jitter(rng, colors[0], 10), _jitter(rng, colors[1], 10))

    def draw(canvas: Canvas) -> None:
        pole = canvas.add_material(Material(metal, 0.03, 0.04, 0.05))
        canvas.fill_world([box_x(x - w / 2, x + w / 2, 0, h, z)], POLE, pole)
        if arm:
            canvas.fill_world([box_x(min(x, x + arm), max(x, x + arm), h - 0.08, h, z)], POLE, pole)
        if kind != "none":
            _traffic_sign(canvas, kind, colors, x, sign_y, z, size)

    return z, draw


def _traffic_sign(canvas: Canvas, kind: str, colors: tuple, x: float, y: float, z: float,
                  size: float) -> None:
    """A sign facing the camera: a coloured border shape with a lighter inner shape."""
    outer = canvas.add_material(Material(colors[0], 0.03, 0.04, 0.03))
    inner = canvas.add_material(Material(colors[1], 0.03, 0.04, 0.03))
    cam = canvas.camera
    u, v = cam.project(np.array([[x, y, z]]))[0]
    r = cam.pixels(size / 2, z)
    corners = {"circle": 24, "triangle": 3, "square": 4, "octagon": 8}[kind]
    start = {"triangle": -np.pi / 2, "square": np.pi / 4, "octagon": np.pi / 8}.get(kind, 0.0)
    angles = start + np.arange(corners) * 2 * np.pi / corners
    unit = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    canvas.fill([np.array([u, v]) + r * unit], SIGN, outer)
    canvas.fill([np.array([u, v]) + 0.7 * r * unit], SIGN, inner)


def _tree(rng: np.random.Generator, x: float, z: float) -> Draw:
    trunk_h, radius = rng.uniform(1.2, 2.5), rng.uniform(1.0, 2.3)
    leaf, bark = _jitter(rng, (58, 92, 40), 15), _jitter(rng, (82, 68, 52), 12)
    blobs = [(rng.uniform(-0.6, 0.6) * radius, rng.uniform(-0.4, 0.5) * radius, rng.uniform(0.5, 0.9) * radius)
             for _ in range(int(rng.integers(4, 9)))]

    def draw(canvas: Canvas) -> None:
        cam = canvas.camera
        trunk = canvas.add_material(Material(bark, 0.06, 0.08, 0.04))
        crown = canvas.add_material(Material(leaf, 0.3, 0.3, 0.1))
        dark = canvas.add_material(Material(tuple(c * 0.6 for c in leaf), 0.3, 0.3, 0.1))
        canvas.shadow([box_y(x - radius, x + radius, 0, z - radius * 0.5, z + radius * 0.5)], 0.7)
        canvas.fill_world([box_x(x - 0.1, x + 0.1, 0, trunk_h + radius * 0.5, z)], VEGETATION, trunk)
        cy = trunk_h + radius * 0.8
        for k, (dx, dy, r) in enumerate(blobs):
            u, v = cam.project(np.array([[x + dx, cy + dy, z]]))[0]
            rp = cam.pixels(r, z)
            canvas.ellipse((u, v), (rp, rp * 0.85), 0, VEGETATION, dark if k % 3 == 0 else crown)

    return z, draw
