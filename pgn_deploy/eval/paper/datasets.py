"""Readers for the benchmark datasets as they lie on disk (the layouts the public code reads).

A dataset is opened with :func:`open_dataset` from ``KIND:DIR`` and is a list of
:class:`Frame` (image path, label path, how to decode the label). Frames are streamed: nothing
is read until :meth:`Frame.load_image` / :meth:`Frame.load_label` is called.

Kinds (``DIR`` is the dataset's root):

* ``road_anomaly21`` -- ``dataset_AnomalyTrack/images/<id>.jpg`` with
  ``dataset_AnomalyTrack/labels_masks/<id>_labels_semantic.png`` (0 known, 1 anomaly, 255 void).
  ``DIR`` may be the folder holding ``dataset_AnomalyTrack/`` or that folder itself.
* ``road_obstacle21`` -- ``dataset_ObstacleTrack/images/<id>.webp``, labels as above.
* ``lost_and_found`` -- ``leftImg8bit/test/<scene>/<id>_leftImg8bit.<png|webp|jpg>`` with
  ``gtCoarse/test/<scene>/<id>_gtCoarse_labelIds.png``; label ids mapped as the benchmark does:
  1 (free space) -> 0, 2..200 (obstacles) -> 1, anything else -> 255. Frames whose label is all
  0 are not labelled (the benchmark's "valid" test set drops them) and are skipped.
* ``laf_noknown`` -- the LostAndFound test-NoKnown subset: as ``lost_and_found`` without the
  frames of the sequences the benchmark excludes (:data:`LAF_NOKNOWN_EXCLUDED_PREFIXES`:
  children and bicycles) and without any frame whose label holds one of those known Cityscapes
  classes (:data:`LAF_KNOWN_IDS`: bicycle, kid dummy, kids) or no obstacle at all.
* ``fishyscapes_laf`` -- Fishyscapes LostAndFound: the label files of
  ``fishyscapes_lostandfound.zip``, ``[<n>_]<id>_labels.png`` (0 background, 1 anomaly,
  255 void), in ``fishyscapes_lostandfound/`` or ``fishyscapes/`` under a LostAndFound root,
  paired with the image ``leftImg8bit/<split>/<scene>/<id>_leftImg8bit.*`` of any split.
* ``cityscapes`` -- ``leftImg8bit/val/<city>/<id>_leftImg8bit.png`` with
  ``gtFine/val/<city>/<id>_gtFine_labelTrainIds.png`` (19 train ids, 255 ignore), or, where
  only ``_gtFine_labelIds.png`` exists, label ids mapped to train ids.

Only frames with a label are scored; an image whose label is missing is skipped and counted
(``Dataset.unlabeled``), a label whose image is missing is an error naming the file.
``Dataset.smiyc_name(frame)`` is the dataset name under which the SegmentMeIfYouCan benchmark
code stores that frame's scores.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from pgn_deploy.contract import BadInputError

VOID = 255
LAF_BICYCLE, LAF_KID_DUMMY = 23, 26
LAF_KNOWN_IDS = (LAF_BICYCLE, LAF_KID_DUMMY, 40, 41, 42, 43)
"""LostAndFound label ids of Cityscapes classes (bicycle, kid dummy, the four kinds of kids)."""
LAF_NOKNOWN_EXCLUDED_PREFIXES = (
    "15_Rechbergstr_Deckenpfronn",  # children
    "01_Hanns_Klemm_Str_45_000006",  # bicycle
    "01_Hanns_Klemm_Str_45_000007",  # bicycle
    "10_Schlossberg_9_000004",  # bicycle
)
"""Frame id prefixes the benchmark's LostAndFound-testNoKnown split leaves out."""
IMAGE_EXTENSIONS = (".png", ".webp", ".jpg")
TRACKS = {
    "road_anomaly21": "anomaly",
    "road_obstacle21": "obstacle",
    "lost_and_found": "obstacle",
    "laf_noknown": "obstacle",
    "fishyscapes_laf": "anomaly",
    "cityscapes": None,
}

# Where the SegmentMeIfYouCan benchmark code stores a frame's scores (its "name_for_persistence").
SMIYC_NAMES = {
    "road_anomaly21": "AnomalyTrack-all",
    "road_obstacle21": "ObstacleTrack-all",
    "lost_and_found": "LostAndFound-test",
    "laf_noknown": "LostAndFound-test",
    "fishyscapes_laf": "LostAndFound-{split}",
}

# Cityscapes label id -> train id (the 19 evaluated classes; every other id is ignored).
_CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
CITYSCAPES_LABEL_TO_TRAIN = np.full(256, VOID, dtype=np.uint8)
for _label_id, _train_id in _CITYSCAPES_TRAIN_IDS.items():
    CITYSCAPES_LABEL_TO_TRAIN[_label_id] = _train_id


def _identity(label: np.ndarray) -> np.ndarray:
    return label


def laf_to_ood(label_ids: np.ndarray) -> np.ndarray:
    """LostAndFound label ids -> {0 free space, 1 obstacle, 255 void} (the benchmark's mapping)."""
    out = np.full(label_ids.shape, VOID, dtype=np.uint8)
    out[label_ids == 1] = 0
    out[(label_ids >= 2) & (label_ids <= 200)] = 1
    return out


def cityscapes_label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids (uint8) -> the 19 train ids, 255 for ignored classes."""
    return CITYSCAPES_LABEL_TO_TRAIN[label_ids]


def read_png_label(path: Path) -> np.ndarray:
    """A single-channel label PNG as uint8 H x W; a clear error for a missing or corrupt file."""
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise BadInputError(f"{path}: cannot read the label image")
    if label.ndim == 3:
        label = label[..., 0]
    return label.astype(np.uint8, copy=False)


@dataclasses.dataclass(frozen=True)
class Frame:
    """One scored frame: ``image`` path, ``label`` path and the decoder of the raw label."""

    id: str
    image: Path
    label: Path
    decode: Callable[[np.ndarray], np.ndarray] = _identity
    split: str = "test"

    def load_image(self) -> np.ndarray:
        """The image as uint8 H x W x 3 in **BGR** order (OpenCV's)."""
        image = cv2.imread(str(self.image), cv2.IMREAD_COLOR)
        if image is None:
            raise BadInputError(f"{self.image}: cannot read the image")
        return image

    def load_label(self) -> np.ndarray:
        """The decoded label, uint8 H x W (OoD kinds: {0, 1, 255}; cityscapes: train ids)."""
        return self.decode(read_png_label(self.label))


@dataclasses.dataclass
class Dataset:
    """Frames of one dataset, sorted by id. ``track``: ``obstacle``/``anomaly`` (OoD) or None."""

    kind: str
    root: Path
    frames: list[Frame]
    unlabeled: int = 0

    @property
    def track(self) -> str | None:
        """The SMIYC track of an OoD kind (``obstacle`` or ``anomaly``), None for an in-distribution kind."""
        return TRACKS[self.kind]

    @property
    def is_ood(self) -> bool:
        """True for the OoD kinds (those with a track)."""
        return self.track is not None

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[Frame]:
        return iter(self.frames)

    def smiyc_name(self, frame: Frame) -> str:
        """The benchmark's dataset name for ``frame`` (its outputs folder); OoD kinds only."""
        if not self.is_ood:
            raise BadInputError(f"dataset kind {self.kind!r} is not part of the SegmentMeIfYouCan benchmark")
        return SMIYC_NAMES[self.kind].format(split=frame.split)


def _pair(images: dict[str, Path], labels: dict[str, Path], kind: str, root: Path,
          decode: Callable[[np.ndarray], np.ndarray]) -> Dataset:
    """Pair images and labels by id: unlabeled images are counted, orphan labels are errors."""
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise BadInputError(f"{labels[orphans[0]]}: label without an image ({len(orphans)} such)")
    frames = [Frame(fid, images[fid], labels[fid], decode) for fid in sorted(images) if fid in labels]
    if not frames:
        raise BadInputError(f"{root}: no labelled frames found for dataset kind {kind!r}")
    return Dataset(kind, root, frames, unlabeled=len(images) - len(frames))


def _by_suffix(folder: Path, pattern: str, suffix: str) -> dict[str, Path]:
    """``{id: path}`` for files under ``folder`` matching ``pattern``, id = name minus ``suffix``."""
    return {p.name[: -len(suffix)]: p for p in sorted(folder.glob(pattern)) if p.name.endswith(suffix)}


def _smiyc(root: Path, kind: str, sub: str, ext: str) -> Dataset:
    base = root if root.name == sub else root / sub
    if not (base / "images").is_dir():
        raise BadInputError(f"{root}: expected the folder {sub}/images for dataset kind {kind!r}")
    images = _by_suffix(base / "images", f"*.{ext}", f".{ext}")
    labels = _by_suffix(base / "labels_masks", "*_labels_semantic.png", "_labels_semantic.png")
    return _pair(images, labels, kind, root, _identity)


def _laf_images(root: Path, split: str | None) -> dict[str, Path]:
    """``{id: image}`` of ``leftImg8bit/<split>/<scene>/<id>_leftImg8bit.*`` (any split if None)."""
    folder = root / "leftImg8bit"
    if not folder.is_dir():
        raise BadInputError(f"{root}: expected the folder leftImg8bit/ of LostAndFound")
    pattern = f"{split}/*/*_leftImg8bit.*" if split else "*/*/*_leftImg8bit.*"
    return {p.name.rsplit("_leftImg8bit", 1)[0]: p for p in sorted(folder.glob(pattern))
            if p.suffix.lower() in IMAGE_EXTENSIONS}


def _lost_and_found(root: Path, kind: str) -> Dataset:
    images = _laf_images(root, "test")
    labels = _by_suffix(root / "gtCoarse" / "test", "*/*_gtCoarse_labelIds.png", "_gtCoarse_labelIds.png")
    dataset = _pair(images, labels, kind, root, laf_to_ood)
    keep = [f for f in dataset.frames if _laf_frame_kept(f, kind)]
    dataset.unlabeled += len(dataset.frames) - len(keep)
    dataset.frames = keep
    if not keep:
        raise BadInputError(f"{root}: no LostAndFound frame with a label is left for dataset kind {kind!r}")
    return dataset


def _laf_frame_kept(frame: Frame, kind: str) -> bool:
    """Labelled frames (a label that is not all 0); test-NoKnown: also :func:`is_noknown`."""
    label_ids = read_png_label(frame.label)
    if not label_ids.any():
        return False
    return kind != "laf_noknown" or is_noknown(frame.id, label_ids)


def is_noknown(frame_id: str, label_ids: np.ndarray) -> bool:
    """Whether test-NoKnown keeps a frame: not in an excluded sequence, at least one obstacle
    (id 2..200), and no obstacle of a known Cityscapes class (:data:`LAF_KNOWN_IDS`)."""
    if frame_id.startswith(LAF_NOKNOWN_EXCLUDED_PREFIXES):
        return False
    present = np.unique(label_ids)
    has_obstacle = bool(((present >= 2) & (present <= 200)).any())
    return has_obstacle and not np.isin(present, LAF_KNOWN_IDS).any()


FISHYSCAPES_LABEL_DIRS = ("fishyscapes_lostandfound", "fishyscapes")


def _fishyscapes_laf(root: Path, kind: str) -> Dataset:
    label_dir = next((root / name for name in FISHYSCAPES_LABEL_DIRS if (root / name).is_dir()), None)
    if label_dir is None:
        raise BadInputError(f"{root}: expected the folder fishyscapes_lostandfound/ (or fishyscapes/) "
                            "with the Fishyscapes <n>_<id>_labels.png files")
    images = _laf_images(root, None)
    labels = {_fishyscapes_frame_id(p.name[: -len("_labels.png")], images): p
              for p in sorted(label_dir.glob("*_labels.png"))}
    dataset = _pair({fid: images[fid] for fid in labels if fid in images}, labels, kind, root, _identity)
    dataset.frames = [dataclasses.replace(f, split=f.image.parent.parent.name) for f in dataset.frames]
    return dataset


def _fishyscapes_frame_id(stem: str, images: dict[str, Path]) -> str:
    """The LostAndFound id of a Fishyscapes label stem: ``0003_<id>`` -> ``<id>``, or the stem."""
    number, sep, rest = stem.partition("_")
    return rest if sep and number.isdigit() and rest in images else stem


def _cityscapes(root: Path, kind: str) -> Dataset:
    image_dir = root / "leftImg8bit" / "val"
    if not image_dir.is_dir():
        raise BadInputError(f"{root}: expected the folder leftImg8bit/val of Cityscapes")
    images = _by_suffix(image_dir, "*/*_leftImg8bit.png", "_leftImg8bit.png")
    gt_dir = root / "gtFine" / "val"
    train_ids = _by_suffix(gt_dir, "*/*_gtFine_labelTrainIds.png", "_gtFine_labelTrainIds.png")
    if train_ids:
        return _pair(images, train_ids, kind, root, _identity)
    label_ids = _by_suffix(gt_dir, "*/*_gtFine_labelIds.png", "_gtFine_labelIds.png")
    return _pair(images, label_ids, kind, root, cityscapes_label_ids_to_train_ids)


_OPENERS: dict[str, Callable[[Path, str], Dataset]] = {
    "road_anomaly21": lambda root, kind: _smiyc(root, kind, "dataset_AnomalyTrack", "jpg"),
    "road_obstacle21": lambda root, kind: _smiyc(root, kind, "dataset_ObstacleTrack", "webp"),
    "lost_and_found": _lost_and_found,
    "laf_noknown": _lost_and_found,
    "fishyscapes_laf": _fishyscapes_laf,
    "cityscapes": _cityscapes,
}


def open_dataset(spec: str) -> Dataset:
    """Open ``KIND:DIR`` (see the module docstring for the kinds and their layouts)."""
    kind, sep, folder = spec.partition(":")
    if not sep or not folder:
        raise BadInputError(f"dataset {spec!r}: expected KIND:DIR, e.g. road_anomaly21:/data/smiyc")
    if kind not in _OPENERS:
        raise BadInputError(f"unknown dataset kind {kind!r}; choose from {', '.join(_OPENERS)}")
    root = Path(folder)
    if not root.is_dir():
        raise BadInputError(f"{root}: no such dataset folder")
    return _OPENERS[kind](root, kind)
