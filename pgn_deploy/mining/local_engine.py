"""``--engine local``: decode threads feeding one shared :class:`~pgn_deploy.runtime.Runtime`.

The frames are cut into chunks of ``batch``. A pool of ``workers`` threads decodes chunks
(OpenCV releases the GIL while decoding) and turns results into rows: the instances of each
frame (:func:`~pgn_deploy.mining.frame_scoring.frame_rows`) and the chunk's commit to the store
as one part. The calling thread only runs the runtime, one call per chunk, so inference never
waits for that work where a core is free. At most ``2 * workers`` decoded chunks and
``workers + 1`` chunks of results wait, so memory stays bounded however many frames there are.
No Ray is imported.
"""
from __future__ import annotations

import collections
import sys
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from tqdm import tqdm

from pgn_deploy.mining.frame_scoring import MiningRule, frame_rows, run_frames
from pgn_deploy.mining.sources import Decoded, FrameRef, decode_frames
from pgn_deploy.mining.store import MiningStore
from pgn_deploy.runtime.result import Result
from pgn_deploy.runtime.runner import Runtime


def chunked(refs: Sequence[FrameRef], size: int) -> list[list[FrameRef]]:
    """``refs`` in consecutive chunks of at most ``size``."""
    return [list(refs[start:start + size]) for start in range(0, len(refs), size)]


def _rows_and_commit(store: MiningStore, frames: list[Decoded], outcomes: list[Result | str | None],
                     rule: MiningRule) -> list[dict[str, Any]]:
    rows = frame_rows(frames, outcomes, rule)
    store.commit(rows)
    return rows


def run_local(runtime: Runtime, refs: Sequence[FrameRef], rule: MiningRule, store: MiningStore,
              batch: int, workers: int, progress: bool = False) -> tuple[int, int]:
    """Mine ``refs`` into ``store``; returns (frames processed, of which failed)."""
    counts = {"processed": 0, "failed": 0}
    chunks = collections.deque(chunked(refs, batch))
    decoding: collections.deque[Future[list[Decoded]]] = collections.deque()
    scoring: collections.deque[Future[list[dict[str, Any]]]] = collections.deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pgn-mine")
    bar = tqdm(total=len(refs), unit="frame", desc="pgn-mine", file=sys.stderr, disable=not progress)

    def collect(limit: int) -> None:  # take finished (or, over ``limit`` waiting, the oldest) results
        while scoring and (scoring[0].done() or len(scoring) > limit):
            rows = scoring.popleft().result()
            counts["processed"] += len(rows)
            counts["failed"] += sum(row["error"] is not None for row in rows)
            bar.update(len(rows))
            bar.set_postfix(failed=counts["failed"], refresh=False)

    try:
        while chunks or decoding:
            while chunks and len(decoding) < 2 * workers:
                decoding.append(pool.submit(decode_frames, chunks.popleft()))
            frames = decoding.popleft().result()
            outcomes = run_frames(runtime, frames)
            scoring.append(pool.submit(_rows_and_commit, store, frames, outcomes, rule))
            collect(workers)
        collect(0)
    finally:
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)
    return counts["processed"], counts["failed"]
