"""Calibration: per-map statistics on in-distribution images, stored in the model's metadata.

With a calibration, heatmaps share one scale (the in-distribution percentile rank) and
``ood_mask``/``instances`` get a default threshold (each map's q0.995 over the calibration
pixels, :data:`~pgn_deploy.runtime.stats.THRESHOLD_QUANTILE` says why), so results compare
across images and models. The statistics are defined in :mod:`pgn_deploy.runtime.stats`.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pgn_deploy.contract import BadInputError, check_output_path, load_onnx, save_onnx, write_metadata
from pgn_deploy.runtime.backends.base import is_plan
from pgn_deploy.runtime.model_file import save_model_metadata
from pgn_deploy.runtime.runner import Runtime
from pgn_deploy.runtime.sources import collect_inputs, iter_frames
from pgn_deploy.runtime.stats import map_statistics

MAX_PIXELS_PER_IMAGE = 1 << 18  # 262144: each map of each image is subsampled to at most this


@dataclasses.dataclass
class CalibrationReport:
    """What :func:`calibrate` measured and where it was stored."""

    path: Path
    backend: str
    n_images: int
    calibration: dict[str, Any]

    def to_text(self) -> str:
        """What ``pgn-calibrate`` prints: the file and each map's default threshold."""
        lines = [f"calibrated on {self.n_images} image(s) with {self.backend}; wrote {self.path}"]
        lines += [f"  {name}: default threshold {entry['threshold']:.6g} ({entry['threshold_rule']} of the "
                  f"in-distribution pixels), max = {entry['max']:.6g}" for name, entry in self.calibration.items()]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """``{"model": path as a string, "backend": ..., "n_images": ..., "calibration": ...}``."""
        return {"model": str(self.path), "backend": self.backend, "n_images": self.n_images,
                "calibration": self.calibration}


def _subsample(score: np.ndarray, limit: int) -> np.ndarray:
    """Every k-th pixel (row-major) with k = ceil(pixels / limit): at most ``limit`` values."""
    flat = score.ravel()
    return flat[:: max(1, math.ceil(flat.size / limit))].copy()


def _image_stream(images: Sequence[Any], color: str) -> tuple[Iterator[np.ndarray], str]:
    """Arrays as given (in ``color``), or paths expanded and read with OpenCV (BGR)."""
    if not images:
        raise BadInputError("calibration needs at least one in-distribution image")
    if all(isinstance(image, np.ndarray) for image in images):
        return iter(images), color
    if any(isinstance(image, np.ndarray) for image in images):
        raise BadInputError("pass either image arrays or image paths, not both")
    return (frame for _, frame in iter_frames(collect_inputs(images))), "BGR"


def _chunks(items: Iterable[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def measure_calibration(runtime: Runtime, images: Sequence[Any], color: str = "RGB",
                        max_pixels_per_image: int = MAX_PIXELS_PER_IMAGE) -> tuple[dict[str, Any], int]:
    """``(calibration, number of images)``: every score map of ``runtime`` measured on ``images``.

    ``images``: uint8 H x W x 3 arrays (channel order ``color``) or paths of images, folders
    (recursive) and videos (every frame). An unreadable image raises :class:`BadInputError`.
    """
    if max_pixels_per_image < 1:
        raise BadInputError(f"max_pixels_per_image must be >= 1, got {max_pixels_per_image}")
    stream, stream_color = _image_stream(images, color)
    samples: dict[str, list[np.ndarray]] = {name: [] for name in runtime.score_names}
    count = 0
    for chunk in _chunks(stream, runtime.max_batch):
        for result in runtime.run(chunk, color=stream_color):
            for name, score in result.scores.items():
                samples[name].append(_subsample(score, max_pixels_per_image))
        count += len(chunk)
    return {name: map_statistics(values, count) for name, values in samples.items()}, count


def calibrate(model_path: str | os.PathLike[str], images: Sequence[Any],
              out: str | os.PathLike[str] | None = None, *, in_place: bool = False, force: bool = False,
              normalize: bool = False, backend: str = "auto", color: str = "RGB",
              max_pixels_per_image: int = MAX_PIXELS_PER_IMAGE) -> CalibrationReport:
    """Measure every score map on ``images`` and store the statistics in the metadata.

    ``images``: see :func:`measure_calibration`. Writes a calibrated copy to ``out`` (refused
    if it exists, unless ``force``), or with ``in_place`` rewrites ``model_path`` atomically (an
    earlier calibration is replaced); one of the two is required. ``normalize`` adds the
    in-graph ``<map>_norm`` and ``ood_mask`` outputs (:mod:`pgn_deploy.graft.normalize`); a model
    that has them already gets them rebuilt from the new quantiles (ONNX models only: a TensorRT
    plan's graph is fixed, so a plan with them is refused).
    """
    if out is None and not in_place:
        raise BadInputError("say where the calibrated model goes: -o OUT.onnx for a copy, or --in-place "
                            "to rewrite the model")
    if out is not None and in_place:
        raise BadInputError("-o and --in-place contradict each other; give one")
    if out is not None:
        check_output_path(out, force)
    if max_pixels_per_image < 1:
        raise BadInputError(f"max_pixels_per_image must be >= 1, got {max_pixels_per_image}")
    runtime = Runtime(model_path, backend)
    rebuild = normalize or bool(runtime.metadata.normalized)
    if rebuild and is_plan(runtime.model_path):
        raise BadInputError(f"{runtime.model_path}: a TensorRT plan's in-graph normalisation cannot be "
                            "recalibrated; calibrate the ONNX model and rebuild the plan")
    calibration, count = measure_calibration(runtime, images, color, max_pixels_per_image)
    meta = dataclasses.replace(runtime.metadata, calibration=calibration)
    if not rebuild:
        written = save_model_metadata(runtime.model_path, meta, out, force)
        return CalibrationReport(written, runtime.backend_name, count, calibration)
    from pgn_deploy.graft.normalize import add_normalization  # graft.normalize imports runtime.stats

    model = load_onnx(runtime.model_path)
    write_metadata(model, meta)
    written = save_onnx(add_normalization(model), out if out is not None else runtime.model_path,
                        force=force or out is None)
    return CalibrationReport(written, runtime.backend_name, count, calibration)
