"""What the runtime returns per image, and the OoD post-processing on it.

Every rule here is specified precisely because the C++ library reproduces it bit for bit
(see ``docs/runtime.md``):

* maps at another size than the image are brought to it with ``cv2.resize`` (scores
  ``INTER_LINEAR`` on float32, the class map ``INTER_NEAREST`` on int32);
* ``ood_mask``: ``uint8(score >= float32(threshold))`` (NaN never passes);
* ``instances``: the 8-connected components of the mask (``cv2.connectedComponentsWithStats``),
  numbered 1..n in raster order of each component's first pixel (row by row, left to right;
  independent of OpenCV's labelling algorithm), then those with ``area >= min_area`` kept;
  ``mean_score`` = the float64 sum of the component's float32 scores in row-major order,
  divided by its area.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np

from pgn_deploy.contract import BadInputError
from pgn_deploy.runtime.stats import default_threshold


def resize_score(score: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An h x w float map at (H, W) = ``size``: bilinear (``cv2.INTER_LINEAR``), float32."""
    score = np.ascontiguousarray(score, dtype=np.float32)
    if score.shape == tuple(size):
        return score
    return cv2.resize(score, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An h x w class map at (H, W) = ``size``: nearest (``cv2.INTER_NEAREST``), int32."""
    labels = np.ascontiguousarray(labels, dtype=np.int32)
    if labels.shape == tuple(size):
        return labels
    return cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


@dataclasses.dataclass(frozen=True)
class Instance:
    """One connected OoD region: ``label_id`` (1..n, components numbered in raster order of
    their first pixel, before the ``min_area`` filter), ``area`` in pixels, ``box``
    ``(x, y, w, h)`` in pixels and the ``mean_score`` of the map over its pixels."""

    label_id: int
    area: int
    box: tuple[int, int, int, int]
    mean_score: float


@dataclasses.dataclass
class Result:
    """The output for one image, at the image's size H x W.

    ``pred``: int32 H x W class ids (the graph's ``pred`` output, else the argmax of the logits
    over classes, first maximum on ties); ``scores``: float32 H x W per score map (PGN maps,
    then baselines); ``logits``: C x h x w as the graph returns them, only when asked;
    ``timings``: ``preprocess_ms``, ``inference_ms`` (the backend call's time divided by the
    images in that call) and ``postprocess_ms``; ``default_score``: the first PGN map;
    ``calibration``: the model's calibration (or ``None``).
    """

    pred: np.ndarray
    scores: dict[str, np.ndarray]
    timings: dict[str, float]
    default_score: str
    calibration: dict[str, Any] | None = None
    logits: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return self.pred.shape[0], self.pred.shape[1]

    def score(self, name: str | None = None) -> np.ndarray:
        """The map ``name`` (default: the first PGN map)."""
        name = name or self.default_score
        if name not in self.scores:
            raise BadInputError(f"no score map {name!r}; the model has: {', '.join(self.scores)}")
        return self.scores[name]

    def threshold(self, threshold: float | None = None, score: str | None = None) -> float:
        """``threshold``, or the calibrated default of map ``score`` (its q0.99)."""
        if threshold is not None:
            return float(threshold)
        name = score or self.default_score
        calibrated = default_threshold(self.calibration, name)
        if calibrated is None:
            raise BadInputError(
                f"no threshold given and the model has no calibration for {name!r}; pass a "
                "threshold or run pgn-calibrate on in-distribution images"
            )
        return calibrated

    def ood_mask(self, threshold: float | None = None, score: str | None = None) -> np.ndarray:
        """uint8 H x W, 1 where ``score >= threshold`` (compared in float32), else 0.

        Default ``score``: the first PGN map; default ``threshold``: the calibrated default of
        that map (an error if the model is not calibrated).
        """
        values = self.score(score)
        limit = np.float32(self.threshold(threshold, score))
        return (values >= limit).astype(np.uint8)

    def instances(self, threshold: float | None = None, min_area: int = 1,
                  score: str | None = None) -> list[Instance]:
        """The 8-connected components of :meth:`ood_mask` with at least ``min_area`` pixels."""
        return [instance for instance, _ in self._instances(threshold, min_area, score, with_max=False)]

    def instances_with_max(self, threshold: float | None = None, min_area: int = 1,
                           score: str | None = None) -> list[tuple[Instance, float]]:
        """:meth:`instances`, each paired with the largest value of the map over its pixels."""
        return self._instances(threshold, min_area, score, with_max=True)

    def _instances(self, threshold: float | None, min_area: int, score: str | None,
                   with_max: bool) -> list[tuple[Instance, float]]:
        if min_area < 0:
            raise BadInputError(f"min_area must be >= 0, got {min_area}")
        values = self.score(score)
        mask = self.ood_mask(threshold, score)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
        flat = labels.ravel()
        inside = np.flatnonzero(flat)  # the mask's pixels only (usually sparse), in row-major order
        in_labels = flat[inside]
        sums = np.bincount(in_labels, weights=values.ravel()[inside].astype(np.float64), minlength=count)
        present, first_seen = np.unique(in_labels, return_index=True)
        first_pixel = np.zeros(count, np.int64)
        first_pixel[present] = inside[first_seen]  # raster index of each label's first pixel
        order = np.argsort(first_pixel[1:], kind="stable") + 1  # label of instance number 1, 2, ...
        kept = np.flatnonzero(stats[order, cv2.CC_STAT_AREA] >= min_area)
        found = []
        for number, label in zip(kept + 1, order[kept]):
            x, y, w, h, area = (int(v) for v in stats[label])
            box = np.s_[y:y + h, x:x + w]
            peak = float(values[box][labels[box] == label].max()) if with_max else float("nan")
            found.append((Instance(int(number), area, (x, y, w, h), float(sums[label] / area)), peak))
        return found
