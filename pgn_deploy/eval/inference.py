"""Per-frame score maps for an evaluation: runtime, test-time augmentation, baselines, cache.

:func:`frame_maps` turns a dataset frame into every requested map (H x W float32 at the
image's size), reading them from the cache in ``--out`` when a previous run saved them, so a
second evaluation with other metrics does not re-infer. Maps are cached as float32 ``.npy``
files ``<out>/maps/<map name>/<frame id>.npy``; the predicted class map as
``<out>/maps/pred/<frame id>.npy`` (int32). The softmax (C x H x W, needed by the
in-distribution metrics) is never cached: at 19 x 2 megapixels a frame it would take tens of
gigabytes for Cityscapes val, so those evaluations re-infer.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from pgn_deploy.eval.baselines import softmax
from pgn_deploy.eval.datasets import Frame
from pgn_deploy.runtime import Runtime
from pgn_deploy.runtime.result import resize_score

DEFAULT_TTA_SCALES = (0.5, 1.0, 2.0)


@dataclasses.dataclass(frozen=True)
class TTA:
    """Test-time augmentation as the paper's published inference: mean over ``scales`` and,
    with ``flip``, over horizontally flipped copies. ``TTA()`` is plain inference."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    @property
    def active(self) -> bool:
        return self.flip or self.scales != (1.0,)

    @classmethod
    def parse(cls, text: str | None) -> TTA:
        """``None`` -> off; ``""`` -> scales 0.5, 1, 2 and flip; ``"0.75,1,flip"`` -> as given."""
        from pgn_deploy.contract import BadInputError

        if text is None:
            return cls()
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if not parts:
            return cls(DEFAULT_TTA_SCALES, True)
        flip = "flip" in parts
        try:
            scales = tuple(float(part) for part in parts if part != "flip") or (1.0,)
        except ValueError:
            raise BadInputError(f"--tta {text!r}: expected scales and/or 'flip', e.g. 0.5,1,2,flip") from None
        if any(not s > 0 for s in scales):
            raise BadInputError(f"--tta {text!r}: scales must be > 0")
        return cls(scales, flip)


@dataclasses.dataclass
class FrameMaps:
    """What the metrics need of one frame: ``maps`` (name -> H x W float32), ``pred`` (H x W
    int32) and, for in-distribution metrics, ``probs`` (C x H x W float32 softmax)."""

    frame_id: str
    maps: dict[str, np.ndarray]
    pred: np.ndarray
    probs: np.ndarray | None = None


class MapCache:
    """Float32 maps on disk under ``root/maps/<name>/<frame id>.npy`` (atomic writes)."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(root) / "maps" if root is not None else None

    def path(self, name: str, frame_id: str) -> Path:
        assert self.root is not None
        return self.root / name / f"{frame_id}.npy"

    def load(self, names: Sequence[str], frame_id: str) -> dict[str, np.ndarray] | None:
        """Every named array of the frame, or ``None`` if any is missing (or no cache)."""
        if self.root is None or not all(self.path(n, frame_id).is_file() for n in names):
            return None
        return {name: np.load(self.path(name, frame_id)) for name in names}

    def save(self, arrays: dict[str, np.ndarray], frame_id: str) -> None:
        if self.root is None:
            return
        for name, array in arrays.items():
            target = self.path(name, frame_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".npy", dir=target.parent)
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, array)
            os.replace(tmp, target)


def _augmented_run(runtime: Runtime, image: np.ndarray, tta: TTA, names: Sequence[str],
                   with_probs: bool) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]:
    """Maps, pred and (optionally) softmax of one BGR image, averaged over the TTA views."""
    height, width = image.shape[:2]
    need_logits = with_probs or tta.active
    sums: dict[str, np.ndarray] = {name: np.zeros((height, width), np.float64) for name in names}
    prob_sum = None
    views = [(s, f) for s in tta.scales for f in ((False, True) if tta.flip else (False,))]
    pred = None
    for scale, flip in views:
        view = image[:, ::-1] if flip else image
        if scale != 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            view = cv2.resize(np.ascontiguousarray(view), size, interpolation=cv2.INTER_LINEAR)
        result = runtime.run(np.ascontiguousarray(view), color="BGR", logits=need_logits)
        for name in names:
            score = resize_score(result.scores[name], (height, width))
            sums[name] += score[:, ::-1] if flip else score
        if need_logits:
            probs = softmax(result.logits[None])[0]
            probs = np.stack([resize_score(c, (height, width)) for c in probs])
            view_probs = probs[:, :, ::-1] if flip else probs
            prob_sum = view_probs if prob_sum is None else prob_sum + view_probs
        else:
            pred = result.pred
    maps = {name: (total / len(views)).astype(np.float32) for name, total in sums.items()}
    probs = None if prob_sum is None else (prob_sum / len(views)).astype(np.float32)
    if probs is not None:
        pred = probs.argmax(axis=0).astype(np.int32)
    return maps, np.ascontiguousarray(pred, dtype=np.int32), probs if with_probs else None


Scorer = Callable[[np.ndarray, str], dict[str, np.ndarray]]


def frame_maps(runtime: Runtime, frame: Frame, names: Sequence[str], *, cache: MapCache,
               tta: TTA = TTA(), scorers: Sequence[Scorer] = (), scorer_names: Sequence[str] = (),
               with_probs: bool = False) -> FrameMaps:
    """Every map of ``names`` (graph outputs) and of the ``scorers`` (baselines) for ``frame``.

    Cached maps are reused; missing ones are computed (the whole frame is re-inferred then)
    and cached. ``with_probs`` always re-infers (the softmax is not cached).
    """
    cached = None if with_probs else cache.load([*names, *scorer_names, "pred"], frame.id)
    if cached is not None:
        pred = cached.pop("pred")
        return FrameMaps(frame.id, cached, pred)
    image = frame.load_image()
    maps, pred, probs = _augmented_run(runtime, image, tta, names, with_probs)
    for scorer in scorers:
        maps.update(scorer(image, "BGR"))
    cache.save({**maps, "pred": pred}, frame.id)
    return FrameMaps(frame.id, maps, pred, probs)
