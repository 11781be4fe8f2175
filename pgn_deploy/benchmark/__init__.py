"""Latency benchmarking of grafted models (the API behind ``pgn-bench``).

* :func:`benchmark_model` / :class:`BenchConfig` / :class:`BenchReport` -- time a model file.
* :func:`plain_model` / :func:`keep_outputs` -- benchmark variants pruned from a grafted model.
* :func:`time_interleaved`, :func:`latency_stats`, :func:`median_ratio` -- the timing loop and
  statistics, also used by the project's study in ``benchmarks/``.
* :class:`PeakMemory` -- peak resident memory; :func:`machine_info` -- what it ran on.
"""
from __future__ import annotations

from pgn_deploy.benchmark.bench import BenchConfig, BenchReport, benchmark_model, make_feeds
from pgn_deploy.benchmark.machine import machine_info
from pgn_deploy.benchmark.memory import PeakMemory
from pgn_deploy.benchmark.prune import keep_outputs, plain_model
from pgn_deploy.benchmark.stats import LatencyStats, Ratio, latency_stats, median_ratio
from pgn_deploy.benchmark.timing import time_calls, time_interleaved

__all__ = [
    "BenchConfig",
    "BenchReport",
    "LatencyStats",
    "PeakMemory",
    "Ratio",
    "benchmark_model",
    "keep_outputs",
    "latency_stats",
    "machine_info",
    "make_feeds",
    "median_ratio",
    "plain_model",
    "time_calls",
    "time_interleaved",
]
