"""Score maps and OoD labels on disk: reading, checking and pairing them by file stem.

* **Scores**: ``.npy`` holding a float array (float16/32/64; read as float32) of shape H x W,
  or with leading singleton axes (1 x H x W, 1 x 1 x H x W); or a single-channel **16-bit**
  PNG whose value v means the score v / 65535. Every score must be finite.
* **Labels**: single-channel 8-bit PNG with values 0 (in-distribution), 1 (anomaly /
  obstacle) and 255 (void) only.
* **Pairing** (:func:`pair_directories`): a label ``<stem>.png`` or
  ``<stem>_labels_semantic.png`` has the key ``<stem>``; when a label folder holds any
  ``*_labels_semantic.png`` only those are labels (the SegmentMeIfYouCan layout keeps colour
  previews beside them). A scores file ``<name>.npy`` / ``<name>.png`` pairs with the label
  whose key is ``<name>`` or, failing that, ``<name>`` with trailing ``.<part>`` suffixes removed
  (``frame7.pgn_uni_p0.5.npy`` -> ``frame7``), the longest key that exists winning. With a map
  name M (for a ``pgn-run --save-npy`` folder holding several maps and images), only files
  ``<stem>.M.npy`` / ``<stem>.M.png`` are scores and ``<stem>`` is their key. Every scores file
  needs a label, every label needs exactly one scores file: anything else is an error that
  names the file.
"""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from pgn_deploy.contract import BadInputError, first_line

LABEL_VALUES = (0, 1, 255)
# np.load parses a .npy header with ast.literal_eval; on CPython 3.11 two threads parsing at
# once can raise "SystemError: AST constructor recursion depth mismatch" (CPython gh-106905,
# seen here in pgn-metrics' reader threads), so headers are parsed one at a time.
_NPY_HEADER_LOCK = threading.Lock()
VOID = 255
SCORE_SUFFIXES = (".npy", ".png")
SMIYC_LABEL_SUFFIX = "_labels_semantic"
PNG16_SCALE = 65535.0


class Frame(Protocol):
    """One frame of a split: ``name`` (how error messages call it) and ``load()`` giving
    ``(scores, labels)`` arrays, which the evaluation checks with :func:`check_frame`.

    ``load`` may be called more than once (the OoD evaluation reads every frame twice).
    """

    name: str

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, labels)`` of the frame, unchecked (see :func:`check_frame`)."""


def check_frame(scores: np.ndarray, labels: np.ndarray, where: str = "frame") -> tuple[np.ndarray, np.ndarray]:
    """Validate one frame and return ``(scores float32 HxW, labels uint8 HxW)``.

    Raises :class:`BadInputError` (naming ``where``) for a shape mismatch, labels outside
    {0, 1, 255} or scores that are NaN or infinite.
    """
    scores = _squeeze(np.asarray(scores), where)
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise BadInputError(f"{where}: labels must be H x W, got shape {labels.shape}")
    if scores.shape != labels.shape:
        raise BadInputError(f"{where}: scores are {scores.shape[0]}x{scores.shape[1]} but labels are "
                            f"{labels.shape[0]}x{labels.shape[1]}")
    if not np.issubdtype(scores.dtype, np.floating):
        raise BadInputError(f"{where}: scores must be floating point, got {scores.dtype}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise BadInputError(f"{where}: labels must be integers, got {labels.dtype}")
    if labels.dtype != np.uint8:
        if labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
            raise BadInputError(f"{where}: label values must be 0, 1 or 255")
        labels = labels.astype(np.uint8)
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
    stray = sorted(set(present.tolist()) - set(LABEL_VALUES))
    if stray:
        shown = ", ".join(map(str, stray[:5])) + (", ..." if len(stray) > 5 else "")
        raise BadInputError(f"{where}: label values must be 0, 1 or 255, found {shown}")
    scores = scores.astype(np.float32, copy=False)
    if not np.isfinite(scores).all():
        bad = np.count_nonzero(~np.isfinite(scores))
        raise BadInputError(f"{where}: {bad} score(s) are NaN or infinite; scores must be finite")
    return scores, labels


def _squeeze(scores: np.ndarray, where: str) -> np.ndarray:
    while scores.ndim > 2 and scores.shape[0] == 1:
        scores = scores[0]
    if scores.ndim != 2:
        raise BadInputError(f"{where}: scores must be H x W (or 1 x H x W), got shape {scores.shape}")
    return scores


def load_npy(path: str | Path) -> np.ndarray:
    """``np.load(path, allow_pickle=False)`` of a ``.npy`` file, safe to call from several
    threads: the header is parsed under a lock (memory-mapped), the data copied outside it.
    Raises ``OSError``/``ValueError`` like ``np.load`` (``EOFError`` for an empty file)."""
    with _NPY_HEADER_LOCK:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    return np.array(mapped)


def read_scores(path: str | Path) -> np.ndarray:
    """Scores of one frame as float32 H x W from ``.npy`` (float) or a 16-bit PNG (v / 65535)."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            array = load_npy(path)
        except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty file
            raise BadInputError(f"{path}: not a readable .npy file ({first_line(exc)})") from None
        if not np.issubdtype(array.dtype, np.floating):
            raise BadInputError(f"{path}: scores must be a float array, got {array.dtype}")
        return _squeeze(array, str(path)).astype(np.float32, copy=False)
    if path.suffix == ".png":
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise BadInputError(f"{path}: not a readable PNG")
        if image.dtype != np.uint16 or image.ndim != 2:
            raise BadInputError(f"{path}: a score PNG must be single-channel 16-bit (value / 65535), "
                                f"got {image.dtype} with {1 if image.ndim == 2 else image.shape[2]} channel(s)")
        return image.astype(np.float32) / np.float32(PNG16_SCALE)
    raise BadInputError(f"{path}: scores must be .npy or 16-bit .png")


def read_labels(path: str | Path) -> np.ndarray:
    """Labels of one frame as uint8 H x W from a single-channel PNG (values checked later)."""
    path = Path(path)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise BadInputError(f"{path}: not a readable PNG")
    if image.ndim != 2:
        raise BadInputError(f"{path}: labels must be a single-channel PNG, got {image.shape[2]} channels")
    return image


@dataclasses.dataclass(frozen=True)
class FilePair:
    """A scores file and its label file, paired by ``stem``; ``load()`` reads both."""

    stem: str
    scores_path: Path
    labels_path: Path

    @property
    def name(self) -> str:
        """``<scores path> (labels <label file name>)``, for error messages."""
        return f"{self.scores_path} (labels {self.labels_path.name})"

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, labels)`` as read from the two files (unchecked: see :func:`check_frame`)."""
        return read_scores(self.scores_path), read_labels(self.labels_path)


@dataclasses.dataclass(frozen=True)
class ArrayFrame:
    """A frame already in memory (for the API and tests)."""

    name: str
    scores: np.ndarray
    labels: np.ndarray

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, labels)``, the arrays held (unchecked: see :func:`check_frame`)."""
        return self.scores, self.labels


def label_key(name: str) -> str:
    """The stem a label file name stands for: ``x.png`` and ``x_labels_semantic.png`` -> ``x``."""
    stem = name[: -len(".png")]
    return stem[: -len(SMIYC_LABEL_SUFFIX)] if stem.endswith(SMIYC_LABEL_SUFFIX) else stem


def score_key_candidates(name: str) -> list[str]:
    """Stems a scores file name may stand for, longest first: ``a.b.npy`` -> ``a.b``, ``a``."""
    base = name.rsplit(".", 1)[0]
    candidates = [base]
    while "." in base:
        base = base.rsplit(".", 1)[0]
        candidates.append(base)
    return candidates


def _visible_files(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise BadInputError(f"{folder}: {what} folder does not exist")
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _labels_by_key(folder: Path) -> dict[str, Path]:
    pngs = [p for p in _visible_files(folder, "labels") if p.suffix == ".png"]
    smiyc = [p for p in pngs if p.stem.endswith(SMIYC_LABEL_SUFFIX)]
    labels: dict[str, Path] = {}
    for path in smiyc or pngs:
        key = label_key(path.name)
        if key in labels:
            raise BadInputError(f"{path} and {labels[key]} are labels for the same stem {key!r}; keep one")
        labels[key] = path
    if not labels:
        raise BadInputError(f"{folder}: no label PNGs found")
    return labels


def pair_directories(scores_dir: str | Path, labels_dir: str | Path, map_name: str | None = None) -> list[FilePair]:
    """Pair every scores file in ``scores_dir`` (only ``<stem>.<map_name>.npy|png`` with a
    ``map_name``) with its label in ``labels_dir`` (module doc).

    Returns the pairs sorted by stem; raises :class:`BadInputError` naming the first file
    without a partner, or two scores files claiming one label.
    """
    scores_dir, labels_dir = Path(scores_dir), Path(labels_dir)
    files = [p for p in _visible_files(scores_dir, "scores") if p.suffix in SCORE_SUFFIXES]
    if map_name is not None:
        files = [p for p in files if p.name[: -len(p.suffix)].endswith(f".{map_name}")]
    if not files:
        wanted = f"<stem>.{map_name}.npy or .png" if map_name else "*.npy or 16-bit *.png"
        raise BadInputError(f"{scores_dir}: no score files ({wanted})")
    labels = _labels_by_key(labels_dir)
    claimed: dict[str, Path] = {}
    for path in files:
        candidates = ([path.name[: -len(f".{map_name}{path.suffix}")]] if map_name
                      else score_key_candidates(path.name))
        key = next((k for k in candidates if k in labels), None)
        if key is None:
            raise BadInputError(f"{path} has no label in {labels_dir} (looked for <stem>.png or "
                                f"<stem>_labels_semantic.png with stem {' or '.join(candidates)})")
        if key in claimed:
            raise BadInputError(f"{claimed[key]} and {path} both pair with label {labels[key].name}; "
                                f"choose one map with --map (the part between the stem and the extension) "
                                f"or put one map per folder")
        claimed[key] = path
    unpaired = sorted(set(labels) - set(claimed))
    if unpaired:
        more = f" (and {len(unpaired) - 1} more)" if len(unpaired) > 1 else ""
        raise BadInputError(f"{labels[unpaired[0]]} has no scores file in {scores_dir}{more}")
    return [FilePair(key, claimed[key], labels[key]) for key in sorted(claimed)]
