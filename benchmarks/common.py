"""What every section of the study shares: calls to time, interleaved timing on a time budget,
and the summary of each variant against a reference."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pgn_deploy.benchmark import latency_stats, make_feeds, median_ratio, time_interleaved
from pgn_deploy.benchmark.machine import load_average
from pgn_deploy.benchmark.timing import SETTLE, get_clock
from pgn_deploy.contract import MissingMetadataError
from pgn_deploy.runtime.backends.base import BackendOptions, open_backend
from pgn_deploy.runtime.model_file import load_model_metadata


@dataclasses.dataclass(frozen=True)
class Settings:
    """Study-wide settings: ONNX backend and CPU threads, torch device, seconds of timing per
    comparison, the bounds on interleaved rounds, and the clock (``wall`` or ``cpu``, see
    :mod:`pgn_deploy.benchmark.timing`)."""

    backend: str = "ort-cpu"
    threads: int = 2
    torch_device: str = "cpu"
    budget_s: float = 30.0
    min_rounds: int = 10
    max_rounds: int = 60
    clock: str = "wall"


def ort_call(path: Path, settings: Settings, shape: tuple[int, int], batch: int = 1) -> Callable[[], object]:
    """One inference of the ONNX model at ``path`` on random input, every output fetched."""
    backend, _ = open_backend(path, settings.backend, BackendOptions(intra_op_threads=settings.threads))
    try:
        meta = load_model_metadata(path)
    except MissingMetadataError:  # a plain model: the first input is the image
        meta = None
    feeds = make_feeds(backend, meta, batch, shape)
    return lambda: backend.run(feeds, backend.output_names)


def interleave(calls: Mapping[str, Callable[[], object]], settings: Settings,
               budget_s: float | None = None) -> dict[str, Any]:
    """Time ``calls`` in alternation for about ``budget_s`` seconds (within the round bounds).

    One untimed round warms up and sizes the run (each round of the run also makes
    :data:`~pgn_deploy.benchmark.timing.SETTLE` untimed calls per variant). Returns ``{"samples": {name: [s, ...]},
    "rounds": n, "load_before": [...], "load_after": [...]}``.
    """
    load_before = load_average()
    start = time.perf_counter()
    for call in calls.values():
        call()
    per_round = max(time.perf_counter() - start, 1e-6) * (1 + SETTLE)
    rounds = int(min(settings.max_rounds, max(settings.min_rounds, (budget_s or settings.budget_s) / per_round)))
    samples = time_interleaved(calls, warmup=0, rounds=rounds, clock=get_clock(settings.clock))
    return {"samples": samples, "rounds": rounds, "load_before": load_before, "load_after": load_average()}


def pool(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several :func:`interleave` results of the same variants (each with sessions of its own)
    as one: samples and rounds concatenated, so round ``i`` stays a pair."""
    return {"samples": {name: [t for run in runs for t in run["samples"][name]] for name in runs[0]["samples"]},
            "rounds": sum(run["rounds"] for run in runs),
            "load_before": runs[0]["load_before"], "load_after": runs[-1]["load_after"]}


def summarize(timed: Mapping[str, Any], reference: str | None = "plain") -> dict[str, Any]:
    """Latency statistics per variant and, with ``reference``, each variant's ratio to it."""
    samples = timed["samples"]
    result: dict[str, Any] = {
        "rounds": timed["rounds"],
        "load_before": timed["load_before"],
        "load_after": timed["load_after"],
        "latency_ms": {name: latency_stats(values).to_json() for name, values in samples.items()},
    }
    if reference is not None:
        result["ratio_to_" + reference] = {
            name: median_ratio(values, samples[reference]).to_json()
            for name, values in samples.items() if name != reference
        }
    return result


def log(message: str) -> None:
    """Progress on stderr with the time of day."""
    import sys

    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
