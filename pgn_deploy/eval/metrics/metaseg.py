"""MetaSeg: segment features, meta classification (IoU = 0 vs > 0) and meta regression (IoU).

**Segments** are the 8-connected components (OpenCV) of the predicted class map, one class
each. A pixel is *inner* when its 8 neighbours all belong to its segment (pixels on the image
border are never inner); the others form the *boundary* (S_bd >= 1 for every segment).

**Target**: the MetaSeg IoU of segment K of class c: G = the union of the ground-truth
components of class c that K touches, IoU = |K ∩ G| / |K ∪ G|. Void ground-truth pixels (255)
are left out of |K|; a segment lying entirely in void has no target (NaN) and is skipped by the
meta models.

**Features** (names as in :attr:`SegmentTable.names`), group ``"metaseg"``: ``S``, ``S_in``,
``S_bd``, ``S_rel`` = S/S_bd, ``S_in_rel`` = S_in/S_bd; ``P_<c>`` the mean probability of
each class c; for D in {``E`` (entropy / log C), ``M`` (1 - top1 + top2)}: ``D``, ``D_in``,
``D_bd`` (means over segment, inner, boundary), ``D_rel`` = D * S/S_bd, ``D_in_rel`` = D_in *
S_in/S_bd. Group ``<map>`` for each extra map (e.g. ``pgn_uni_p0.5``): those five for the mean
(``<map>``, ``<map>_in``, ...) and the same five for the variance (``<map>_var``,
``<map>_var_in``, ...). A mean or variance over an empty inner part is 0.

**Meta models** (scikit-learn): standardised features, logistic regression (AuROC) or linear
regression (R^2), k-fold cross validation grouped by image (``GroupKFold`` with shuffling; k
and the seed are parameters and part of the result): the segments of one image are never
split between training and test. The headline value is computed on the pooled out-of-fold
predictions; ``folds`` holds the value of each fold.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from pgn_deploy.contract import BadInputError, require
from pgn_deploy.eval.metrics.score_io import VOID

METASEG = "metaseg"
DEFAULT_FOLDS = 5
DEFAULT_SEED = 0


@dataclasses.dataclass(frozen=True)
class SegmentTable:
    """Segments of one or more images: ``features`` (n x f) named by ``names``, grouped by
    ``groups`` (group -> feature names), with ``iou`` (NaN = no target), ``image`` id, ``cls``."""

    names: tuple[str, ...]
    groups: Mapping[str, tuple[str, ...]]
    features: np.ndarray
    iou: np.ndarray
    image: np.ndarray
    cls: np.ndarray

    def __len__(self) -> int:
        return int(self.iou.size)

    @classmethod
    def concat(cls, tables: Sequence[SegmentTable]) -> SegmentTable:
        """Stack tables with the same features (e.g. one per image)."""
        if not tables:
            raise BadInputError("no segment tables to concatenate")
        first = tables[0]
        for table in tables[1:]:
            if table.names != first.names:
                raise BadInputError("segment tables have different features; use the same maps and classes")
        return cls(first.names, first.groups, np.concatenate([t.features for t in tables]),
                   np.concatenate([t.iou for t in tables]), np.concatenate([t.image for t in tables]),
                   np.concatenate([t.cls for t in tables]))

    def columns(self, groups: Sequence[str] | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
        """Feature matrix and names of the chosen ``groups`` (all when ``None``)."""
        if groups is None:
            return self.features, self.names
        unknown = [g for g in groups if g not in self.groups]
        if unknown:
            raise BadInputError(f"unknown feature group(s) {', '.join(unknown)}; have {', '.join(self.groups)}")
        names = tuple(n for g in groups for n in self.groups[g])
        index = [self.names.index(n) for n in names]
        return self.features[:, index], names


def _segments(pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segment id per pixel (0..n-1) and the class of each segment."""
    seg = np.zeros(pred.shape, np.int32)
    classes: list[np.ndarray] = []
    offset = 0
    for c in np.unique(pred):
        count, labels = cv2.connectedComponents((pred == c).astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        mask = labels > 0
        seg[mask] = labels[mask] + (offset - 1)
        classes.append(np.full(count - 1, c, np.int64))
        offset += count - 1
    return seg, np.concatenate(classes)


def _inner(seg: np.ndarray) -> np.ndarray:
    """Pixels whose 8 neighbours all carry the same segment id (border pixels: never)."""
    padded = np.pad(seg, 1, constant_values=-1)
    h, w = seg.shape
    inner = np.ones(seg.shape, bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy != 1 or dx != 1:
                inner &= padded[dy:dy + h, dx:dx + w] == seg
    return inner


class _Regions:
    """Per-segment sums over segment, inner and boundary pixels."""

    def __init__(self, seg: np.ndarray, inner: np.ndarray, n: int) -> None:
        self.seg, self.inner, self.n = seg.ravel(), inner.ravel(), n
        self.size = np.bincount(self.seg, minlength=n).astype(np.float64)
        self.size_in = np.bincount(self.seg, self.inner, minlength=n)
        self.size_bd = self.size - self.size_in

    def means(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        values = values.ravel().astype(np.float64)
        total = np.bincount(self.seg, values, minlength=self.n)
        inner = np.bincount(self.seg, values * self.inner, minlength=self.n)
        mean_in = np.divide(inner, self.size_in, out=np.zeros(self.n), where=self.size_in > 0)
        return total / self.size, mean_in, (total - inner) / self.size_bd

    def five(self, prefix: str, values: np.ndarray) -> dict[str, np.ndarray]:
        """mean, inner mean, boundary mean and the two relative versions, named from ``prefix``."""
        mean, mean_in, mean_bd = self.means(values)
        return {prefix: mean, f"{prefix}_in": mean_in, f"{prefix}_bd": mean_bd,
                f"{prefix}_rel": mean * self.size / self.size_bd,
                f"{prefix}_in_rel": mean_in * self.size_in / self.size_bd}

    def five_variance(self, prefix: str, values: np.ndarray) -> dict[str, np.ndarray]:
        values = values.astype(np.float64)
        means = self.means(values)
        squares = self.means(values * values)
        var = [np.maximum(sq - m * m, 0.0) for sq, m in zip(squares, means)]
        return {prefix: var[0], f"{prefix}_in": var[1], f"{prefix}_bd": var[2],
                f"{prefix}_rel": var[0] * self.size / self.size_bd,
                f"{prefix}_in_rel": var[1] * self.size_in / self.size_bd}


def _dispersions(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entropy / log C and margin 1 - top1 + top2 per pixel."""
    c = probs.shape[0]
    p = probs.astype(np.float64)
    entropy = -np.sum(p * np.log(np.maximum(p, np.finfo(np.float64).tiny)), axis=0) / np.log(c)
    top = np.partition(p, c - 2, axis=0)[c - 2:]
    return entropy, 1.0 - top[1] + top[0]


def _segment_iou(seg: np.ndarray, seg_class: np.ndarray, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    n = seg_class.size
    gt_ids = np.zeros(gt.shape, np.int64)
    sizes: list[np.ndarray] = [np.zeros(1)]
    offset = 0
    for c in np.unique(seg_class):
        count, labels, stats, _ = cv2.connectedComponentsWithStats((gt == c).astype(np.uint8), connectivity=8,
                                                                   ltype=cv2.CV_32S)
        mask = labels > 0
        gt_ids[mask] = labels[mask] + offset
        sizes.append(stats[1:, cv2.CC_STAT_AREA].astype(np.float64))
        offset += count - 1
    gt_size = np.concatenate(sizes)
    valid = gt != VOID
    size_valid = np.bincount(seg[valid], minlength=n).astype(np.float64)
    hit = valid & (pred == gt)
    pairs, inter = np.unique(seg[hit].astype(np.int64) * (offset + 1) + gt_ids[hit], return_counts=True)
    pair_seg, pair_gt = np.divmod(pairs, offset + 1)
    intersection = np.bincount(pair_seg, inter, minlength=n)
    touched = np.bincount(pair_seg, gt_size[pair_gt], minlength=n)
    union = size_valid + touched - intersection
    return np.divide(intersection, union, out=np.full(n, np.nan), where=size_valid > 0)


def segment_features(probs: np.ndarray, gt: np.ndarray | None = None,
                     maps: Mapping[str, np.ndarray] | None = None, image: int = 0) -> SegmentTable:
    """Segments of one image with their features (module doc) and, given ``gt``, their IoU.

    ``probs``: softmax C x H x W; ``gt``: class ids H x W (255 = void) or ``None`` (IoU NaN);
    ``maps``: extra per-pixel maps H x W by name (PGN maps); ``image``: id used for grouping.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] < 2:
        raise BadInputError(f"probabilities must be C x H x W with C >= 2, got shape {probs.shape}")
    if not np.isfinite(probs).all():
        raise BadInputError(f"image {image}: probabilities hold NaN or infinite values")
    shape = probs.shape[1:]
    maps = dict(maps or {})
    for name, values in maps.items():
        if np.shape(values) != shape or not np.isfinite(values).all():
            raise BadInputError(f"image {image}: map {name!r} must be finite with shape {shape}, "
                                f"got {np.shape(values)}")
    pred = probs.argmax(axis=0)
    seg, seg_class = _segments(pred)
    regions = _Regions(seg, _inner(seg), seg_class.size)
    columns: dict[str, np.ndarray] = {
        "S": regions.size, "S_in": regions.size_in, "S_bd": regions.size_bd,
        "S_rel": regions.size / regions.size_bd, "S_in_rel": regions.size_in / regions.size_bd,
    }
    for c in range(probs.shape[0]):
        columns[f"P_{c}"] = regions.means(probs[c])[0]
    entropy, margin = _dispersions(probs)
    columns |= regions.five("E", entropy) | regions.five("M", margin)
    groups = {METASEG: tuple(columns)}
    for name, values in maps.items():
        extra = regions.five(name, np.asarray(values)) | regions.five_variance(f"{name}_var", np.asarray(values))
        groups[name] = tuple(extra)
        columns |= extra
    if gt is None:
        iou = np.full(seg_class.size, np.nan)
    else:
        gt = np.asarray(gt)
        if gt.shape != shape:
            raise BadInputError(f"image {image}: ground truth is {gt.shape}, probabilities are {shape}")
        iou = _segment_iou(seg, seg_class, pred, gt)
    return SegmentTable(
        names=tuple(columns), groups=groups, features=np.stack(list(columns.values()), axis=1),
        iou=iou, image=np.full(seg_class.size, image, np.int64), cls=seg_class,
    )


@dataclasses.dataclass(frozen=True)
class MetaResult:
    """A cross-validated meta model score: ``value`` on pooled out-of-fold predictions."""

    metric: str
    value: float
    folds: tuple[float, ...]
    k: int
    seed: int
    segments: int
    images: int
    features: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """``{metric: value, <metric>_folds: [...], k, seed, segments, images, features: count}``."""
        return {self.metric: self.value, f"{self.metric}_folds": list(self.folds), "k": self.k,
                "seed": self.seed, "segments": self.segments, "images": self.images,
                "features": len(self.features)}


def _cross_validate(table: SegmentTable, groups: Sequence[str] | None, k: int, seed: int,
                    classify: bool) -> MetaResult:
    require("sklearn", "meta classification / regression")
    from sklearn.base import clone
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.metrics import r2_score, roc_auc_score
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, names = table.columns(groups)
    keep = np.isfinite(table.iou)
    x, iou, image = x[keep], table.iou[keep], table.image[keep]
    images = np.unique(image).size
    if images < k or k < 2:
        raise BadInputError(f"{k}-fold cross validation over images needs k >= 2 and at least {k} "
                            f"images with segments, got {images}")
    y = (iou > 0).astype(int) if classify else iou
    if classify and np.unique(y).size < 2:
        raise BadInputError("meta classification needs segments with IoU = 0 and with IoU > 0")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000) if classify else LinearRegression())
    score = roc_auc_score if classify else r2_score
    predicted = np.zeros(y.size)
    folds = []
    for train, test in GroupKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y, image):
        if classify and np.unique(y[train]).size < 2:
            raise BadInputError("a training fold holds only one class; use fewer folds or more images")
        fitted = clone(model).fit(x[train], y[train])
        predicted[test] = fitted.predict_proba(x[test])[:, 1] if classify else fitted.predict(x[test])
        folds.append(float(score(y[test], predicted[test])) if not classify or np.unique(y[test]).size == 2
                     else float("nan"))
    return MetaResult(metric="AuROC" if classify else "R2", value=float(score(y, predicted)),
                      folds=tuple(folds), k=k, seed=seed, segments=int(y.size), images=int(images),
                      features=names)


def meta_classification(table: SegmentTable, groups: Sequence[str] | None = None,
                        k: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED) -> MetaResult:
    """AuROC of IoU = 0 vs IoU > 0 from the chosen feature ``groups`` (all by default)."""
    return _cross_validate(table, groups, k, seed, classify=True)


def meta_regression(table: SegmentTable, groups: Sequence[str] | None = None,
                    k: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED) -> MetaResult:
    """R^2 of the predicted IoU from the chosen feature ``groups`` (all by default)."""
    return _cross_validate(table, groups, k, seed, classify=False)
