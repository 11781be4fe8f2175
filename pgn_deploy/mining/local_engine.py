"""``--engine local``: decode threads feeding one shared :class:`~pgn_deploy.runtime.Runtime`.

The frames are cut into chunks of ``batch``. ``workers`` threads decode chunks (OpenCV releases
the GIL while decoding); at most ``2 * workers`` decoded chunks wait, so memory stays bounded
however many frames there are. The calling thread runs each chunk through the runtime in one
call, scores it (:func:`~pgn_deploy.mining.frame_scoring.score_frames`) and commits it to the
store as one part before taking the next. No Ray is imported.
"""
from __future__ import annotations

import collections
import sys
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from tqdm import tqdm

from pgn_deploy.mining.frame_scoring import MiningRule, score_frames
from pgn_deploy.mining.sources import Decoded, FrameRef, decode_frames
from pgn_deploy.mining.store import MiningStore
from pgn_deploy.runtime.runner import Runtime


def chunked(refs: Sequence[FrameRef], size: int) -> list[list[FrameRef]]:
    """``refs`` in consecutive chunks of at most ``size``."""
    return [list(refs[start:start + size]) for start in range(0, len(refs), size)]


def run_local(runtime: Runtime, refs: Sequence[FrameRef], rule: MiningRule, store: MiningStore,
              batch: int, workers: int, progress: bool = False) -> tuple[int, int]:
    """Mine ``refs`` into ``store``; returns (frames processed, of which failed)."""
    processed = failed = 0
    chunks = collections.deque(chunked(refs, batch))
    pending: collections.deque[Future[list[Decoded]]] = collections.deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pgn-mine-decode")
    bar = tqdm(total=len(refs), unit="frame", desc="pgn-mine", file=sys.stderr, disable=not progress)
    try:
        while chunks or pending:
            while chunks and len(pending) < 2 * workers:
                pending.append(pool.submit(decode_frames, chunks.popleft()))
            rows = score_frames(runtime, pending.popleft().result(), rule)
            store.commit(rows)
            errors = sum(row["error"] is not None for row in rows)
            processed, failed = processed + len(rows), failed + errors
            bar.update(len(rows))
            bar.set_postfix(failed=failed, refresh=False)
    finally:
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)
    return processed, failed
