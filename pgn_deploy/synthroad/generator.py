"""SynthRoad: a deterministic, seeded generator of street scenes with out-of-distribution objects.

Every frame is a pure function of ``(seed, index, split, size)``: :func:`generate_frame` draws
a street (road with markings, sidewalk, building, vegetation, terrain, sky, car, person, pole,
traffic sign: the Cityscapes train ids and colours of :data:`CLASS_NAMES` and
:data:`CLASS_COLORS`; the other Cityscapes classes never appear) through a pinhole camera with
random pose, lighting and textures (:mod:`pgn_deploy.synthroad.scene`), and, for the
out-of-distribution splits, inserts objects whose shapes, colours and textures never occur in
the in-distribution splits (:mod:`pgn_deploy.synthroad.ood_objects`).

Splits (independent random streams): ``train`` and ``val`` (in-distribution scenes),
``obstacle`` (OoD objects lying on the road, as RoadObstacle21), ``anomaly`` (OoD objects
anywhere, as RoadAnomaly21) and ``lostandfound`` (objects on the road, written in the
LostAndFound layouts). :func:`ood_labels` gives the SegmentMeIfYouCan labels (0 known,
1 OoD, 255 void); the on-disk layouts are written by :mod:`pgn_deploy.synthroad.layouts`.

Only numpy and OpenCV are needed.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from pgn_deploy.contract import BadInputError
from pgn_deploy.synthroad.canvas import finish_image
from pgn_deploy.synthroad.classes import (
    CLASS_COLORS,
    CLASS_NAMES,
    IGNORE,
    ROAD,
    TRAIN_ID_TO_LABEL_ID,
    USED_CLASSES,
)
from pgn_deploy.synthroad.ood_objects import paint_ood_objects
from pgn_deploy.synthroad.scene import paint_street

__all__ = [
    "CLASS_COLORS", "CLASS_NAMES", "DEFAULT_SIZE", "IGNORE", "OOD_SPLITS", "ROAD", "SPLITS",
    "TRACKS", "TRAIN_ID_TO_LABEL_ID", "USED_CLASSES", "SynthFrame", "check_size", "colorize",
    "frame_rng", "generate_frame", "iter_frames", "label_ids", "ood_labels",
]

DEFAULT_SIZE = (256, 512)
MIN_SIZE = (64, 128)

SPLITS = ("train", "val", "obstacle", "anomaly", "lostandfound")
OOD_SPLITS = {"obstacle": "road", "anomaly": "anywhere", "lostandfound": "road"}
"""Out-of-distribution splits and where their objects lie."""
TRACKS = ("obstacle", "anomaly")


@dataclasses.dataclass(frozen=True)
class SynthFrame:
    """One generated frame.

    ``image``: H x W x 3 uint8 RGB. ``train_ids``: H x W uint8 Cityscapes train ids, 255 on the
    inserted OoD objects. ``ood_instances``: H x W uint8, 0 where no OoD object lies and k on
    the pixels of the k-th inserted object (objects drawn later cover earlier ones).
    """

    image: np.ndarray
    train_ids: np.ndarray
    ood_instances: np.ndarray
    seed: int
    index: int
    split: str

    @property
    def ood_mask(self) -> np.ndarray:
        """H x W bool: pixels covered by an inserted OoD object."""
        return self.ood_instances > 0

    @property
    def num_ood_objects(self) -> int:
        """How many inserted OoD objects are visible."""
        return len(np.unique(self.ood_instances[self.ood_instances > 0]))


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """Validate an image size (H, W): integers of at least :data:`MIN_SIZE`."""
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise BadInputError(f"size must be two integers (H, W), got {size!r}") from None
    if h < MIN_SIZE[0] or w < MIN_SIZE[1]:
        raise BadInputError(f"size must be at least {MIN_SIZE[0]}x{MIN_SIZE[1]}, got {h}x{w}")
    return h, w


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise BadInputError(f"unknown SynthRoad split {split!r}; choose from {', '.join(SPLITS)}")
    return split


def frame_rng(seed: int, index: int, split: str, stream: int = 0) -> np.random.Generator:
    """The random generator of one frame: a pure function of (seed, index, split, stream).

    ``stream`` 0 draws the image; other streams draw per-frame choices of the writers (e.g.
    LostAndFound object ids) without disturbing the image.
    """
    if seed < 0 or index < 0:
        raise BadInputError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    code = SPLITS.index(_check_split(split))
    return np.random.default_rng(np.random.SeedSequence([int(seed), code, int(index), stream]))


def generate_frame(
    seed: int, index: int, split: str = "train", size: tuple[int, int] = DEFAULT_SIZE
) -> SynthFrame:
    """Generate frame ``index`` of ``split`` for ``seed`` at ``size`` (H, W).

    In-distribution splits carry no OoD object (``ood_instances`` is all 0); ``obstacle`` and
    ``lostandfound`` frames carry 1-3 objects on the road, ``anomaly`` frames 1-3 anywhere.
    """
    h, w = check_size(size)
    rng = frame_rng(seed, index, split)
    street = paint_street(rng, h, w)
    image, train_ids = street.colorize(rng)
    instances = np.zeros((h, w), np.uint8)
    placement = OOD_SPLITS.get(split)
    if placement is not None:
        instances = paint_ood_objects(rng, image, street, placement)
        train_ids[instances > 0] = IGNORE
    return SynthFrame(
        image=finish_image(rng, image),
        train_ids=train_ids,
        ood_instances=instances,
        seed=int(seed),
        index=int(index),
        split=split,
    )


def iter_frames(
    seed: int, count: int, split: str, size: tuple[int, int] = DEFAULT_SIZE, start: int = 0
) -> Iterator[SynthFrame]:
    """Frames ``start .. start + count - 1`` of ``split``, generated one at a time."""
    for index in range(start, start + count):
        yield generate_frame(seed, index, split, size)


def ood_labels(frame: SynthFrame, track: str) -> np.ndarray:
    """SegmentMeIfYouCan labels of ``frame`` (H x W uint8: 0 known, 1 OoD, 255 void).

    ``obstacle`` track (RoadObstacle21): the region of interest is the road, so road pixels
    are 0, the objects 1 and everything else 255. ``anomaly`` track (RoadAnomaly21): every
    pixel that is not an object is 0.
    """
    if track not in TRACKS:
        raise BadInputError(f"unknown track {track!r}; choose from {', '.join(TRACKS)}")
    if track == "obstacle":
        labels = np.full(frame.train_ids.shape, IGNORE, np.uint8)
        labels[frame.train_ids == ROAD] = 0
    else:
        labels = np.zeros(frame.train_ids.shape, np.uint8)
    labels[frame.ood_mask] = 1
    return labels


def label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids (``*_gtFine_labelIds.png``) of a train-id map; 255 -> 0 unlabeled."""
    lut = np.zeros(256, np.uint8)
    lut[: len(TRAIN_ID_TO_LABEL_ID)] = TRAIN_ID_TO_LABEL_ID
    return lut[train_ids]


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """Cityscapes colours (H x W x 3 uint8 RGB) of a train-id map; 255 is black."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(CLASS_COLORS)] = CLASS_COLORS
    return lut[train_ids]
