"""Write SynthRoad frames in the on-disk layouts of the public benchmarks.

Under the output folder, one folder per layout (:data:`LAYOUT_DIRS`):

* ``cityscapes/``: ``leftImg8bit/val/<city>/<id>_leftImg8bit.png`` with
  ``gtFine/val/<city>/<id>_gtFine_labelTrainIds.png``, ``_gtFine_labelIds.png`` (Cityscapes
  label ids) and ``_gtFine_color.png``; frames of the ``val`` split.
* ``dataset_AnomalyTrack/`` (RoadAnomaly21): ``images/<id>.jpg`` and
  ``labels_masks/<id>_labels_semantic.png`` (0 known, 1 OoD); ``anomaly`` split.
* ``dataset_ObstacleTrack/`` (RoadObstacle21): ``images/<id>.webp`` and
  ``labels_masks/<id>_labels_semantic.png`` (0 road, 1 OoD, 255 void); ``obstacle`` split.
* ``dataset_LostAndFound/``: ``leftImg8bit/test/<scene>/<id>_leftImg8bit.png`` with
  ``gtCoarse/test/<scene>/<id>_gtCoarse_labelIds.png`` (LostAndFound ids: 0 unlabeled,
  1 free space = road, 2..43 obstacle class per object); ``lostandfound`` split. Frame i with
  ``i % 5 == 3`` labels its first object with a class the Cityscapes classes cover
  (:data:`LAF_KNOWN_IDS`: bicycle, kid dummy, kids), frame i with ``i % 10 == 7`` is written
  with an empty label (all 0, like LostAndFound's unlabelled frames): the test-NoKnown filter
  drops both.
* Fishyscapes LostAndFound, in the LostAndFound folder: ``fishyscapes/<id>_labels.png``
  (0 background, 1 OoD; 255 void never occurs: every SynthRoad pixel is a Cityscapes class
  or an object) paired with the LostAndFound image of the same id, for the frames that
  test-NoKnown keeps, as Fishyscapes dropped children, bicycles and empty frames.

Every file is written atomically; a folder that exists is written into, and a file that exists
is an error (checked for every target before anything is written) unless ``force``.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np

from pgn_deploy.contract import ArtifactExistsError, BadInputError, atomic_write
from pgn_deploy.synthroad.generator import (
    DEFAULT_SIZE,
    ROAD,
    SynthFrame,
    check_size,
    colorize,
    frame_rng,
    generate_frame,
    label_ids,
    ood_labels,
)

LAYOUTS = ("cityscapes", "roadanomaly21", "roadobstacle21", "lostandfound", "fishyscapes_laf")
LAYOUT_DIRS = {
    "cityscapes": "cityscapes",
    "roadanomaly21": "dataset_AnomalyTrack",
    "roadobstacle21": "dataset_ObstacleTrack",
    "lostandfound": "dataset_LostAndFound",
    "fishyscapes_laf": "dataset_LostAndFound",
}
SPLIT_OF_LAYOUT = {
    "cityscapes": "val", "roadanomaly21": "anomaly", "roadobstacle21": "obstacle",
    "lostandfound": "lostandfound", "fishyscapes_laf": "lostandfound",
}
CITIES = ("synthberg", "synthdorf", "synthstadt")
LAF_SCENES = ("01_Synth_Allee", "02_Synth_Ring", "03_Synth_Weg")
LAF_FREE_SPACE = 1
LAF_KNOWN_IDS = (23, 26, 40, 41, 42, 43)
"""LostAndFound ids of bicycle, kid dummy and the kids: Cityscapes classes, not OoD."""
LAF_OBSTACLE_IDS = tuple(i for i in range(2, 40) if i not in LAF_KNOWN_IDS)
MAX_FRAMES = 10000
MANIFEST = "synthroad.json"


@dataclasses.dataclass(frozen=True)
class FrameFile:
    """One file to write: its path and a function giving its bytes from the frame."""

    path: Path
    encode: Callable[[SynthFrame], bytes]


def _png(array: np.ndarray) -> bytes:
    return _encode(".png", array, [])


def _encode(ext: str, array: np.ndarray, params: list[int]) -> bytes:
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(ext, array, params)
    if not ok:
        raise BadInputError(f"OpenCV cannot encode {ext} images")
    return buf.tobytes()


def _image(ext: str) -> Callable[[SynthFrame], bytes]:
    params = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, 95], ".webp": [cv2.IMWRITE_WEBP_QUALITY, 95]}.get(ext, [])
    return lambda frame: _encode(ext, frame.image, params)


def laf_label_ids(frame: SynthFrame) -> np.ndarray:
    """LostAndFound ``gtCoarse_labelIds`` of a ``lostandfound`` frame (H x W uint8)."""
    i = frame.index
    labels = np.zeros(frame.train_ids.shape, np.uint8)
    if i % 10 == 7:
        return labels
    labels[frame.train_ids == ROAD] = LAF_FREE_SPACE
    rng = frame_rng(frame.seed, i, frame.split, stream=1)
    for k in range(1, int(frame.ood_instances.max()) + 1):
        object_id = LAF_OBSTACLE_IDS[rng.integers(len(LAF_OBSTACLE_IDS))]
        if k == 1 and i % 5 == 3:
            object_id = LAF_KNOWN_IDS[(i // 5) % len(LAF_KNOWN_IDS)]
        labels[frame.ood_instances == k] = object_id
    return labels


def fishyscapes_labels(frame: SynthFrame) -> np.ndarray:
    """Fishyscapes LostAndFound labels of a frame (H x W uint8: 0 background, 1 OoD)."""
    return ood_labels(frame, "anomaly")


def _laf_name(i: int) -> tuple[str, str]:
    scene = LAF_SCENES[i % len(LAF_SCENES)]
    return scene, f"{scene}_000000_{i:06d}"


def _in_fishyscapes(i: int) -> bool:
    """LostAndFound frames that test-NoKnown keeps: labelled and without known classes."""
    return i % 10 != 7 and i % 5 != 3


def frame_files(layout: str, root: Path, i: int) -> list[FrameFile]:
    """The files frame ``i`` adds to ``layout`` under ``root`` (the layout's own folder)."""
    if layout == "cityscapes":
        city = CITIES[i % len(CITIES)]
        stem = f"{city}_{i:06d}_000019"
        gt = root / "gtFine" / "val" / city
        return [
            FrameFile(root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png", _image(".png")),
            FrameFile(gt / f"{stem}_gtFine_labelTrainIds.png", lambda f: _png(f.train_ids)),
            FrameFile(gt / f"{stem}_gtFine_labelIds.png", lambda f: _png(label_ids(f.train_ids))),
            FrameFile(gt / f"{stem}_gtFine_color.png", lambda f: _png(colorize(f.train_ids))),
        ]
    if layout in ("roadanomaly21", "roadobstacle21"):
        ext, track = (".jpg", "anomaly") if layout == "roadanomaly21" else (".webp", "obstacle")
        stem = f"synthroad_{i:04d}"
        return [
            FrameFile(root / "images" / f"{stem}{ext}", _image(ext)),
            FrameFile(root / "labels_masks" / f"{stem}_labels_semantic.png",
                      lambda f, t=track: _png(ood_labels(f, t))),
        ]
    scene, fid = _laf_name(i)
    image = FrameFile(root / "leftImg8bit" / "test" / scene / f"{fid}_leftImg8bit.png", _image(".png"))
    if layout == "lostandfound":
        return [image, FrameFile(root / "gtCoarse" / "test" / scene / f"{fid}_gtCoarse_labelIds.png",
                                 lambda f: _png(laf_label_ids(f)))]
    if not _in_fishyscapes(i):
        return []
    return [image, FrameFile(root / "fishyscapes" / f"{fid}_labels.png", lambda f: _png(fishyscapes_labels(f)))]


def write_synthroad(
    out: str | Path,
    frames: int,
    seed: int = 0,
    layouts: Iterable[str] | None = None,
    size: tuple[int, int] = DEFAULT_SIZE,
    force: bool = False,
    progress: bool = True,
) -> dict[str, dict[str, object]]:
    """Generate ``frames`` frames per layout and write them under ``out``.

    Returns ``{layout: {"root": folder, "frames": n, "files": n}}``. Raises a
    :class:`~pgn_deploy.contract.PGNError` for a bad argument, or before writing anything when
    a target file exists and not ``force``.
    """
    out = Path(out)
    layouts = _check_args(out, frames, seed, layouts)
    size = check_size(size)
    plan = {
        layout: [frame_files(layout, out / LAYOUT_DIRS[layout], i) for i in range(frames)]
        for layout in layouts
    }
    if not force:
        for files in plan.values():
            for file in (f for per_frame in files for f in per_frame):
                if file.path.exists():
                    raise ArtifactExistsError(f"{file.path} exists; pass --force to overwrite it")
    written: set[Path] = set()  # LostAndFound and Fishyscapes share their images
    manifest = out / MANIFEST
    summary = {layout: {"root": str(out / LAYOUT_DIRS[layout]), "frames": 0, "files": 0} for layout in layouts}
    by_split: dict[str, list[str]] = {}
    for layout in layouts:
        by_split.setdefault(SPLIT_OF_LAYOUT[layout], []).append(layout)
    bar = _progress(frames * len(by_split), progress)
    for split, split_layouts in by_split.items():
        for i in range(frames):
            frame = generate_frame(seed, i, split, size)
            for layout in split_layouts:
                files = plan[layout][i]
                for file in (f for f in files if f.path not in written):
                    file.path.parent.mkdir(parents=True, exist_ok=True)
                    data = file.encode(frame)
                    atomic_write(file.path, lambda tmp, d=data: tmp.write_bytes(d), force)
                    written.add(file.path)
                summary[layout]["files"] += len(files)
                summary[layout]["frames"] += bool(files)
            bar.update(1)
    bar.close()
    _record_run(manifest, {"seed": seed, "frames": frames, "size": list(size), "layouts": summary})
    return summary


def _record_run(manifest: Path, run: dict[str, object]) -> None:
    """Append ``run`` to the ``runs`` list of the folder's manifest (created if missing)."""
    record: dict[str, object] = {"generator": "pgn_deploy.synthroad.generator", "runs": []}
    if manifest.exists():
        try:
            record = json.loads(manifest.read_text())
            record["runs"].append  # noqa: B018 - checks the shape before we change anything
        except (ValueError, KeyError, AttributeError, TypeError):
            raise BadInputError(f"{manifest}: not a SynthRoad manifest; move it away") from None
    record["runs"].append(run)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(manifest, lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"), force=True)


def _check_args(out: Path, frames: int, seed: int, layouts: Iterable[str] | None) -> list[str]:
    if out.exists() and not out.is_dir():
        raise BadInputError(f"{out}: exists and is not a folder")
    if not isinstance(frames, int) or not 1 <= frames <= MAX_FRAMES:
        raise BadInputError(f"the number of frames must be 1..{MAX_FRAMES}, got {frames}")
    if not isinstance(seed, int) or seed < 0:
        raise BadInputError(f"the seed must be an integer >= 0, got {seed}")
    chosen = list(dict.fromkeys(layouts)) if layouts is not None else list(LAYOUTS)
    unknown = [name for name in chosen if name not in LAYOUTS]
    if unknown or not chosen:
        raise BadInputError(f"unknown layout {', '.join(unknown) or '(none)'}; choose from {', '.join(LAYOUTS)}")
    return chosen


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="synthroad", unit="frame", disable=not enabled)
