"""Benchmark: pixel + component OoD metrics of a split at dataset scale (``pgn_deploy.eval``).

Frames (default 400 of 1024 x 2048, about 0.84 billion pixels) are generated on the fly from
a seed each time they are read, so the split is never held in memory; every frame is read
twice, as :func:`~pgn_deploy.eval.metrics.ood.evaluate_ood` does. A frame looks like a road
scene's OoD output: void sky and margins, 0-5 obstacles of 30-20000 pixels (some below the
size limits), scores from bilinearly upsampled low-resolution noise (about 1.3 million
distinct float32 values per frame, 6 octaves), higher on the obstacles.

Measured: wall time of ``evaluate_ood`` (exact, obstacle track), the time the generator
alone takes for the same number of reads (subtracted for the metrics-only figure), peak
resident memory, the size of the exact counts; then the SMIYC-binned pixel metrics on the
first ``--smiyc-frames`` frames against the exact ones on the same frames.

    python benchmarks/bench_metrics.py                 # full size, writes benchmarks/results/
    python benchmarks/bench_metrics.py --frames 40 --out /tmp/x   # a fraction, extrapolated
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from pgn_deploy.contract import atomic_write_text
from pgn_deploy.eval.metrics.ood import default_workers, evaluate_ood
from pgn_deploy.eval.metrics.pixel import PixelAccumulator

FULL_FRAMES = 400


POOL = 16


@functools.lru_cache(maxsize=POOL)
def base_frame(seed: int, index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One generated road-like frame (scores float32, labels uint8), cached."""
    rng = np.random.default_rng([seed, index])
    h, w = height, width
    labels = np.zeros((h, w), np.uint8)
    labels[: int(0.35 * h)] = 255
    labels[:, : w // 16] = 255
    for _ in range(rng.integers(0, 6)):
        centre = (int(rng.integers(w // 8, w - w // 8)), int(rng.integers(h // 2, h - 20)))
        axes = (int(rng.integers(3, 90)), int(rng.integers(3, 70)))
        cv2.ellipse(labels, centre, axes, 0, 0, 360, 1, -1)
    coarse = rng.standard_normal((h // 8, w // 8)).astype(np.float32)
    noise = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
    bump = cv2.blur((labels == 1).astype(np.float32), (9, 9)) * np.float32(2.5)
    scores = np.exp(np.float32(0.8) * noise + bump).astype(np.float32)
    return scores, labels


@dataclasses.dataclass(frozen=True)
class SyntheticFrame:
    """Frame ``index``: base frame ``index % POOL`` with its scores scaled by 1 + index / 1024.

    The scaling gives every frame its own float32 values (so the exact counts grow as with
    real data) for the cost of one multiplication instead of a full generation.
    """

    name: str
    index: int
    seed: int
    height: int
    width: int

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        scores, labels = base_frame(self.seed, self.index % POOL, self.height, self.width)
        return scores * np.float32(1.0 + self.index / 1024), labels


def frames(count: int, height: int, width: int, seed: int) -> list[SyntheticFrame]:
    return [SyntheticFrame(f"synthetic_{i:04d}", i, seed, height, width) for i in range(count)]


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def time_generation(split: list[SyntheticFrame]) -> float:
    """Seconds the generator alone needs for the split read twice (fills the frame cache)."""
    start = time.perf_counter()
    for frame in split[:POOL]:
        frame.load()
    pool = time.perf_counter() - start
    start = time.perf_counter()
    for frame in split[:POOL]:
        frame.load()
    per_load = (time.perf_counter() - start) / min(POOL, len(split))
    return pool + 2 * len(split) * per_load


def compare_smiyc(split: list[SyntheticFrame]) -> dict:
    exact, smiyc = PixelAccumulator("exact"), PixelAccumulator("smiyc")
    for frame in split:
        scores, labels = frame.load()
        exact.add(scores, labels, frame.name)
        smiyc.add(scores, labels, frame.name)
    e, s = exact.result(), smiyc.result()
    return {
        "frames": len(split),
        "exact": {"AuPRC": e.auprc, "AuROC": e.auroc, "FPR95": e.fpr95, "threshold": e.threshold},
        "smiyc": {"AuPRC": s.auprc, "AuROC": s.auroc, "FPR95": s.fpr95, "threshold": s.threshold},
        "difference_smiyc_minus_exact": {"AuPRC": s.auprc - e.auprc, "AuROC": s.auroc - e.auroc,
                                         "FPR95": s.fpr95 - e.fpr95},
    }


def markdown(report: dict) -> str:
    r = report
    m = r["metrics"]
    lines = [
        "# pgn-metrics at dataset scale",
        "",
        f"`python benchmarks/bench_metrics.py {' '.join(r['argv'])}` on {r['machine']}.",
        "",
        f"- split: {r['frames']} synthetic frames of {r['height']} x {r['width']} "
        f"({r['pixels_total'] / 1e9:.3f} billion pixels, {m['pixels'] / 1e9:.3f} billion in the ROI), "
        f"made when read (16 generated frames, scores rescaled per frame), each read twice",
        f"- `evaluate_ood` (exact, obstacle track, {r['workers']} worker threads): "
        f"**{r['wall_s']:.0f} s** wall, {r['cpu_s']:.0f} s CPU; making the frames takes "
        f"{r['generation_s']:.1f} s of that (measured alone) -> **{r['metrics_only_s']:.0f} s for the "
        f"metrics** ({1000 * r['metrics_only_s'] / r['frames'] / 2:.0f} ms per frame read)",
        f"- machine shared with other work: load average {r['load_before'][0]:.1f} before, "
        f"{r['load_after'][0]:.1f} after (1-minute, {os.cpu_count()} cores)",
        f"- peak resident memory {r['peak_rss_gib']:.2f} GiB; exact counts: "
        f"{r['distinct_values'] / 1e6:.1f} million distinct float32 scores held in {r['counts_mib']:.0f} MiB",
    ]
    if r["frames"] != FULL_FRAMES:
        lines.append(f"- extrapolated to {FULL_FRAMES} frames (linear in frames): "
                     f"**{r['extrapolated_full_s']:.0f} s** for the metrics")
    lines += [
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {v:.6f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in m.items()),
        "",
        f"## SMIYC binning vs exact (pixel level, first {r['smiyc']['frames']} frames)",
        "",
        "| | AuPRC | AuROC | FPR95 |",
        "|---|---|---|---|",
    ]
    for row in ("exact", "smiyc", "difference_smiyc_minus_exact"):
        v = r["smiyc"][row]
        lines.append(f"| {row} | {v['AuPRC']:.6f} | {v['AuROC']:.6f} | {v['FPR95']:.6f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=FULL_FRAMES)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--smiyc-frames", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--force", action="store_true", help="overwrite existing result files")
    args = parser.parse_args(argv)

    split = frames(args.frames, args.height, args.width, args.seed)
    generation = time_generation(split)
    load_before = os.getloadavg()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = evaluate_ood(split, track="obstacle", binning="exact", workers=args.workers, progress=True)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    load_after = os.getloadavg()
    report = {
        "argv": sys.argv[1:] if argv is None else list(argv),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"Python {platform.python_version()}, numpy {np.__version__}, OpenCV {cv2.__version__}",
        "frames": args.frames, "height": args.height, "width": args.width, "workers": args.workers,
        "pixels_total": args.frames * args.height * args.width,
        "wall_s": wall, "cpu_s": cpu, "load_before": load_before, "load_after": load_after,
        "generation_s": generation, "metrics_only_s": wall - generation,
        "extrapolated_full_s": (wall - generation) * FULL_FRAMES / args.frames,
        "peak_rss_gib": peak_rss_gib(),
        "distinct_values": result.pixel.thresholds,
        "counts_mib": result.pixel.counts_bytes / 2**20,
        "metrics": result.to_json(),
    }
    report["smiyc"] = compare_smiyc(split[: min(args.smiyc_frames, args.frames)])
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "metrics_bench.json", json.dumps(report, indent=2) + "\n", force=args.force)
    atomic_write_text(args.out / "metrics_bench.md", markdown(report), force=args.force)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
