"""Timing loops: warm-up, then a fixed number of calls or a duration; interleaved variants.

``clock`` is injectable (seconds, monotonic) so the loops can be tested with a fake timer.
:data:`CLOCKS` names the two real ones: ``wall`` (``time.perf_counter``, what a user waits) and
``cpu`` (``time.process_time``: CPU time of this process, all its threads). On a machine shared
with other jobs, the CPU time of a single-threaded run hardly moves when the process has to
wait for a core, so small differences can be resolved; with several threads it also counts
the threads' spin-waiting.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from pgn_deploy.contract import BadInputError

Clock = Callable[[], float]
SETTLE = 1
"""Untimed calls of a variant right before each of its timed calls in an interleaved run."""
CLOCKS: dict[str, Clock] = {"wall": time.perf_counter, "cpu": time.process_time}


def get_clock(name: str) -> Clock:
    """The clock called ``name`` in :data:`CLOCKS`."""
    if name not in CLOCKS:
        raise BadInputError(f"unknown clock {name!r}; choose from {', '.join(CLOCKS)}")
    return CLOCKS[name]


def check_budget(iterations: int | None, duration_s: float | None) -> None:
    """Exactly one of ``iterations`` (>= 1) and ``duration_s`` (> 0) must be given."""
    if (iterations is None) == (duration_s is None):
        raise BadInputError("give either a number of iterations or a duration, not both or neither")
    if iterations is not None and iterations < 1:
        raise BadInputError(f"iterations must be >= 1, got {iterations}")
    if duration_s is not None and not duration_s > 0:
        raise BadInputError(f"the duration must be > 0 seconds, got {duration_s}")


def time_calls(
    call: Callable[[], object],
    *,
    warmup: int = 3,
    iterations: int | None = None,
    duration_s: float | None = None,
    clock: Clock = time.perf_counter,
) -> list[float]:
    """Latency in seconds of each timed ``call()`` after ``warmup`` untimed calls.

    Stops after ``iterations`` calls, or at the first call ending after ``duration_s`` seconds
    of timed calls (at least one call).
    """
    return time_interleaved({"call": call}, warmup=warmup, rounds=iterations, duration_s=duration_s,
                            clock=clock)["call"]


def time_interleaved(
    calls: Mapping[str, Callable[[], object]],
    *,
    warmup: int = 3,
    rounds: int | None = None,
    duration_s: float | None = None,
    clock: Clock = time.perf_counter,
    settle: int = SETTLE,
) -> dict[str, list[float]]:
    """Latencies (seconds) of several variants timed in alternation within one process.

    Each round times every variant once, in forward order on even rounds and reversed on odd
    rounds, so a slow phase of the machine hits every variant alike and ``result[a][i]`` pairs
    with ``result[b][i]``. With several variants, each timed call comes right after ``settle``
    untimed calls of the same variant: a session's first run after another session's is slower
    (its thread pool has gone to sleep while the other's still spins, its caches hold the other's
    data; 5-10 % with 2 threads on a 2-core machine), and without settling the variants at the
    ends of the order, which follow themselves at the turn, would measure faster than those in
    the middle. So every variant is timed in steady state, as a deployed engine that runs back
    to back. ``warmup`` untimed rounds come first. Stops after ``rounds`` rounds, or at the
    first round ending after ``duration_s`` seconds.
    """
    if warmup < 0:
        raise BadInputError(f"warmup must be >= 0, got {warmup}")
    if settle < 0:
        raise BadInputError(f"settle must be >= 0, got {settle}")
    check_budget(rounds, duration_s)
    if not calls:
        raise BadInputError("nothing to time")
    names = list(calls)
    settle_calls = settle if len(names) > 1 else 0
    for _ in range(warmup):
        for name in names:
            calls[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    start = clock()
    done = 0
    while True:
        for name in names if done % 2 == 0 else reversed(names):
            for _ in range(settle_calls):
                calls[name]()
            begin = clock()
            calls[name]()
            samples[name].append(clock() - begin)
        done += 1
        if rounds is not None and done >= rounds:
            break
        if duration_s is not None and clock() - start >= duration_s:
            break
    return samples
