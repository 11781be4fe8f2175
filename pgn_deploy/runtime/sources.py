"""Input files for ``pgn-run`` / ``pgn-calibrate``: images, folders (recursive) and videos.

Images are read with OpenCV as BGR uint8 H x W x 3 (gray and 16-bit files are converted);
videos frame by frame with ``cv2.VideoCapture``.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from pgn_deploy.contract import BadInputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
DEFAULT_FPS = 25.0


@dataclasses.dataclass(frozen=True)
class InputFile:
    """One input: its ``path``, ``kind`` (``"image"`` or ``"video"``) and ``stem``, the output
    name relative to the output folder without suffix (a folder's sub-folders are kept:
    ``imgs/a/x.png`` given as ``imgs`` -> ``a/x``)."""

    path: Path
    kind: str
    stem: Path


def _kind(path: Path) -> str:
    return "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"


def media_files(folder: Path) -> list[Path]:
    """Image and video files below ``folder`` (recursive, sorted; hidden files and folders
    skipped); a folder without any raises :class:`BadInputError`."""
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise BadInputError(f"{folder}: no images or videos found in this folder")
    return files


def collect_inputs(paths: Sequence[str | os.PathLike[str]]) -> list[InputFile]:
    """Expand files and folders (recursively, known image/video suffixes, sorted) into inputs.

    A missing path, a folder without images or videos, or two inputs with the same output stem
    raise :class:`BadInputError`. A file given by name is taken whatever its suffix (an
    unreadable one is reported when it is read).
    """
    if not paths:
        raise BadInputError("no inputs given")
    found: list[InputFile] = []
    for given in map(Path, paths):
        if given.is_dir():
            files = media_files(given)
            found += [InputFile(p, _kind(p), p.relative_to(given).with_suffix("")) for p in files]
        elif given.is_file():
            found.append(InputFile(given, _kind(given), Path(given.stem)))
        else:
            raise BadInputError(f"{given}: no such file or folder")
    seen: dict[Path, Path] = {}
    for item in found:
        if item.stem in seen:
            raise BadInputError(f"{seen[item.stem]} and {item.path} would write the same outputs ({item.stem}.*)")
        seen[item.stem] = item.path
    return found


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """The image at ``path`` as BGR uint8 H x W x 3; an unreadable file raises BadInputError."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise BadInputError(f"{path}: not a readable image (corrupt or unsupported format)")
    return image


class VideoReader:
    """Frames of a video file, BGR uint8 H x W x 3, with its ``fps`` and ``frame_count``
    (the container's count; 0 when unknown). Use as a context manager."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._capture = cv2.VideoCapture(str(self.path))
        if not self._capture.isOpened():
            self._capture.release()
            raise BadInputError(f"{self.path}: not a readable video")
        self.fps = self._capture.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
        self.frame_count = max(int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            ok, frame = self._capture.read()
            if not ok:
                return
            yield frame

    def close(self) -> None:
        """Release the video file; iterating afterwards yields no frames."""
        self._capture.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def frame_count(path: str | os.PathLike[str]) -> int:
    """The frame count a video's container states (0 when unknown or unreadable)."""
    try:
        with VideoReader(path) as video:
            return video.frame_count
    except BadInputError:
        return 0


def iter_frames(inputs: Sequence[InputFile]) -> Iterator[tuple[InputFile, np.ndarray]]:
    """Every image and every video frame of ``inputs`` (BGR), in order; unreadable files raise."""
    for item in inputs:
        if item.kind == "image":
            yield item, read_image(item.path)
            continue
        with VideoReader(item.path) as video:
            for frame in video:
                yield item, frame
