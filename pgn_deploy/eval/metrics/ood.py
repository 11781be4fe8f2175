"""OoD segmentation evaluation of one method on one split: pixel and component metrics together.

:func:`evaluate_ood` reads every frame **twice**, because the component metrics need t*, which
only the pixel level of the whole split gives:

1. pass 1: each frame is checked and reduced (:meth:`PixelAccumulator.summarize`) in worker
   threads, the reductions are added in order -> :class:`PixelResult` and t*;
2. pass 2: each frame is read again and its components at t* are computed in worker threads
   (:func:`frame_components`) -> :class:`ComponentResult`.

At most ``2 * workers`` frames are in memory at any time. Frames are objects with ``name`` and
``load()`` (:class:`~pgn_deploy.eval.metrics.score_io.FilePair`, :class:`~pgn_deploy.eval.metrics.score_io.ArrayFrame`).
"""
from __future__ import annotations

import collections
import dataclasses
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from pgn_deploy.contract import BadInputError, check_output_path, require
from pgn_deploy.eval.metrics.components import ComponentAccumulator, ComponentResult, Track, frame_components, get_track
from pgn_deploy.eval.metrics.pixel import PixelAccumulator, PixelResult
from pgn_deploy.eval.metrics.plots import plot_paths, plot_pixel_curves
from pgn_deploy.eval.metrics.score_io import Frame, pair_directories

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Worker threads used by default: the CPU count, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


def ordered_map(function: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map(function, items)`` on ``workers`` threads, in order, at most ``2 * workers`` in flight.

    The first exception raised by ``function`` is raised here; pending work is cancelled.
    """
    if workers <= 1:
        yield from map(function, items)
        return
    pool = ThreadPoolExecutor(max_workers=workers)
    pending: collections.deque = collections.deque()
    try:
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclasses.dataclass(frozen=True)
class OODResult:
    """Pixel and component metrics of one method on one split."""

    pixel: PixelResult
    components: ComponentResult
    frames: int

    def to_json(self) -> dict[str, Any]:
        """The metrics as fractions in [0, 1]; NaN (undefined) becomes ``None``."""
        data = {
            "AuPRC": self.pixel.auprc, "AuROC": self.pixel.auroc, "FPR95": self.pixel.fpr95,
            "threshold": self.pixel.threshold, "sIoU": self.components.siou, "PPV": self.components.ppv,
            "mean_F1": self.components.mean_f1, "frames": self.frames, "pixels": self.pixel.pixels,
            "binning": self.pixel.binning, "counting": self.pixel.method, "track": self.components.track.name,
        }
        return {k: (None if isinstance(v, float) and v != v else v) for k, v in data.items()}


TABLE_COLUMNS = {"AuPRC": "AuPRC", "FPR95": "FPR95", "sIoU": "sIoU", "PPV": "PPV", "mean F1": "mean_F1"}


@dataclasses.dataclass
class OODTable:
    """Several methods evaluated on one split: the paper's table, one row per method."""

    results: dict[str, OODResult]

    def to_text(self) -> str:
        """The table row per method (percent, ``-`` when undefined) and a line saying how it was computed."""
        def percent(value: float | None) -> str:
            return "-" if value is None else f"{100 * value:.1f}"

        width = max(len("method"), *(len(n) for n in self.results))
        lines = [f"{'method':<{width}}  " + "  ".join(f"{c:>7}" for c in TABLE_COLUMNS) + f"  {'t*':>10}"]
        for name, result in self.results.items():
            data = result.to_json()
            lines.append(f"{name:<{width}}  " + "  ".join(f"{percent(data[k]):>7}" for k in TABLE_COLUMNS.values())
                         + f"  {result.pixel.threshold:>10.4g}")
        first = next(iter(self.results.values()))
        track = first.components.track
        lines.append(f"({first.frames} frames, {first.pixel.pixels} ROI pixels; pixel level {first.pixel.method}; "
                     f"components at t*, {track.name} track: min_pred {track.min_pred}, min_gt {track.min_gt})")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any] | list[dict[str, Any]]:
        """One object per method (fractions, see :meth:`OODResult.to_json`); a single method unwrapped."""
        rows = [{"method": name} | result.to_json() for name, result in self.results.items()]
        return rows[0] if len(rows) == 1 else rows


def evaluate_ood(frames: Iterable[Frame], track: str | Track = "obstacle", binning: str = "exact",
                 workers: int | None = None, progress: bool = False, label: str = "") -> OODResult:
    """Evaluate a split (see module doc). ``progress`` shows a tqdm bar on stderr (TTY only)."""
    frames = list(frames)
    if not frames:
        raise BadInputError("no frames to evaluate")
    track = get_track(track)
    pixels = PixelAccumulator(binning)
    workers = workers or default_workers()
    bar = tqdm(total=2 * len(frames), desc=label or "metrics", unit="frame", file=sys.stderr,
               disable=None if progress else True, leave=False)
    with bar:
        def summarize(frame: Frame) -> Any:
            return pixels.summarize(*frame.load(), where=frame.name)

        for summary in ordered_map(summarize, frames, workers):
            pixels.add_summary(summary)
            bar.update()
        pixel_result = pixels.result()

        def components(frame: Frame) -> Any:
            return frame_components(*frame.load(), pixel_result.threshold, track, where=frame.name)

        accumulator = ComponentAccumulator(track)
        for frame_result in ordered_map(components, frames, workers):
            accumulator.add_frame(frame_result)
            bar.update()
    return OODResult(pixel=pixel_result, components=accumulator.result(), frames=len(frames))


def _data_set_name(labels_dir: str | Path) -> str:
    """``parent/labels`` of a labels folder (``dataset_AnomalyTrack/labels_masks``): the data set."""
    folder = Path(labels_dir).resolve()
    return f"{folder.parent.name}/{folder.name}" if folder.parent.name else folder.name


def evaluate_score_folders(scores_dirs: Sequence[str | Path], labels_dir: str | Path,
                           names: Sequence[str] | None = None, maps: Sequence[str] | None = None,
                           track: str = "obstacle",
                           binning: str = "exact", plots: str | Path | None = None, force: bool = False,
                           workers: int | None = None, progress: bool = False) -> dict[str, OODResult]:
    """Evaluate saved score maps, one folder per method, against one label folder.

    Files are paired as :func:`~pgn_deploy.eval.metrics.score_io.pair_directories` says (every folder
    is paired before anything is computed). ``maps``: one map name for all folders or one per
    folder (files ``<stem>.<map>.npy``, as ``pgn-run --save-npy`` writes them). ``names``
    default to the map names, else the folder names.
    With ``plots`` (a folder, created if needed), ``pr_curve.png`` and ``roc_curve.png`` with
    one line per method are written there (an existing file is kept unless ``force``).
    Returns the results by method name, in the order given.
    """
    if not scores_dirs:
        raise BadInputError("give at least one scores folder")
    maps = list(maps or [None])
    if len(maps) == 1:
        maps *= len(scores_dirs)
    if len(maps) != len(scores_dirs):
        raise BadInputError(f"{len(maps)} map(s) for {len(scores_dirs)} scores folder(s); give one --map "
                            f"for all or one per --scores")
    names = list(names) if names else [m or Path(d).resolve().name for d, m in zip(scores_dirs, maps)]
    if len(names) != len(scores_dirs):
        raise BadInputError(f"{len(names)} name(s) for {len(scores_dirs)} scores folder(s); "
                            f"give one --name per --scores")
    if len(set(names)) != len(names):
        raise BadInputError(f"method names must differ, got {', '.join(names)}; use --name")
    get_track(track)
    splits = [pair_directories(d, labels_dir, m) for d, m in zip(scores_dirs, maps)]
    if plots is not None:
        require("matplotlib", "--plots")
        Path(plots).mkdir(parents=True, exist_ok=True)
        for path in plot_paths(plots).values():
            check_output_path(path, force)
    results = {name: evaluate_ood(split, track, binning, workers, progress, label=name)
               for name, split in zip(names, splits)}
    if plots is not None:
        plot_pixel_curves({name: r.pixel for name, r in results.items()}, plots, force,
                          subject=f"{_data_set_name(labels_dir)}, {track} track")
    return results
