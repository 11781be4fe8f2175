"""``mine()``: rank the frames of images, folders, videos and path lists by OoD evidence.

One run: hash the model, resolve the rule (map, threshold, min_area), open the output folder
as a store (refusing another rule without ``force``), expand the sources, skip the frames the
folder already holds, mine the rest with the local or the Ray engine, then rebuild the derived
outputs (:mod:`pgn_deploy.mining.output`) from everything mined so far.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pgn_deploy.contract import BadInputError, file_sha256, require
from pgn_deploy.mining.frame_scoring import MiningRule, resolve_rule
from pgn_deploy.mining.local_engine import run_local
from pgn_deploy.mining.output import write_outputs
from pgn_deploy.mining.sources import expand_sources
from pgn_deploy.mining.store import MiningStore
from pgn_deploy.runtime.runner import Runtime

ENGINES = ("local", "ray")


@dataclasses.dataclass(frozen=True)
class MineOptions:
    """``engine``: ``local`` (decode threads + one runtime) or ``ray``; ``ray_address``: a
    cluster to join (default: start a local Ray); ``score``/``threshold``/``min_area``: the
    instance rule (default map: the first PGN map; default threshold: its calibrated q0.99);
    ``top``: frames in the gallery; ``every``: take every N-th video frame; ``batch``: frames
    per runtime call; ``workers``: decode threads (local) or actors (ray); ``threads``: CPU
    threads per inference (0: the backend's default; ray: at least 1, reserved per actor);
    ``num_gpus``: GPUs per Ray actor; ``backend``: the runtime backend; ``force``: start over in
    a folder mined with another rule."""

    engine: str = "local"
    ray_address: str | None = None
    score: str | None = None
    threshold: float | None = None
    min_area: int = 50
    top: int = 50
    every: int = 1
    batch: int = 8
    workers: int = 2
    threads: int = 0
    num_gpus: float = 0.0
    backend: str = "auto"
    force: bool = False

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise BadInputError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        for name in ("batch", "workers", "every"):
            if getattr(self, name) < 1:
                raise BadInputError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("top", "threads", "num_gpus", "min_area"):
            if getattr(self, name) < 0:
                raise BadInputError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.ray_address and self.engine != "ray":
            raise BadInputError("--ray-address needs --engine ray")


@dataclasses.dataclass
class MineReport:
    """A run's counts: ``processed`` (frames mined now, failures included), ``skipped`` (already
    in the folder), ``failed`` (of the processed); the folder's totals after the run
    (``frames``, ``instances``, ``failures``), ``seconds`` and ``frames_per_s`` of the mining
    step, its ``cpu_seconds`` in this process (all threads; with Ray only the driver's), parts
    ``discarded`` as unreadable, and the ``top`` frames."""

    out_dir: str
    engine: str
    backend: str
    rule: dict[str, Any]
    processed: int
    skipped: int
    failed: int
    frames: int
    instances: int
    failures: int
    seconds: float
    cpu_seconds: float
    frames_per_s: float
    discarded: list[str]
    top: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON object."""
        return dataclasses.asdict(self)

    def to_text(self) -> str:
        """The summary lines (and the best five frames) for a terminal."""
        lines = [f"pgn-mine: {self.processed} frame(s) mined ({self.failed} failed), {self.skipped} skipped "
                 f"(already in {self.out_dir}); {self.frames_per_s:.1f} frames/s with --engine {self.engine}",
                 f"folder: {self.frames} frame(s), {self.instances} instance(s), {self.failures} failure(s); "
                 f"gallery {Path(self.out_dir) / 'index.html'}"]
        lines += [f"  #{t['rank']} score {t['score']:.4g} {t['source']} frame {t['frame']}" for t in self.top[:5]]
        return "\n".join(lines)


def mine(model: str | os.PathLike[str], sources: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str],
         options: MineOptions | None = None, progress: bool = False) -> MineReport:
    """Mine ``sources`` with ``model`` into ``out_dir`` (see the module docstring).

    Refused before any work (a PGNError): a missing model or source, an unknown map, no
    threshold, bad options, or a folder mined with another rule without ``force``. Unreadable
    or failing frames become rows of ``failures.parquet``; they never stop the run.
    """
    options = options or MineOptions()
    require("pyarrow", "pgn-mine's Parquet output")  # before anything is written
    if options.engine == "ray":
        require("ray", "--engine ray")
    model = os.path.abspath(model)
    if not os.path.isfile(model):
        raise BadInputError(f"{model}: no such model file")
    runtime = Runtime(model, options.backend, intra_op_threads=options.threads, max_batch=options.batch)
    rule = resolve_rule(runtime, file_sha256(model), options.score, options.threshold, options.min_area)
    refs = expand_sources(sources, options.every)
    store = MiningStore.open(out_dir, rule, options.force)
    done = store.done()
    todo = [ref for ref in refs if ref not in done]
    start, cpu = time.perf_counter(), time.process_time()
    processed, failed = _run_engine(model, runtime, todo, rule, store, options, progress)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    summary = write_outputs(store.load(compact=True), store.out_dir, runtime, rule, options.top)
    return MineReport(str(store.out_dir), options.engine, runtime.backend_name, rule.to_json(), processed,
                      len(refs) - len(todo), failed, summary.frames, summary.instances, summary.failures,
                      seconds, cpu_seconds, processed / seconds if seconds > 0 and processed else 0.0, store.discarded,
                      summary.top)


def _run_engine(model: str, runtime: Runtime, todo: list, rule: MiningRule, store: MiningStore,
                options: MineOptions, progress: bool) -> tuple[int, int]:
    if options.engine == "local":
        return run_local(runtime, todo, rule, store, options.batch, options.workers, progress)
    from pgn_deploy.mining.ray_engine import run_ray  # imports Ray only when asked for

    return run_ray(model, todo, rule, store, batch=options.batch, workers=options.workers, threads=options.threads,
                   num_gpus=options.num_gpus, backend=options.backend, address=options.ray_address,
                   progress=progress)
