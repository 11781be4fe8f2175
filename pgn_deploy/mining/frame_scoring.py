"""One frame's mining record: its OoD instances and the frame score that ranks it.

Per frame (rule of ``pgn-mine``, stated in ``docs/mining.md``):

* the instances are :meth:`pgn_deploy.runtime.Result.instances` of the chosen map: the
  8-connected regions where ``score >= threshold`` with at least ``min_area`` pixels, each with
  its ``area``, box ``x, y, w, h``, ``mean_score`` and ``max_score``;
* the frame score is the ``mean_score`` of the largest instance (most pixels; on a tie the first
  in raster order) divided by the threshold, so any frame with an instance scores >= 1; a frame
  without instances scores 0.

Both engines turn decoded frames into rows with :func:`run_frames` and :func:`frame_rows`, so
their outputs agree.
"""
from __future__ import annotations

import dataclasses
import math
import socket
from collections.abc import Sequence
from typing import Any

from pgn_deploy.contract import BadInputError, PGNError, first_line
from pgn_deploy.mining.sources import Decoded
from pgn_deploy.runtime.result import Result
from pgn_deploy.runtime.runner import Runtime
from pgn_deploy.runtime.stats import default_threshold

INSTANCE_FIELDS = ("area", "x", "y", "w", "h", "mean_score", "max_score")
LOCAL_WORKER = f"local:{socket.gethostname()}"


@dataclasses.dataclass(frozen=True)
class MiningRule:
    """The map ``score``, its ``threshold`` (> 0, given or calibrated: ``threshold_source``),
    ``min_area`` (pixels) and the model's ``model_sha256``: what makes two runs comparable."""

    score: str
    threshold: float
    threshold_source: str
    min_area: int
    model_sha256: str

    def to_json(self) -> dict[str, Any]:
        """The rule as a JSON object (the manifest)."""
        return dataclasses.asdict(self)


def resolve_rule(runtime: Runtime, model_sha256: str, score: str | None, threshold: float | None,
                 min_area: int) -> MiningRule:
    """The rule for ``runtime``: the named map (default the first PGN map), ``threshold`` or the
    map's calibrated q0.99. An unknown map, no threshold at all, a threshold <= 0 or a negative
    ``min_area`` raise :class:`BadInputError`."""
    name = score or runtime.default_score
    if name not in runtime.score_names:
        raise BadInputError(f"no score map {name!r}; the model has: {', '.join(runtime.score_names)}")
    if min_area < 0:
        raise BadInputError(f"--min-area must be >= 0, got {min_area}")
    if runtime.extra_inputs:
        raise BadInputError(f"the model also needs the inputs {', '.join(runtime.extra_inputs)}; "
                            "pgn-mine feeds only images (export without label gt)")
    calibrated = default_threshold(runtime.metadata.calibration, name)
    value = threshold if threshold is not None else calibrated
    if value is None:
        raise BadInputError(f"no --threshold given and the model has no calibration for {name!r}; "
                            "pass --threshold or run pgn-calibrate on in-distribution images")
    if not math.isfinite(value) or value <= 0:
        raise BadInputError(f"the threshold must be a finite number > 0 (frame scores are divided by it), got {value}")
    source = "given" if threshold is not None else "calibration (q0.99)"
    return MiningRule(name, float(value), source, int(min_area), model_sha256)


def frame_record(result: Result, rule: MiningRule) -> dict[str, Any]:
    """``height``, ``width``, ``score``, ``instances`` and one list per :data:`INSTANCE_FIELDS`."""
    found = result.instances_with_max(rule.threshold, rule.min_area, rule.score)
    record: dict[str, Any] = {"height": result.size[0], "width": result.size[1], "instances": len(found),
                              "score": 0.0}
    if found:
        largest = max(found, key=lambda pair: pair[0].area)  # max keeps the first of equal areas
        record["score"] = largest[0].mean_score / rule.threshold
    record["instance_area"] = [i.area for i, _ in found]
    for axis, key in enumerate(("x", "y", "w", "h")):
        record[f"instance_{key}"] = [i.box[axis] for i, _ in found]
    record["instance_mean_score"] = [i.mean_score for i, _ in found]
    record["instance_max_score"] = [peak for _, peak in found]
    return record


def failed_record() -> dict[str, Any]:
    """The record of a frame that could not be read or run (no size, score NaN)."""
    return {"height": 0, "width": 0, "instances": 0, "score": float("nan"),
            **{f"instance_{key}": [] for key in INSTANCE_FIELDS}}


def score_frames(runtime: Runtime, frames: Sequence[Decoded], rule: MiningRule,
                 worker: str | None = None) -> list[dict[str, Any]]:
    """One row per frame (in order): :func:`frame_rows` of :func:`run_frames`."""
    return frame_rows(frames, run_frames(runtime, frames), rule, worker)


def run_frames(runtime: Runtime, frames: Sequence[Decoded]) -> list[Result | str | None]:
    """The runtime's result per frame: a :class:`Result`, an error line for a frame the runtime
    refused, ``None`` for one that was not decoded. The decoded frames run in one
    :meth:`Runtime.run` call; if the backend refuses that batch, each frame runs alone so that
    only the bad one fails."""
    readable = [index for index, item in enumerate(frames) if item.image is not None]
    outcomes: list[Result | str | None] = [None] * len(frames)
    if readable:
        for index, outcome in zip(readable, _run_each(runtime, [frames[i].image for i in readable])):
            outcomes[index] = outcome
    return outcomes


def frame_rows(frames: Sequence[Decoded], outcomes: Sequence[Result | str | None], rule: MiningRule,
               worker: str | None = None) -> list[dict[str, Any]]:
    """One row per frame (in order): ``source``, ``frame``, the :func:`frame_record` fields,
    ``model_sha256``, ``worker`` (who ran it; default ``local:<hostname>``) and ``error``
    (``None``, or one line for a frame that could not be read or run)."""
    worker = worker or LOCAL_WORKER
    rows = []
    for item, outcome in zip(frames, outcomes):
        row = {"source": item.ref.source, "frame": item.ref.frame, "model_sha256": rule.model_sha256,
               "worker": worker}
        if isinstance(outcome, Result):
            rows.append({**row, **frame_record(outcome, rule), "error": None})
        else:
            error = item.error if outcome is None else f"{item.ref.source}: {outcome}"
            rows.append({**row, **failed_record(), "error": error})
    return rows


def _run_each(runtime: Runtime, images: list) -> list[Result | str]:
    try:
        return list(runtime.run(images, color="BGR"))
    except PGNError:
        if len(images) == 1:
            return [_one(runtime, images[0])]
    return [_one(runtime, image) for image in images]


def _one(runtime: Runtime, image: Any) -> Result | str:
    try:
        return runtime.run(image, color="BGR")
    except PGNError as exc:
        return first_line(exc)
