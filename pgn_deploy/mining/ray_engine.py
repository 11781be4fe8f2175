"""``--engine ray``: the same per-frame code on a Ray cluster through Ray Data.

The frames go in as rows ``{"source", "frame"}`` (``ray.data.from_items``; the sources'
decoding is part of the mining so that an unreadable file becomes a failure row instead of a
failed job, which ``read_images`` would make it). ``map_batches`` sends ``batch`` rows at a
time to :class:`FrameMiner` actors (a pool of ``workers``, ``ActorPoolStrategy``, each holding one
:class:`~pgn_deploy.runtime.Runtime`, ``threads`` CPUs and ``num_gpus`` GPUs), which decode and
score them exactly as the local engine does and return Arrow tables; Ray writes those as
Parquet files under the store's ``parts/ray-<run>/`` (one file per block).

Without ``address`` a local Ray is started for the run (and stopped after); a Ray already
initialised in the process (a test's cluster) is used as it is. Every node must be able to
read the model path and the sources (shared storage, the container image, or URIs).
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from typing import Any

from pgn_deploy.contract import BackendUnavailableError, BadInputError, PGNError, file_sha256, first_line, require
from pgn_deploy.mining.frame_scoring import MiningRule, score_frames
from pgn_deploy.mining.sources import FrameRef, decode_frames
from pgn_deploy.mining.store import MiningStore, rows_to_table

MAX_BLOCKS = 10_000  # more blocks: finer resumption, more files and scheduling overhead
_PGN_ERROR_LINE = re.compile(r"^\s*pgn_deploy\.[\w.]+Error: (.+)$", re.MULTILINE)
ACTOR_START_TIMEOUT_S = 600  # waited for every actor (model loaded) before the first batch


class FrameMiner:
    """A Ray Data actor: one Runtime, scoring batches of ``{"source", "frame"}`` rows."""

    def __init__(self, model: str, rule: dict[str, Any], backend: str, threads: int, batch: int) -> None:
        import ray

        from pgn_deploy.runtime.runner import Runtime

        if file_sha256(model) != rule["model_sha256"]:
            raise BadInputError(f"{model} on this node is not the model the driver hashed")
        self.rule = MiningRule(**rule)
        self.runtime = Runtime(model, backend, intra_op_threads=threads, max_batch=batch)
        self.worker = f"ray:{ray.get_runtime_context().get_node_id()[:12]}"

    def __call__(self, batch: dict[str, Any]):  # -> pyarrow.Table
        """Decode and score one batch; one row per frame (:func:`rows_to_table`)."""
        refs = [FrameRef(str(source), int(frame)) for source, frame in zip(batch["source"], batch["frame"])]
        return rows_to_table(score_frames(self.runtime, decode_frames(refs), self.rule, self.worker))


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
    pq = require("pyarrow.parquet", "pgn-mine's Parquet output")
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
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = progress
        context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S  # all workers mine from the start
        if not progress:
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        blocks = min(MAX_BLOCKS, math.ceil(len(refs) / batch))
        dataset = ray.data.from_items([{"source": r.source, "frame": r.frame} for r in refs],
                                      override_num_blocks=blocks)
        resources: dict[str, Any] = {"num_cpus": threads}
        if num_gpus > 0:
            resources["num_gpus"] = num_gpus
        dataset = dataset.map_batches(
            FrameMiner, batch_size=batch, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            fn_constructor_kwargs={"model": model, "rule": rule.to_json(), "backend": backend,
                                   "threads": threads, "batch": batch},
            **resources)
        folder = store.new_ray_folder()
        try:
            dataset.write_parquet(str(folder))
        except ray.exceptions.RayError as exc:  # an actor failed to start (its error is the cause) or died
            raise PGNError(f"the Ray run failed: {ray_error_message(exc)}") from exc
    finally:
        if started:
            ray.shutdown()
    written = pq.read_table(folder, columns=["error"]) if folder.exists() else None
    if written is None:
        return 0, 0
    return written.num_rows, written.num_rows - written.column("error").null_count
