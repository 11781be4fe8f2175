"""What ``pgn-mine`` reads: the frames of images, folders, videos and path lists, and their pixels.

A frame is named by ``(source, frame)``: ``source`` is the absolute local path of the file (or
the URI as given, e.g. ``s3://bucket/x.png``) and ``frame`` its index: 0 for an image, the
0-based frame number for a video (every ``every``-th frame: 0, N, 2N, ...).

Sources are expanded in order (folders recursively, sorted, hidden entries skipped):

* an image file -> one frame; a video file -> every ``every``-th frame of the count its
  container states (counted by reading when the container does not say);
* a ``.parquet`` or ``.csv`` list -> its column ``path`` (relative paths are relative to the
  list's folder), each path expanded like a file; with a column ``frame`` each row names one
  frame instead.

Pixels are decoded by :func:`decode_frames` as BGR uint8 H x W x 3. Local files are read with
OpenCV; image URIs through ``pyarrow.fs`` (any filesystem pyarrow can open: S3, GCS, HDFS, where
the machine has access). Videos must be local (or mounted) files.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from pgn_deploy.contract import BadInputError, first_line, require
from pgn_deploy.runtime.sources import VIDEO_SUFFIXES, media_files, read_image

LIST_SUFFIXES = frozenset({".parquet", ".csv"})


@dataclasses.dataclass(frozen=True, order=True)
class FrameRef:
    """One frame to mine: ``source`` (absolute path or URI) and ``frame`` (0 for an image)."""

    source: str
    frame: int


@dataclasses.dataclass(frozen=True)
class Decoded:
    """A frame's pixels (BGR uint8 H x W x 3), or ``error`` (one line) when it could not be read."""

    ref: FrameRef
    image: np.ndarray | None
    error: str | None = None


def is_uri(source: str) -> bool:
    """True for ``scheme://...`` sources other than ``file://`` (read through pyarrow)."""
    return "://" in source and not source.startswith("file://")


def is_video(source: str) -> bool:
    """True when the source's suffix is a known video format."""
    return Path(source.split("?")[0]).suffix.lower() in VIDEO_SUFFIXES


def _local(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.fspath(path).removeprefix("file://"))


def expand_sources(sources: Sequence[str | os.PathLike[str]], every: int = 1) -> list[FrameRef]:
    """Every frame the sources name, in order, without repeats (see the module docstring).

    A missing path, a folder without images or videos, a list without a ``path`` column, or
    ``every < 1`` raise :class:`BadInputError`. Unreadable files are not detected here: their
    frames fail when decoded (a video whose frames cannot be counted gives one frame, 0).
    """
    if every < 1:
        raise BadInputError(f"--every must be >= 1, got {every}")
    if not sources:
        raise BadInputError("no sources given")
    refs: list[FrameRef] = []
    for given in map(os.fspath, sources):
        if is_uri(given):
            refs += _file_frames(given, every)
            continue
        path = Path(_local(given))
        if path.is_dir():
            for file in media_files(path):
                refs += _file_frames(str(file), every)
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            refs += _list_frames(path, every)
        elif path.is_file():
            refs += _file_frames(str(path), every)
        else:
            raise BadInputError(f"{given}: no such file or folder")
    return list(dict.fromkeys(refs))


def _file_frames(source: str, every: int) -> list[FrameRef]:
    if not is_video(source):
        return [FrameRef(source, 0)]
    count = video_frame_count(source)
    return [FrameRef(source, index) for index in range(0, max(count, 1), every)]


def _list_frames(path: Path, every: int) -> list[FrameRef]:
    table = _read_list(path)
    if "path" not in table.column_names:
        raise BadInputError(f"{path}: a source list needs a column 'path' (it has: {', '.join(table.column_names)})")
    paths = [str(p) for p in table.column("path").to_pylist()]
    paths = [p if is_uri(p) else _local(path.parent / p) for p in paths]
    if "frame" not in table.column_names:
        return [ref for source in paths for ref in _file_frames(source, every)]
    frames = table.column("frame").to_pylist()
    if any(f is None or int(f) != f or f < 0 for f in frames):
        raise BadInputError(f"{path}: the column 'frame' must hold integers >= 0")
    return [FrameRef(source, int(frame)) for source, frame in zip(paths, frames)]


def _read_list(path: Path):  # -> pyarrow.Table
    require("pyarrow", "reading a Parquet/CSV source list")
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        import pyarrow.csv as pcsv

        return pcsv.read_csv(path)
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise BadInputError(f"{path}: not a readable source list ({first_line(exc)})") from None


def video_frame_count(source: str) -> int:
    """Frames of a local video: the container's count, else counted by reading; 0 if unreadable."""
    capture = cv2.VideoCapture(_local(source))
    try:
        if not capture.isOpened():
            return 0
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if count > 0:
            return count
        count = 0
        while capture.grab():
            count += 1
        return count
    finally:
        capture.release()


def read_image_source(source: str) -> np.ndarray:
    """An image source as BGR uint8 H x W x 3 (a URI through pyarrow.fs); failures raise BadInputError."""
    if not is_uri(source):
        return read_image(_local(source))
    fs = require("pyarrow.fs", f"reading {source}")
    try:
        filesystem, inner = fs.FileSystem.from_uri(source)
        with filesystem.open_input_file(inner) as stream:
            data = np.frombuffer(stream.read(), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{source}: cannot read ({first_line(exc)})") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise BadInputError(f"{source}: not a readable image (corrupt or unsupported format)")
    return image


def decode_frames(refs: Sequence[FrameRef]) -> list[Decoded]:
    """The pixels of ``refs`` (in their order); a frame that cannot be read carries its error.

    Frames of one video that follow each other in ``refs`` are read with one capture: a seek
    (``CAP_PROP_POS_FRAMES``) to the first, then forward reading, skipping with ``grab``.
    """
    out: list[Decoded] = []
    start = 0
    while start < len(refs):
        end = start + 1
        if is_video(refs[start].source):
            while end < len(refs) and refs[end].source == refs[start].source and refs[end].frame > refs[end - 1].frame:
                end += 1
            out += _decode_video(refs[start:end])
        else:
            out.append(_decode_image(refs[start]))
        start = end
    return out


def _decode_image(ref: FrameRef) -> Decoded:
    try:
        if ref.frame != 0:
            raise BadInputError(f"{ref.source}: an image has only frame 0, not {ref.frame}")
        return Decoded(ref, read_image_source(ref.source))
    except BadInputError as exc:
        return Decoded(ref, None, first_line(exc))


def _decode_video(refs: Sequence[FrameRef]) -> list[Decoded]:
    """Increasing frames of one video."""
    source = refs[0].source
    capture = cv2.VideoCapture(_local(source))
    try:
        if not capture.isOpened():
            return [Decoded(ref, None, f"{source}: not a readable video") for ref in refs]
        if refs[0].frame > 0:
            capture.set(cv2.CAP_PROP_POS_FRAMES, refs[0].frame)
        return list(_read_forward(capture, refs))
    finally:
        capture.release()


def _read_forward(capture: cv2.VideoCapture, refs: Sequence[FrameRef]) -> Iterator[Decoded]:
    position = refs[0].frame
    for ref in refs:
        while position < ref.frame and capture.grab():
            position += 1
        ok, image = capture.read() if position == ref.frame else (False, None)
        if not ok or image is None:
            yield Decoded(ref, None, f"{ref.source}: frame {ref.frame} cannot be read (past the end or corrupt)")
            continue
        position += 1
        yield Decoded(ref, image)
