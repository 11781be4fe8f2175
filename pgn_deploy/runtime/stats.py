"""Score-map statistics: the calibration entries, default thresholds and heatmap ranges.

A calibration entry (``Metadata.calibration[name]``) is::

    {"q": {"0.5": v, "0.9": v, "0.95": v, "0.99": v, "0.995": v, "0.999": v},
     "min": v, "max": v, "mean": v, "n_images": n, "n_pixels": n, "n_nonfinite": n,
     "threshold": v, "threshold_rule": "q0.995"}

measured over the finite pixels of in-distribution images (quantiles with numpy's default
"linear" method, in float64). Entries written before ``threshold`` existed hold only the
quantiles 0.5 .. 0.999; their default threshold is ``q["0.99"]``.

The **percentile rank** (the calibrated scale, unit "in-distribution percentile rank", 0..1) of
a value ``x`` is the piecewise linear function through the knots ``(min, 0)``, ``(q_l, l)`` for
every stored level ``l``, ``(max, 1)``: 0 below ``min``, 1 at and above ``max``; where knots tie
(equal values) it steps up to the highest level at that value. :func:`percentile_rank` is the
numpy definition; :mod:`pgn_deploy.graft.normalize` computes the same in the ONNX graph.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pgn_deploy.contract import BadInputError

QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.995, 0.999)
"""Stored quantile levels: dense where OoD decisions are made. Each is a knot of the in-graph
percentile rank, whose cost grows with their number (two passes over the full-resolution map
per interior knot: the 6 of these levels and the ends cost about 2.2 ms at 512 x 1024 on one
CPU thread, :mod:`pgn_deploy.graft.normalize`)."""
THRESHOLD_QUANTILE = "0.995"
"""The default OoD threshold of a map is its in-distribution q0.995: a pixel false-positive
budget of 0.5 % on in-distribution images (about 2600 pixels of a 512 x 1024 frame, mostly thin
class boundaries that ``min_area`` removes from the instances), while real obstacles score above
everything seen in distribution. It is a rank, so it means the same for every map and model."""
THRESHOLD_RULE = f"q{THRESHOLD_QUANTILE}"
LEGACY_THRESHOLD_QUANTILE = "0.99"  # calibrations written before "threshold" was stored
HEATMAP_TOP_QUANTILE = "0.999"  # calibrated heatmaps saturate here
PER_IMAGE_PERCENTILES = (1.0, 99.0)


def map_statistics(samples: Sequence[np.ndarray], n_images: int) -> dict[str, Any]:
    """The calibration entry of one map from its pixel samples (any shapes, float)."""
    values = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in samples])
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise BadInputError("no finite score values to calibrate on")
    quantiles = np.quantile(finite, QUANTILES)
    return {
        "q": {format(q, "g"): float(v) for q, v in zip(QUANTILES, quantiles)},
        "min": float(finite.min()),
        "max": float(finite.max()),
        "mean": float(finite.mean()),
        "n_images": int(n_images),
        "n_pixels": int(finite.size),
        "n_nonfinite": int(values.size - finite.size),
        "threshold": float(quantiles[QUANTILES.index(float(THRESHOLD_QUANTILE))]),
        "threshold_rule": THRESHOLD_RULE,
    }


def default_threshold(calibration: dict[str, Any] | None, name: str) -> float | None:
    """The calibrated default OoD threshold of map ``name`` (raw units), or ``None``.

    The entry's ``threshold`` (its rule in ``threshold_rule``, q0.995 here); an entry written
    before that key existed gives its q0.99.
    """
    entry = (calibration or {}).get(name)
    if not entry:
        return None
    return float(entry["threshold"] if "threshold" in entry else entry["q"][LEGACY_THRESHOLD_QUANTILE])


def default_rank_threshold(calibration: dict[str, Any] | None, name: str) -> float | None:
    """The default threshold of map ``name`` on the percentile-rank scale, or ``None``."""
    entry = (calibration or {}).get(name)
    threshold = default_threshold(calibration, name)
    return None if threshold is None else float(percentile_rank(np.float64(threshold), entry))


def rank_knots(entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(values, levels)`` float64 of the percentile-rank function of one calibration entry:
    ``(min, 0)``, every stored quantile ``(q_l, l)`` in increasing ``l``, ``(max, 1)``."""
    levels = sorted((float(level), float(value)) for level, value in entry["q"].items())
    values = [float(entry["min"]), *(v for _, v in levels), float(entry["max"])]
    ranks = [0.0, *(level for level, _ in levels), 1.0]
    return np.maximum.accumulate(np.asarray(values, np.float64)), np.asarray(ranks, np.float64)


def percentile_rank(score: np.ndarray, entry: dict[str, Any]) -> np.ndarray:
    """The in-distribution percentile rank of ``score`` (any shape) in [0, 1], float64.

    Each knot segment ``[v_k, v_k+1]`` adds ``(l_k+1 - l_k) * clip((x - v_k) / (v_k+1 - v_k), 0, 1)``;
    a tied segment (``v_k+1 == v_k``) adds its whole step once ``x >= v_k``. Equals
    ``np.interp(x, values, levels)`` where the knot values strictly increase. NaN stays NaN.
    """
    values, levels = rank_knots(entry)
    x = np.asarray(score, np.float64)
    rank = np.zeros(x.shape, np.float64)
    for lo, hi, step in zip(values[:-1], values[1:], np.diff(levels)):
        if hi > lo:
            rank += step * np.clip((x - lo) / (hi - lo), 0.0, 1.0)
        else:
            rank += np.where(x >= lo, step, np.where(np.isnan(x), np.nan, 0.0))
    return np.clip(rank, 0.0, 1.0)


def display_range(score: np.ndarray, calibration: dict[str, Any] | None, name: str) -> dict[str, Any]:
    """The value range a heatmap of ``score`` maps to the colormap.

    Calibrated: ``[min, q0.999]`` of the calibration images, so colours compare across images.
    Otherwise this image's 1st..99th percentile (numpy "linear"), stated in ``source``.
    Returns ``{"lo": float, "hi": float, "calibrated": bool, "source": str}``.
    """
    entry = (calibration or {}).get(name)
    if entry:
        return {"lo": float(entry["min"]), "hi": float(entry["q"][HEATMAP_TOP_QUANTILE]), "calibrated": True,
                "source": f"calibration (min..q{HEATMAP_TOP_QUANTILE})"}
    finite = score[np.isfinite(score)]
    lo, hi = np.percentile(finite, PER_IMAGE_PERCENTILES) if finite.size else (0.0, 0.0)
    low, high = PER_IMAGE_PERCENTILES
    return {"lo": float(lo), "hi": float(hi), "calibrated": False,
            "source": f"per-image percentiles {low:g}..{high:g} (uncalibrated)"}


def summary(score: np.ndarray) -> dict[str, float]:
    """Min, mean, 99th percentile and max of a map's finite values (for reports)."""
    finite = score[np.isfinite(score)].astype(np.float64)
    if finite.size == 0:
        return {"min": float("nan"), "mean": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {"min": float(finite.min()), "mean": float(finite.mean()),
            "p99": float(np.percentile(finite, 99)), "max": float(finite.max())}
