"""``pgn-run``'s job: run a model over images, folders and videos and write what it sees.

Per image ``<stem>`` (see :class:`~pgn_deploy.runtime.sources.InputFile`) into the output folder:

* ``<stem>.seg.png``: the class map in colour (Cityscapes palette for 19 classes) with a legend
  of the classes present;
* ``<stem>.heatmap.png``: the chosen score map with its colour bar: a calibrated map on its
  in-distribution percentile rank (:mod:`pgn_deploy.runtime.visualize`), else raw values over
  this image's 1st..99th percentiles (not comparable across images, the bar says so);
* ``<stem>.overlay.png``: segmentation above the heatmap (``stack``) or beside it (``side``),
  legend and colour bar, the OoD mask's contour and the instance boxes with their mean score
  (as a percentile rank when calibrated);
* ``<stem>.ood.png``: the OoD mask, 255 where ``score >= threshold`` (only with a threshold);
* ``<stem>.<map>.npy``: with ``save_npy``, every score map as float32 H x W (the layout the
  metrics command pairs with ``<stem>.png`` labels).

A video ``<stem>`` gives ``<stem>.overlay.mp4`` (the overlay per frame, same frame rate),
``<stem>.instances.jsonl`` (one JSON line per frame: ``{"frame": i, "instances": [{"id",
"area", "box": [x, y, w, h], "mean_score", "mean_rank"}]}``, ``mean_rank`` only when calibrated)
and, with a threshold, ``<stem>.masks/<frame:06d>.png`` (the OoD mask of every frame, 0/255).
Files are written atomically; other files in the folder are left alone; existing outputs are
replaced only with ``force``. An input that cannot be read, is larger than ``max_pixels``, fails
in inference (out of memory, a backend error) or gives a non-finite shown score map is recorded
in ``failed`` and skipped; the others are still written. Files inside the output folder are
never read as inputs (an ``--out`` inside an input folder). The report holds no NaN or infinity
(JSON has none): a statistic without finite values is ``null``.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from pgn_deploy.contract import ArtifactExistsError, BadInputError, PGNError, atomic_write, first_line
from pgn_deploy.runtime.limits import check_max_pixels, default_max_pixels, frame_refusal
from pgn_deploy.runtime.result import Result
from pgn_deploy.runtime.runner import Runtime
from pgn_deploy.runtime.sources import InputFile, VideoReader, collect_inputs, frame_count, read_image
from pgn_deploy.runtime.stats import default_threshold, display_range, percentile_rank, summary
from pgn_deploy.runtime.visualize import (
    LAYOUTS,
    colorize,
    heatmap,
    legend,
    overlay,
    palette,
    panel_heights,
    rank_colorbar,
    rank_heatmap,
    raw_colorbar,
)

VIDEO_FOURCC = "mp4v"


@dataclasses.dataclass(frozen=True)
class AnnotateOptions:
    """``score``: the map shown and thresholded (default: the first PGN map); ``threshold``:
    OoD threshold (default: the calibrated default threshold; none: no mask); ``min_area``: smallest
    instance counted in the report; ``layout``: ``stack`` or ``side``; ``max_pixels``: the
    largest frame (height x width) run (default: derived from the model and this host's memory)."""

    score: str | None = None
    threshold: float | None = None
    save_npy: bool = False
    layout: str = "stack"
    min_area: int = 50
    force: bool = False
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise BadInputError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.min_area < 0:
            raise BadInputError(f"min_area must be >= 0, got {self.min_area}")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise BadInputError(f"threshold must be a finite number, got {self.threshold}")
        if self.max_pixels is not None:
            check_max_pixels(self.max_pixels)


@dataclasses.dataclass
class AnnotateReport:
    """Per-input records (latency, score statistics, files written) and the failed inputs."""

    backend: str
    score: str
    threshold: float | None
    threshold_source: str
    heatmap_source: str
    out: str = ""
    inputs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    failed: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def to_text(self) -> str:
        """What ``pgn-run`` prints: counts, the score, the heatmap range and the threshold used."""
        lines = [f"wrote {len(self.inputs)} input(s) to {self.out} ({len(self.failed)} failed)",
                 f"score {self.score}; heatmap range: {self.heatmap_source}"]
        if self.threshold is None:
            lines.append("no OoD masks: pass --threshold or run pgn-calibrate on in-distribution images")
        else:
            lines.append(f"OoD threshold {self.threshold:g} ({self.threshold_source})")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (``inputs`` and ``failed``: one dict per input); strict
        JSON: non-finite numbers become ``None``."""
        return _finite(dataclasses.asdict(self))


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity (also inside lists and dicts) replaced by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class _Renderer:
    """Turns (BGR image, Result) into the pictures and report fields of one frame."""

    def __init__(self, runtime: Runtime, options: AnnotateOptions, threshold: float | None) -> None:
        self.score = options.score or runtime.default_score
        self.layout = options.layout
        self.min_area = options.min_area
        self.threshold = threshold
        self.entry = (runtime.metadata.calibration or {}).get(self.score)
        self.colors = palette(runtime.metadata.num_classes)
        self.class_names = runtime.metadata.class_names

    def _rank(self, values: Any) -> Any:
        return percentile_rank(values, self.entry)

    def _scale(self, score: np.ndarray, height: int) -> tuple[np.ndarray, dict[str, Any], Any]:
        """(heatmap, its range record, a colour bar maker taking a height)."""
        if self.entry:
            rank_threshold = None if self.threshold is None else float(self._rank(self.threshold))
            value_range = {"lo": 0.0, "hi": 1.0, "calibrated": True, "unit": "in-distribution percentile rank",
                           "source": "calibration: percentile rank, colour -log10(1 - rank) up to 0.999"}
            return rank_heatmap(self._rank(score)), value_range, lambda h: rank_colorbar(h, rank_threshold)
        value_range = display_range(score, None, self.score) | {"unit": "none (raw score)"}
        lo, hi = value_range["lo"], value_range["hi"]
        return heatmap(score, lo, hi), value_range, lambda h: raw_colorbar(h, lo, hi, self.threshold)

    def instance_records(self, found: list[Any]) -> list[dict[str, Any]]:
        """JSON records of instances (``mean_rank``: the mean score's percentile rank, calibrated only)."""
        records = []
        for item in found:
            record = {"id": item.label_id, "area": item.area, "box": list(item.box), "mean_score": item.mean_score}
            if self.entry:
                record["mean_rank"] = float(self._rank(item.mean_score))
            records.append(record)
        return records

    def pictures(self, image: np.ndarray, result: Result) -> dict[str, Any]:
        """Segmentation, heatmap, overlay (and OoD mask) of one frame; a shown score map with
        non-finite values is refused (:class:`BadInputError`): its mask and colours would lie."""
        score = result.score(self.score)
        bad = int(np.count_nonzero(~np.isfinite(score)))
        if bad:
            raise BadInputError(f"the score map {self.score} has {bad} non-finite value(s) of {score.size} "
                                "(the model overflowed on this input)")
        height = image.shape[0]
        heat, value_range, bar = self._scale(score, height)
        seg = colorize(result.pred, self.colors)
        mask, found = None, []
        if self.threshold is not None:
            mask = result.ood_mask(self.threshold, self.score)
            found = self.instance_records(result.instances(self.threshold, self.min_area, self.score))
        boxes = [(tuple(i["box"]), f"{i['mean_rank']:.4f}" if "mean_rank" in i else f"{i['mean_score']:.3g}")
                 for i in found]
        legend_h, bar_h = panel_heights(self.layout, height)
        pictures = {
            "seg": np.hstack([seg, legend(height, result.pred, self.colors, self.class_names)]),
            "heatmap": np.hstack([heat, bar(height)]),
            "overlay": overlay(image, seg, heat, self.layout, self.score,
                               legend(legend_h, result.pred, self.colors, self.class_names), bar(bar_h), mask, boxes),
            "range": value_range,
        }
        if mask is not None:
            pictures["ood"] = mask * np.uint8(255)
            pictures["instances"] = found
        return pictures

    def record(self, result: Result, pictures: dict[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "size": list(result.size),
            "latency_ms": {**{k.removesuffix("_ms"): v for k, v in result.timings.items()},
                           "total": sum(result.timings.values())},
            "scores": {name: summary(values) for name, values in result.scores.items()},
            "heatmap_range": pictures["range"],
        }
        if "ood" in pictures:
            record["ood_fraction"] = float(np.count_nonzero(pictures["ood"]) / pictures["ood"].size)
            record["instances"] = len(pictures["instances"])
        return record


def _png(image: np.ndarray) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        ok, data = cv2.imencode(".png", image)
        if not ok:
            raise PGNError("OpenCV could not encode a PNG")
        tmp.write_bytes(data.tobytes())
    return write


def _npy(array: np.ndarray) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as stream:
            np.save(stream, np.ascontiguousarray(array, dtype=np.float32))
    return write


def output_targets(out_dir: Path, item: InputFile, names: Sequence[str], with_mask: bool,
                   save_npy: bool) -> dict[str, Path]:
    """Output files of one input, keyed by kind (``seg``, ``heatmap``, ``overlay``, ``ood``,
    ``npy:<map>``; a video has ``video``, ``instances`` and, with a mask, the folder ``masks``)."""
    base = out_dir / item.stem.parent
    stem = item.stem.name
    if item.kind == "video":
        targets = {"video": base / f"{stem}.overlay.mp4", "instances": base / f"{stem}.instances.jsonl"}
        return targets | ({"masks": base / f"{stem}.masks"} if with_mask else {})
    targets = {kind: base / f"{stem}.{kind}.png" for kind in ("seg", "heatmap", "overlay")}
    if with_mask:
        targets["ood"] = base / f"{stem}.ood.png"
    if save_npy:
        targets |= {f"npy:{name}": base / f"{stem}.{name}.npy" for name in names}
    return targets


def _inference_error(exc: Exception) -> PGNError:
    """One line for an inference failure (out of memory, a backend error, a refused image)."""
    if isinstance(exc, PGNError):
        return exc
    if isinstance(exc, MemoryError):
        return PGNError("inference ran out of memory on this image (lower --max-pixels or resize it)")
    return PGNError(f"inference failed: {type(exc).__name__}: {first_line(exc)}")


def _run_each(runtime: Runtime, images: list[np.ndarray]) -> list[Result | PGNError]:
    """Results of one batch call; if the batch fails, each image alone (to name the bad one):
    an image that fails alone becomes its :class:`PGNError`, the others their results."""
    if len(images) > 1:
        try:
            return list(runtime.run(images, color="BGR"))
        except Exception:  # noqa: BLE001 - any failure of the batch: retry image by image
            pass
    outcomes: list[Result | PGNError] = []
    for image in images:
        try:
            outcomes.append(runtime.run(image, color="BGR"))
        except Exception as exc:  # noqa: BLE001 - backends raise their own types (and MemoryError)
            outcomes.append(_inference_error(exc))
    return outcomes


def _chunks(items: list[InputFile], size: int) -> Iterator[list[InputFile]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _write_video(tmp: Path, video: VideoReader, runtime: Runtime, renderer: _Renderer,
                 bar: tqdm, frames: list[dict[str, Any]], masks: Path | None, force: bool,
                 max_pixels: int) -> None:
    """Encode the overlay of every frame into ``tmp`` (via a ``.mp4`` twin OpenCV can name);
    each frame's record (with its ``instance_list``) goes to ``frames``, its mask into ``masks``;
    a frame above ``max_pixels`` fails the video before inference."""
    encoded = tmp.with_name(tmp.name + ".mp4")
    writer = None
    stream = iter(video)
    try:
        while batch := list(itertools.islice(stream, runtime.max_batch)):
            refusal = frame_refusal(batch[0].shape[0], batch[0].shape[1], max_pixels)
            if refusal:
                raise BadInputError(f"{video.path}: {refusal}")
            for image, result in zip(batch, runtime.run(batch, color="BGR")):
                pictures = renderer.pictures(image, result)
                picture = pictures["overlay"]
                if writer is None:
                    writer = cv2.VideoWriter(str(encoded), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), video.fps,
                                             (picture.shape[1], picture.shape[0]))
                    if not writer.isOpened():
                        raise PGNError(f"OpenCV cannot write {VIDEO_FOURCC} video here")
                writer.write(picture)
                if masks is not None:
                    atomic_write(masks / f"{len(frames):06d}.png", _png(pictures["ood"]), force)
                frames.append(renderer.record(result, pictures) | {"instance_list": pictures.get("instances", [])})
                bar.update(1)
        if writer is None:
            raise BadInputError(f"{video.path}: the video has no readable frames")
        writer.release()
        os.replace(encoded, tmp)
    finally:
        if writer is not None:
            writer.release()
        encoded.unlink(missing_ok=True)


def _video_record(frames: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-video summary: frame count, mean latency per frame, score stats over all frames."""
    def mean(values: list[float]) -> float:
        return float(np.mean(values))

    names = frames[0]["scores"]
    record: dict[str, Any] = {
        "frames": len(frames),
        "size": frames[0]["size"],
        "latency_ms": {k: mean([f["latency_ms"][k] for f in frames]) for k in frames[0]["latency_ms"]},
        "scores": {n: {"min": min(f["scores"][n]["min"] for f in frames),
                       "mean": mean([f["scores"][n]["mean"] for f in frames]),
                       "max": max(f["scores"][n]["max"] for f in frames)} for n in names},
        "heatmap_range": frames[0]["heatmap_range"]["source"],
    }
    if "ood_fraction" in frames[0]:
        record["ood_fraction"] = mean([f["ood_fraction"] for f in frames])
        record["instances"] = int(sum(f["instances"] for f in frames))
    return record


def annotate(runtime: Runtime, inputs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str],
             options: AnnotateOptions | None = None, progress: bool = True) -> AnnotateReport:
    """Run ``runtime`` on image files, folders (recursive) and videos; write into ``out_dir``.

    Refused before any work (a PGNError): a missing input, an unknown score, a bad layout, or
    existing output files without ``force``. Per input, an unreadable or refused file is
    recorded in ``report.failed`` and the others are still written.
    """
    options = options or AnnotateOptions()
    if runtime.extra_inputs:
        raise BadInputError(f"the model also needs the inputs {', '.join(runtime.extra_inputs)}; "
                            "pgn-run feeds only images (export without label gt)")
    score = options.score or runtime.default_score
    if score not in runtime.score_names:
        raise BadInputError(f"no score map {score!r}; the model has: {', '.join(runtime.score_names)}")
    calibration = runtime.metadata.calibration or {}
    calibrated = default_threshold(calibration, score)
    threshold = options.threshold if options.threshold is not None else calibrated
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"{out_dir}: exists and is not a folder")
    items = [item for item in collect_inputs(inputs) if not _inside(item.path, out_dir)]
    if not items:
        raise BadInputError(f"no inputs outside the output folder {out_dir}")
    max_pixels = options.max_pixels or default_max_pixels(len(runtime.score_names) + 1)
    targets = {item: output_targets(out_dir, item, runtime.score_names, threshold is not None, options.save_npy)
               for item in items}
    existing = [p for files in targets.values() for p in files.values() if p.exists()]
    if existing and not options.force:
        raise ArtifactExistsError(
            f"{len(existing)} output file(s) exist, e.g. {existing[0]}; pass --force to overwrite"
        )
    renderer = _Renderer(runtime, options, threshold)
    report = AnnotateReport(
        backend=runtime.backend_name, score=score, threshold=threshold, out=str(out_dir),
        threshold_source=("given" if options.threshold is not None
                          else "calibration" if calibrated is not None else "none"),
        heatmap_source=("calibration: in-distribution percentile rank" if score in calibration
                        else "per-image percentiles 1..99 (uncalibrated)"),
    )
    images = [item for item in items if item.kind == "image"]
    videos = [item for item in items if item.kind == "video"]
    total = len(images) + sum(frame_count(item.path) for item in videos)
    with tqdm(total=total, unit="img", file=sys.stderr, disable=not progress, desc="pgn-run") as bar:
        for chunk in _chunks(images, runtime.max_batch):
            _annotate_images(runtime, chunk, targets, renderer, options, report, max_pixels)
            bar.update(len(chunk))
        for item in videos:
            _annotate_video(runtime, item, targets[item], renderer, options, report, bar, max_pixels)
    return report


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies inside ``folder`` (both resolved)."""
    return folder.resolve() in path.resolve().parents


def _annotate_images(runtime: Runtime, chunk: list[InputFile], targets: dict[InputFile, dict[str, Path]],
                     renderer: _Renderer, options: AnnotateOptions, report: AnnotateReport,
                     max_pixels: int) -> None:
    readable: list[tuple[InputFile, np.ndarray]] = []
    for item in chunk:
        try:
            image = read_image(item.path)
        except BadInputError as exc:
            report.failed.append({"input": str(item.path), "error": str(exc)})
            continue
        refusal = frame_refusal(image.shape[0], image.shape[1], max_pixels)
        if refusal:
            report.failed.append({"input": str(item.path), "error": f"{item.path}: {refusal}"})
            continue
        readable.append((item, image))
    if not readable:
        return
    outcomes = _run_each(runtime, [image for _, image in readable])
    for (item, image), outcome in zip(readable, outcomes):
        if not isinstance(outcome, PGNError):
            try:
                pictures = renderer.pictures(image, outcome)
            except BadInputError as exc:
                outcome = exc
        if isinstance(outcome, PGNError):
            report.failed.append({"input": str(item.path), "error": f"{item.path}: {outcome}"})
            continue
        files = targets[item]
        files["seg"].parent.mkdir(parents=True, exist_ok=True)
        for kind, path in files.items():
            if kind.startswith("npy:"):
                atomic_write(path, _npy(outcome.scores[kind[4:]]), options.force)
            else:
                atomic_write(path, _png(pictures[kind]), options.force)
        record = renderer.record(outcome, pictures)
        report.inputs.append({"input": str(item.path), "kind": "image",
                              "outputs": [str(p) for p in files.values()], **record})


def _annotate_video(runtime: Runtime, item: InputFile, files: dict[str, Path], renderer: _Renderer,
                    options: AnnotateOptions, report: AnnotateReport, bar: tqdm, max_pixels: int) -> None:
    frames: list[dict[str, Any]] = []
    target, masks = files["video"], files.get("masks")
    try:
        with VideoReader(item.path) as video:
            target.parent.mkdir(parents=True, exist_ok=True)
            if masks is not None:
                masks.mkdir(exist_ok=True)
            atomic_write(target, lambda tmp: _write_video(tmp, video, runtime, renderer, bar, frames, masks,
                                                          options.force, max_pixels), options.force)
    except Exception as exc:  # noqa: BLE001 - a failing video is skipped and reported like an image
        report.failed.append({"input": str(item.path), "error": str(_inference_error(exc))})
        return
    lines = [json.dumps({"frame": i, "instances": frame.pop("instance_list")}) for i, frame in enumerate(frames)]
    atomic_write(files["instances"], lambda tmp: tmp.write_text("\n".join(lines) + "\n"), options.force)
    report.inputs.append({"input": str(item.path), "kind": "video", "outputs": [str(p) for p in files.values()],
                          **_video_record(frames)})
