"""The derived outputs of a mining folder, rebuilt from its parts at the end of every run.

* ``frames.parquet``: one row per mined frame, most anomalous first: ``source``, ``frame``,
  ``score``, ``rank`` (1 = highest score; ties by source, then frame), ``instances``,
  ``height``, ``width``, ``model_sha256``, ``worker`` (``local:<host>`` or ``ray:<node id>``).
* ``instances.parquet``: one row per OoD instance: ``source``, ``frame``, ``instance`` (1..n in
  the frame, raster order), ``area`` (pixels), the box ``x``, ``y``, ``w``, ``h`` (pixels),
  ``mean_score``, ``max_score``.
* ``failures.parquet``: ``source``, ``frame``, ``error`` for frames that could not be read or run
  (tried again by the next run), by source, then frame.
* ``overlays/``: a PNG per top-K frame: the segmentation over the frame beside the score
  heatmap, instance boxes drawn on both halves. A top frame is decoded and run again to draw
  it, so the driver needs to read it.
* ``index.html``: the top K as a gallery (overlay, score, boxes, a link to the source). It
  uses no scripts and no external files besides ``overlays/``: open it from the file system.
"""
from __future__ import annotations

import dataclasses
import hashlib
import html
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pgn_deploy.contract import PGNError, atomic_write, atomic_write_text, require
from pgn_deploy.mining.frame_scoring import INSTANCE_FIELDS, MiningRule
from pgn_deploy.mining.sources import FrameRef, decode_frames, is_uri, is_video
from pgn_deploy.runtime.runner import Runtime
from pgn_deploy.runtime.stats import display_range
from pgn_deploy.runtime.visualize import colorize, heatmap, overlay, palette

FRAME_COLUMNS = ("source", "frame", "score", "rank", "instances", "height", "width", "model_sha256", "worker")
OVERLAYS = "overlays"
OVERLAY_MAX_WIDTH = 1600
BOX_COLOR = (0, 255, 0)  # BGR


@dataclasses.dataclass
class OutputSummary:
    """What the folder holds after a run: ``frames`` mined in total, ``failures``, ``instances``
    and the ``top`` frames (dicts with source, frame, score, rank, instances, overlay)."""

    frames: int
    failures: int
    instances: int
    top: list[dict[str, Any]]


def write_outputs(table, out_dir: Path, runtime: Runtime, rule: MiningRule, top: int) -> OutputSummary:
    """Write every derived file of ``out_dir`` from the loaded part ``table`` (replacing the
    earlier ones, each atomically). Columnar (Arrow compute) except for the ``top`` rows, so a
    large folder costs memory for its tables, not Python objects per row."""
    pa = require("pyarrow", "pgn-mine's Parquet output")
    pc = require("pyarrow.compute", "pgn-mine's Parquet output")
    pq = require("pyarrow.parquet", "pgn-mine's Parquet output")
    failed = pc.is_valid(table.column("error"))
    good = table.filter(pc.invert(failed)).sort_by(
        [("score", "descending"), ("source", "ascending"), ("frame", "ascending")]).combine_chunks()
    good = good.append_column("rank", pa.array(np.arange(1, good.num_rows + 1), pa.int64()))
    frames = good.select(list(FRAME_COLUMNS))
    instances = _instances_table(pa, pc, good)
    failures = table.filter(failed).select(["source", "frame", "error"]).sort_by(
        [("source", "ascending"), ("frame", "ascending")])  # the same order whichever engine wrote the parts
    for name, data in (("frames", frames), ("instances", instances), ("failures", failures)):
        atomic_write(out_dir / f"{name}.parquet", lambda tmp, data=data: pq.write_table(data, tmp), force=True)
    chosen = good.slice(0, top).to_pylist()
    for row in chosen:
        row["overlay"] = _overlay(out_dir, runtime, rule, row)
    _remove_stale_overlays(out_dir, {row["overlay"] for row in chosen if row["overlay"]})
    summary = OutputSummary(good.num_rows, failures.num_rows, instances.num_rows,
                            [{k: row[k] for k in ("source", "frame", "score", "rank", "instances", "overlay")}
                             for row in chosen])
    atomic_write_text(out_dir / "index.html", gallery_html(chosen, rule, summary), force=True)
    return summary


def _instances_table(pa, pc, good):
    """One row per instance of the ranked frames (one chunk per column): the lists flattened."""
    counts = good.column("instances").to_numpy()
    if not counts.sum():
        ints = [(name, pa.int64()) for name in ("frame", "instance", "area", "x", "y", "w", "h")]
        schema = pa.schema([("source", pa.string()), *ints, ("mean_score", pa.float64()), ("max_score", pa.float64())])
        return schema.empty_table()
    parents = pc.list_parent_indices(good.column("instance_area").chunk(0))
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    columns = {"source": pc.take(good.column("source"), parents), "frame": pc.take(good.column("frame"), parents),
               "instance": pa.array(np.arange(counts.sum()) - starts + 1, pa.int64())}
    for key in INSTANCE_FIELDS:
        columns[key] = pc.list_flatten(good.column(f"instance_{key}").chunk(0))
    return pa.table(columns)


def overlay_name(ref: FrameRef) -> str:
    """The overlay file of a frame, relative to the folder: ``overlays/<stem>-f<frame>-<hash>.png``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(ref.source.split("?")[0]).stem)[:60]
    digest = hashlib.sha1(f"{ref.source}\0{ref.frame}".encode()).hexdigest()[:10]
    return f"{OVERLAYS}/{stem}-f{ref.frame}-{digest}.png"


def _overlay(out_dir: Path, runtime: Runtime, rule: MiningRule, row: dict[str, Any]) -> str | None:
    """Draw (or keep: the manifest fixes the model and rule) the overlay of a top frame; its
    relative path, or ``None`` when the frame cannot be read or run any more."""
    name = overlay_name(FrameRef(row["source"], row["frame"]))
    target = out_dir / name
    if target.exists():
        return name
    (decoded,) = decode_frames([FrameRef(row["source"], row["frame"])])
    if decoded.image is None:
        return None
    try:
        result = runtime.run(decoded.image, color="BGR")
    except PGNError:
        return None
    picture = render_overlay(decoded.image, result.pred, result.score(rule.score), runtime, rule, row)
    ok, data = cv2.imencode(".png", picture)
    if not ok:
        raise PGNError("OpenCV could not encode a PNG")
    target.parent.mkdir(exist_ok=True)
    atomic_write(target, lambda tmp: tmp.write_bytes(data.tobytes()), force=True)
    return name


def render_overlay(image: np.ndarray, pred: np.ndarray, score: np.ndarray, runtime: Runtime, rule: MiningRule,
                   row: dict[str, Any]) -> np.ndarray:
    """BGR H x 2W: segmentation over the frame | heatmap of the rule's map, boxes on both halves;
    scaled down to at most :data:`OVERLAY_MAX_WIDTH` pixels wide."""
    calibration = runtime.metadata.calibration
    value_range = display_range(score, calibration, rule.score)
    seg = colorize(pred, palette(runtime.metadata.num_classes))
    heat = heatmap(score, value_range["lo"], value_range["hi"])
    label = f"#{row['rank']} score {row['score']:.3g} ({row['instances']} instance(s), {rule.score})"
    picture = overlay(image, seg, heat, "side", label)
    width = image.shape[1]
    thickness = max(1, width // 320)
    for x, y, w, h in zip(row["instance_x"], row["instance_y"], row["instance_w"], row["instance_h"]):
        for offset in (0, width):
            cv2.rectangle(picture, (x + offset, y), (x + offset + w - 1, y + h - 1), BOX_COLOR, thickness)
    if picture.shape[1] > OVERLAY_MAX_WIDTH:
        scale = OVERLAY_MAX_WIDTH / picture.shape[1]
        picture = cv2.resize(picture, (OVERLAY_MAX_WIDTH, max(1, round(picture.shape[0] * scale))),
                             interpolation=cv2.INTER_AREA)
    return picture


def _remove_stale_overlays(out_dir: Path, keep: set[str]) -> None:
    folder = out_dir / OVERLAYS
    if folder.is_dir():
        for path in folder.glob("*.png"):
            if f"{OVERLAYS}/{path.name}" not in keep:
                path.unlink()


def source_link(source: str) -> str:
    """A link to a source: the URI as given, or the local file's ``file://`` URI."""
    return source if is_uri(source) else Path(source).as_uri()


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.4em;margin:0 0 .3em}
p.rule{color:#555;margin:.2em 0 1.2em}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.8em;margin:0 0 1.2em}
.card h2{font-size:1.05em;margin:0 0 .4em}
.card img{max-width:100%;display:block;margin:.4em 0}
table{border-collapse:collapse;font-size:.85em}
td,th{border:1px solid #ddd;padding:.15em .5em;text-align:right}
.missing{color:#a00}
"""


def gallery_html(chosen: list[dict[str, Any]], rule: MiningRule, summary: OutputSummary) -> str:
    """The self-contained HTML gallery of the top frames (escaped; images by relative path)."""
    esc = html.escape
    cards = []
    for row in chosen:
        where = f"frame {row['frame']}" if is_video(row["source"]) else "image"
        picture = (f'<img src="{esc(row["overlay"])}" alt="overlay of rank {row["rank"]}">' if row["overlay"]
                   else '<p class="missing">the source cannot be read any more: no overlay</p>')
        boxes = "".join(
            f"<tr><td>{i + 1}</td><td>{x}</td><td>{y}</td><td>{w}</td><td>{h}</td><td>{a}</td>"
            f"<td>{m:.4g}</td><td>{p:.4g}</td></tr>"
            for i, (x, y, w, h, a, m, p) in enumerate(zip(
                row["instance_x"], row["instance_y"], row["instance_w"], row["instance_h"],
                row["instance_area"], row["instance_mean_score"], row["instance_max_score"])))
        table = ("<table><tr><th>#</th><th>x</th><th>y</th><th>w</th><th>h</th><th>area</th>"
                 f"<th>mean</th><th>max</th></tr>{boxes}</table>" if boxes else "<p>no instances</p>")
        cards.append(
            f'<div class="card" id="rank-{row["rank"]}"><h2>#{row["rank"]} &middot; score {row["score"]:.4g} '
            f'&middot; {row["instances"]} instance(s)</h2>'
            f'<a href="{esc(source_link(row["source"]))}">{esc(row["source"])}</a> ({where}, '
            f'{row["width"]}x{row["height"]})'
            f"{picture}{table}</div>")
    header = (f"<h1>pgn-mine: top {len(chosen)} of {summary.frames} frame(s)</h1>"
              f'<p class="rule">map {esc(rule.score)}, threshold {rule.threshold:.6g} ({esc(rule.threshold_source)}), '
              f"min area {rule.min_area} px, model sha256 {esc(rule.model_sha256[:16])}&hellip;; "
              f"{summary.instances} instance(s), {summary.failures} failure(s). Frame score = mean score of the "
              "largest instance / threshold (0 without instances).</p>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>pgn-mine gallery</title>'
            f"<style>{_STYLE}</style></head><body>{header}{''.join(cards)}</body></html>\n")
