"""Score-map statistics: the calibration entries, default thresholds and heatmap ranges.

A calibration entry (``Metadata.calibration[name]``) is::

    {"q": {"0.5": v, "0.9": v, "0.95": v, "0.99": v, "0.999": v},
     "min": v, "max": v, "mean": v, "n_images": n, "n_pixels": n, "n_nonfinite": n}

measured over the finite pixels of in-distribution images (quantiles with numpy's default
"linear" method, in float64).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pgn_deploy.contract import BadInputError

QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)
THRESHOLD_QUANTILE = "0.99"  # default OoD threshold: 1 % of in-distribution pixels flagged
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
    }


def default_threshold(calibration: dict[str, Any] | None, name: str) -> float | None:
    """The calibrated default OoD threshold of map ``name`` (its 0.99 quantile), or ``None``."""
    entry = (calibration or {}).get(name)
    return float(entry["q"][THRESHOLD_QUANTILE]) if entry else None


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
