"""Latency statistics and the ratio of two latency distributions with a confidence interval.

Latencies are seconds in, milliseconds out. Percentiles use numpy's default ("linear") method.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from pgn_deploy.contract import BadInputError

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Summary of ``n`` latency samples, all in milliseconds."""

    n: int
    min_ms: float
    median_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    std_ms: float

    def to_json(self) -> dict[str, float | int]:
        """The fields as a JSON-ready dict: ``n`` and the statistics in milliseconds."""
        return dataclasses.asdict(self)


def latency_stats(samples_s: Sequence[float]) -> LatencyStats:
    """Statistics of latency samples given in seconds (at least one)."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise BadInputError("no latency samples to summarize")
    p90, p99 = np.percentile(ms, [90, 99])
    return LatencyStats(
        n=int(ms.size),
        min_ms=float(ms.min()),
        median_ms=float(np.median(ms)),
        mean_ms=float(ms.mean()),
        p90_ms=float(p90),
        p99_ms=float(p99),
        max_ms=float(ms.max()),
        std_ms=float(ms.std()),
    )


def throughput(stats: LatencyStats, batch: int) -> float:
    """Images per second at the median latency of one call of ``batch`` images."""
    return batch / (stats.median_ms / 1e3)


@dataclasses.dataclass(frozen=True)
class Ratio:
    """``value`` = median(a) / median(b) with a bootstrap confidence interval [low, high]."""

    value: float
    low: float
    high: float
    confidence: float

    @property
    def overhead_percent(self) -> float:
        """``(value - 1) * 100``: how much slower a is than b, in percent."""
        return (self.value - 1.0) * 100.0

    def to_json(self) -> dict[str, float]:
        """``value``, ``low``, ``high``, ``confidence`` and ``overhead_percent``, as a JSON-ready dict."""
        return dataclasses.asdict(self) | {"overhead_percent": self.overhead_percent}


def median_ratio(
    a_s: Sequence[float],
    b_s: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> Ratio:
    """Ratio of the medians of two interleaved sample series, with a paired bootstrap interval.

    ``a_s[i]`` and ``b_s[i]`` must come from the same round of an interleaved run: rounds are
    resampled as pairs, so slow phases of the machine, which hit both, cancel in the interval.
    """
    a = np.asarray(a_s, dtype=np.float64)
    b = np.asarray(b_s, dtype=np.float64)
    if a.size == 0 or a.size != b.size:
        raise BadInputError(f"paired samples needed, got {a.size} and {b.size}")
    if not 0 < confidence < 1:
        raise BadInputError(f"confidence must be in (0, 1), got {confidence}")
    value = float(np.median(a) / np.median(b))
    rows = np.random.default_rng(seed).integers(0, a.size, size=(resamples, a.size))
    ratios = np.median(a[rows], axis=1) / np.median(b[rows], axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(ratios, [tail, 100.0 - tail])
    return Ratio(value=value, low=float(low), high=float(high), confidence=confidence)
