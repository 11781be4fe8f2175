"""``benchmark_model``: the latency of a grafted model on one backend (the API of ``pgn-bench``).

Times the model's raw tensor inference (``Backend.run`` on random model-ready input; image
decoding and pre/post-processing are not included), in the spirit of ``trtexec`` and
``polygraphy run``: warm-up calls, then a number of calls or a duration; latency
min/median/mean/p90/p99/max, throughput and the process's peak resident memory.

``compare_plain`` derives the plain model from the grafted one (:func:`plain_model`) and times
both in alternation in this process, so machine noise hits both alike, each timed call right
after an untimed one of the same model (:func:`time_interleaved`); the grafted/plain ratio of
medians comes with a paired bootstrap confidence interval. ``maps`` first prunes the
grafted model to the named added outputs (:func:`keep_outputs`).
"""
from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pgn_deploy.benchmark.machine import machine_info
from pgn_deploy.benchmark.memory import PeakMemory
from pgn_deploy.benchmark.prune import keep_outputs, plain_model
from pgn_deploy.benchmark.stats import CONFIDENCE, LatencyStats, Ratio, latency_stats, median_ratio, throughput
from pgn_deploy.benchmark.timing import check_budget, get_clock, time_interleaved
from pgn_deploy.contract import (
    BadInputError,
    Metadata,
    ModelLoadError,
    UnsupportedModelError,
    load_onnx,
    save_onnx,
)
from pgn_deploy.runtime.backends.base import Backend, BackendOptions, is_plan, open_backend
from pgn_deploy.runtime.limits import check_allocation
from pgn_deploy.runtime.model_file import load_model_metadata

DEFAULT_SHAPE = (512, 1024)
DEFAULT_DURATION_S = 10.0
GRAFTED, PLAIN = "grafted", "plain"


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to time and how.

    ``shape``: input H x W (default: the size in the model's metadata, else 512 x 1024);
    ``iterations`` or ``duration_s`` (default: 10 s); ``threads``: CPU intra-op threads
    (0: the library's default); ``maps``: added outputs to keep (``None``: all); ``clock``:
    ``wall`` or ``cpu`` (see :mod:`pgn_deploy.benchmark.timing`; the duration counts on it too).
    """

    backend: str = "auto"
    batch: int = 1
    shape: tuple[int, int] | None = None
    warmup: int = 5
    iterations: int | None = None
    duration_s: float | None = None
    threads: int = 0
    compare_plain: bool = False
    maps: tuple[str, ...] | None = None
    confidence: float = CONFIDENCE
    clock: str = "wall"

    def __post_init__(self) -> None:
        if self.iterations is None and self.duration_s is None:
            object.__setattr__(self, "duration_s", DEFAULT_DURATION_S)
        check_budget(self.iterations, self.duration_s)
        get_clock(self.clock)
        if not isinstance(self.batch, int) or self.batch < 1:
            raise BadInputError(f"the batch must be an integer >= 1, got {self.batch!r}")
        if self.warmup < 0:
            raise BadInputError(f"warmup must be >= 0, got {self.warmup}")
        if self.threads < 0:
            raise BadInputError(f"threads must be >= 0, got {self.threads}")
        if self.shape is not None and (len(self.shape) != 2 or min(self.shape) < 1):
            raise BadInputError(f"the shape must be two sizes >= 1 (H, W), got {self.shape}")




def parse_maps(text: str | None) -> tuple[str, ...] | None:
    """``"all"`` or ``None`` -> ``None`` (keep every map); ``"a,b"`` -> ``("a", "b")``."""
    if text is None or text.strip() == "all":
        return None
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise BadInputError("--maps needs 'all' or a comma-separated list of output names")
    return names


@dataclasses.dataclass
class BenchReport:
    """Result of :func:`benchmark_model`; ``latency``/``outputs`` per variant (``grafted``,
    and ``plain`` with ``compare_plain``); ``ratio``: grafted/plain."""

    model: str
    backend: str
    backend_notes: list[str]
    config: BenchConfig
    shape: tuple[int, int]
    outputs: dict[str, list[str]]
    latency: dict[str, LatencyStats]
    ratio: Ratio | None
    peak_rss_mb: float
    baseline_rss_mb: float | None
    memory_source: str
    machine: dict[str, Any]

    def throughput_ips(self) -> dict[str, float]:
        """Images per second per variant, at the median latency."""
        return {name: throughput(stats, self.config.batch) for name, stats in self.latency.items()}

    def to_text(self) -> str:
        """A human-readable table: latency statistics per model, the ratio, memory and the machine."""
        config = self.config
        budget = f"{config.iterations} iterations" if config.iterations else f"{config.duration_s:g} s"
        threads = (f", {config.threads} threads" if config.threads else "") + f", {config.clock} clock"
        lines = [
            f"{self.model} on {self.backend}{threads}: batch {config.batch}, "
            f"{self.shape[0]}x{self.shape[1]}, warm-up {config.warmup}, {budget}",
            f"{'':8} {'n':>5} {'min':>9} {'median':>9} {'mean':>9} {'p90':>9} {'p99':>9} {'max':>9}  ms"
            f"  {'img/s':>8}  outputs",
        ]
        rates = self.throughput_ips()
        for name, s in self.latency.items():
            lines.append(
                f"{name:8} {s.n:5d} {s.min_ms:9.2f} {s.median_ms:9.2f} {s.mean_ms:9.2f} {s.p90_ms:9.2f} "
                f"{s.p99_ms:9.2f} {s.max_ms:9.2f}      {rates[name]:8.2f}  {len(self.outputs[name])}"
            )
        if self.ratio is not None:
            r = self.ratio
            lines.append(
                f"grafted/plain: {r.value:.4f} ({r.overhead_percent:+.2f} %), "
                f"{r.confidence:.0%} CI {r.low:.4f}..{r.high:.4f} (interleaved, paired bootstrap)"
            )
        lines.append(f"peak RSS: {self.peak_rss_mb:.0f} MiB ({self.memory_source})")
        load = self.machine.get("load_average")
        if load:
            lines.append(f"machine: {self.machine['cpu']}, {self.machine['usable_cores']} cores, load {load[0]:g}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: model, backend, config (``shape`` = H x W), per-variant ``latency_ms`` and
        ``throughput_ips`` (images/s), ``ratio`` (grafted/plain or None), ``memory`` (RSS in MB) and ``machine``."""
        config = dataclasses.asdict(self.config)
        config["shape"] = list(self.shape)
        config["maps"] = list(self.config.maps) if self.config.maps else None
        return {
            "model": self.model,
            "backend": self.backend,
            "backend_notes": self.backend_notes,
            "config": config,
            "outputs": self.outputs,
            "latency_ms": {name: stats.to_json() for name, stats in self.latency.items()},
            "throughput_ips": self.throughput_ips(),
            "ratio": self.ratio.to_json() if self.ratio else None,
            "memory": {
                "peak_rss_mb": self.peak_rss_mb,
                "baseline_rss_mb": self.baseline_rss_mb,
                "source": self.memory_source,
            },
            "machine": self.machine,
        }


def make_feeds(backend: Backend, meta: Metadata | None, batch: int, shape: tuple[int, int],
               seed: int = 0) -> dict[str, np.ndarray]:
    """Random model-ready inputs: the image input ``batch x 3 x H x W`` (standard normal, in the
    input's dtype), the ``gt`` label input (class 0, ``batch x H x W``) when the model has one.
    Any other input raises :class:`UnsupportedModelError`; an input too large for this host's
    memory raises :class:`BadInputError` before anything is allocated."""
    check_allocation((batch, 3, *shape), np.dtype(np.float64).itemsize, "the benchmark input (--batch x 3 x --shape)")
    rng = np.random.default_rng(seed)
    image_name = meta.input.name if meta is not None else backend.input_names[0]
    feeds = {}
    for name in backend.input_names:
        dtype = backend.input_dtypes.get(name, np.dtype(np.float32))
        if name == image_name:
            if np.issubdtype(dtype, np.integer):
                feeds[name] = rng.integers(0, 256, (batch, 3, *shape)).astype(dtype)
            else:
                feeds[name] = rng.standard_normal((batch, 3, *shape)).astype(dtype)
        elif meta is not None and name == meta.gt_input:
            feeds[name] = np.zeros((batch, *shape), dtype=dtype)
        else:
            raise UnsupportedModelError(f"the model has an input {name!r} pgn-bench cannot fill")
    return feeds


def _variant_files(path: Path, config: BenchConfig, workdir: Path) -> dict[str, Path]:
    """The ONNX file to time per variant: the model itself, or pruned copies in ``workdir``."""
    if config.maps is None and not config.compare_plain:
        return {GRAFTED: path}
    if is_plan(path):
        raise BadInputError(f"{path} is a TensorRT plan: --compare-plain and --maps need the ONNX model")
    model = load_onnx(path)
    files = {GRAFTED: path}
    if config.maps is not None:
        model = keep_outputs(model, config.maps)
        files[GRAFTED] = save_onnx(model, workdir / "selected.onnx")
    if config.compare_plain:
        files[PLAIN] = save_onnx(plain_model(model), workdir / "plain.onnx")
    return files


def _call(backend: Backend, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
    """One inference of ``backend`` on its inputs of ``feeds``, fetching every output."""
    own = {name: feeds[name] for name in backend.input_names}
    return lambda: backend.run(own, backend.output_names)


def _check_batch(backend: Backend, batch: int) -> None:
    if batch != 1 and not backend.dynamic_batch:
        raise BadInputError(f"the model has a fixed batch size; --batch {batch} does not fit it")


def benchmark_model(model_path: str | Path, config: BenchConfig | None = None) -> BenchReport:
    """Time the grafted model at ``model_path`` (ONNX or TensorRT plan) as ``config`` says."""
    config = config or BenchConfig()
    path = Path(model_path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    meta = load_model_metadata(path)
    shape = config.shape or meta.input.size or DEFAULT_SHAPE
    options = BackendOptions(intra_op_threads=config.threads)
    memory = PeakMemory()
    with tempfile.TemporaryDirectory(prefix="pgn_bench_") as tmp:
        files = _variant_files(path, config, Path(tmp))
        memory.reset()
        backends: dict[str, Backend] = {}
        notes: list[str] = []
        for name, file in files.items():
            backends[name], found_notes = open_backend(file, config.backend, options)
            notes += found_notes
            if config.backend == "auto":  # every variant on the backend auto chose first
                config = dataclasses.replace(config, backend=backends[name].name)
        first = backends[GRAFTED]
        _check_batch(first, config.batch)
        feeds = make_feeds(first, meta, config.batch, tuple(shape))
        calls = {name: _call(backend, feeds) for name, backend in backends.items()}
        samples = time_interleaved(calls, warmup=config.warmup, rounds=config.iterations,
                                   duration_s=config.duration_s, clock=get_clock(config.clock))
        peak = memory.peak_mb()
    ratio = (median_ratio(samples[GRAFTED], samples[PLAIN], confidence=config.confidence)
             if PLAIN in samples else None)
    return BenchReport(
        model=str(path),
        backend=first.name,
        backend_notes=notes,
        config=config,
        shape=tuple(shape),
        outputs={name: list(backend.output_names) for name, backend in backends.items()},
        latency={name: latency_stats(values) for name, values in samples.items()},
        ratio=ratio,
        peak_rss_mb=peak,
        baseline_rss_mb=memory.baseline_mb,
        memory_source=memory.source,
        machine=machine_info(),
    )
