"""``--engine ray``: the same per-frame code on a Ray cluster through Ray Data.

The frames go in as rows ``{"source", "frame"}`` (``ray.data.from_items``; the sources'
decoding is part of the mining so that an unreadable file becomes a failure row instead of a
failed job, which ``read_images`` would make it), cut into blocks of several batches
(:func:`block_count`). ``map_batches`` hands each block to one of a pool of :class:`FrameMiner`
actors (``workers`` of them, ``ActorPoolStrategy``, each holding one
:class:`~pgn_deploy.runtime.Runtime`, ``threads`` CPUs and ``num_gpus`` GPUs), which decode and
score it ``batch`` frames at a time exactly as the local engine does and write each batch's rows
as one Parquet part under the store's ``parts/ray-<run>/``; only the counts (frames, failures)
come back to the driver, which shows the progress.

Why the actors write the parts themselves, not ``Dataset.write_parquet``: Ray Data runs that
write as a separate task-pool stage that it cannot fuse behind an actor pool, one task per block
on a worker process of its own that needs a CPU. With every CPU held by the actors (2 actors on
a 2-CPU node) the writes wait until the pool is gone: every row stays in the object store until
the end (a kill then loses the whole run) and each block pays a task. Measured on 2 cores, that
write stage and the per-block tasks were the Ray engine's largest cost beside inference
(benchmarks/results/mining.md).

Without ``address`` a local Ray is started for the run (and stopped after); a Ray already
initialised in the process (a test's cluster) is used as it is. Every node must be able to
read the model path and the sources and write the output folder (shared storage).
"""
from __future__ import annotations

import itertools
import logging
import math
import re
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pgn_deploy.contract import BackendUnavailableError, BadInputError, PGNError, file_sha256, first_line, require
from pgn_deploy.mining.frame_scoring import MiningRule, score_frames
from pgn_deploy.mining.sources import FrameRef, decode_frames
from pgn_deploy.mining.store import MiningStore, write_part

MAX_BLOCKS = 10_000  # a block is one actor task: more blocks, more scheduling for the driver and Ray
BATCHES_PER_BLOCK = 8  # fewer, larger tasks cost Ray less per frame (parts are still written per batch)
BLOCKS_PER_WORKER = 4  # but at least this many blocks per actor, so that the actors finish together
_PGN_ERROR_LINE = re.compile(r"^\s*pgn_deploy\.[\w.]+Error: (.+)$", re.MULTILINE)
ACTOR_START_TIMEOUT_S = 600  # waited for every actor (model loaded) before the first batch


def block_count(frames: int, batch: int, workers: int) -> int:
    """Blocks (actor tasks) for ``frames``: about :data:`BATCHES_PER_BLOCK` batches each, at least
    :data:`BLOCKS_PER_WORKER` per worker, at most one per batch and :data:`MAX_BLOCKS`."""
    batches = math.ceil(frames / batch)
    return max(1, min(batches, MAX_BLOCKS, max(math.ceil(batches / BATCHES_PER_BLOCK), BLOCKS_PER_WORKER * workers)))


class FrameMiner:
    """A Ray Data actor: one Runtime, scoring batches of ``{"source", "frame"}`` rows and writing
    each batch's rows as one part into ``folder``."""

    def __init__(self, model: str, rule: dict[str, Any], backend: str, threads: int, batch: int,
                 folder: str) -> None:
        import ray

        from pgn_deploy.runtime.runner import Runtime

        if file_sha256(model) != rule["model_sha256"]:
            raise BadInputError(f"{model} on this node is not the model the driver hashed")
        self.rule = MiningRule(**rule)
        self.runtime = Runtime(model, backend, intra_op_threads=threads, max_batch=batch)
        self.worker = f"ray:{ray.get_runtime_context().get_node_id()[:12]}"
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = uuid.uuid4().hex[:12]
        self.sequence = itertools.count(1)

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        """Decode and score one batch, write its rows as a part; returns ``{"frames": [n], "failed": [k]}``."""
        refs = [FrameRef(str(source), int(frame)) for source, frame in zip(batch["source"], batch["frame"])]
        rows = score_frames(self.runtime, decode_frames(refs), self.rule, self.worker)
        write_part(self.folder / f"{self.name}-{next(self.sequence):06d}.parquet", rows)
        return {"frames": np.array([len(rows)]), "failed": np.array([sum(row["error"] is not None for row in rows)])}


def ray_error_message(exc: BaseException) -> str:
    """The message of the pgn-deploy error behind a Ray failure (an actor's constructor raised
    it; Ray re-raises it wrapped, its traceback as text), else the first line of the innermost one."""
    chain: list[BaseException] = []
    while exc is not None and len(chain) < 20:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for error in chain:
        if isinstance(error, PGNError):
            return first_line(error)
        found = _PGN_ERROR_LINE.search(str(error))
        if found:
            return found.group(1)
    return next((first_line(e) for e in reversed(chain) if str(e).strip()), type(chain[0]).__name__)


def run_ray(model: str, refs: Sequence[FrameRef], rule: MiningRule, store: MiningStore, *, batch: int,
            workers: int, threads: int, num_gpus: float, backend: str, address: str | None,
            progress: bool = False) -> tuple[int, int]:
    """Mine ``refs`` into ``store`` with Ray Data; returns (frames processed, of which failed)."""
    ray = require("ray", "--engine ray")
    if not refs:
        return 0, 0
    threads = max(threads, 1)  # an actor owns the CPUs it reserves, never all of the node's
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False, configure_logging=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BackendUnavailableError(f"cannot start or reach Ray at {address or 'a new local instance'}: "
                                          f"{first_line(exc)}") from None
    counts = {"processed": 0, "failed": 0}
    bar = tqdm(total=len(refs), unit="frame", desc="pgn-mine (ray)", file=sys.stderr, disable=not progress)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver's own bar counts frames
        context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S  # all workers mine from the start
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        dataset = ray.data.from_items([{"source": r.source, "frame": r.frame} for r in refs],
                                      override_num_blocks=block_count(len(refs), batch, workers))
        resources: dict[str, Any] = {"num_cpus": threads}
        if num_gpus > 0:
            resources["num_gpus"] = num_gpus
        dataset = dataset.map_batches(
            FrameMiner, batch_size=batch, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            fn_constructor_kwargs={"model": model, "rule": rule.to_json(), "backend": backend,
                                   "threads": threads, "batch": batch, "folder": str(store.new_ray_folder())},
            **resources)
        try:
            for done in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                frames, failed = int(done["frames"].sum()), int(done["failed"].sum())
                counts["processed"] += frames
                counts["failed"] += failed
                bar.update(frames)
                bar.set_postfix(failed=counts["failed"], refresh=False)
        except ray.exceptions.RayError as exc:  # an actor failed to start (its error is the cause) or died
            raise PGNError(f"the Ray run failed: {ray_error_message(exc)}") from exc
    finally:
        bar.close()
        if started:
            ray.shutdown()
    return counts["processed"], counts["failed"]
