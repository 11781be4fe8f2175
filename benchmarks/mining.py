"""Benchmark: pgn-mine's throughput, local and on Ray, against a plain loop of ``Runtime.run``.

On ``--frames`` generated road scenes (SynthRoad, RoadAnomaly21 layout, 256 x 512 JPEGs) with the
demo model (exported here from ``export/models/demo_synthroad.pth``: p = 0.5, uni, pred):

* plain: ``Runtime.run`` over the frames already decoded in memory, ``--batch`` per call, one
  ONNX Runtime thread: the inference alone, the floor of any pipeline;
* local: ``mine(engine="local")`` on the files (one decode thread, inference with one thread,
  instances, Parquet parts), timed over its mining step; its median against the plain loop's
  (target: the pipeline costs <= 10 %);
* ray: ``mine(engine="ray")`` with 1 and 2 actors of one thread each in a local Ray of 2 CPUs.
  Each run pays a fixed cost (actors start and load the model, Ray Data plans and writes), so
  every configuration is timed on all the frames and on ``--small`` of them: the marginal rate
  ``(frames - small) / (t_all - t_small)`` is the steady throughput (target: 2 workers >= 1.6x
  one), and ``ray.init`` plus the small run is the fixed start-up cost;
* fleet: the throughput a node needs for a fleet's daily video, computed (not measured) from
  the flags, with the CPU cores it would keep busy at the plain loop's measured CPU time per
  frame (CPU time, not wall time: the shared machine's load stretches wall time).

Each of ``--reps`` repetitions runs every configuration in turn (medians reported), so that the
shared machine's changing load hits them alike; the load average is recorded before and after
every measurement.

    PYTHONPATH=$PWD python benchmarks/mining.py --out benchmarks/results --force
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2

from pgn_deploy.benchmark.machine import load_average, machine_info
from pgn_deploy.contract import atomic_write_text, make_spec
from pgn_deploy.mining import MineOptions, mine
from pgn_deploy.runtime.runner import Runtime

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "export" / "models" / "demo_synthroad.pth"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python benchmarks/mining.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=64, help="generated frames (default 64)")
    parser.add_argument("--small", type=int, default=8, help="frames of the short Ray runs (default 8)")
    parser.add_argument("--batch", type=int, default=4, help="frames per inference call (default 4)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every measurement (default 3)")
    parser.add_argument("--skip-ray", action="store_true", help="only plain and local")
    parser.add_argument("--vehicles", type=int, default=1000, help="fleet size for the computation (default 1000)")
    parser.add_argument("--hours", type=float, default=8.0, help="recorded hours per vehicle and day (default 8)")
    parser.add_argument("--fps", type=float, default=30.0, help="camera frame rate (default 30)")
    parser.add_argument("--every", type=int, default=10, help="mine every N-th frame (default 10)")
    parser.add_argument("--work", help="folder for the model and frames (default: a temporary one)")
    parser.add_argument("--out", default="benchmarks/results", help="results folder (default benchmarks/results)")
    parser.add_argument("--force", action="store_true", help="overwrite mining.json/.md")
    parser.add_argument("--from-json", help="only write mining.md again from this mining.json")
    return parser


def cpu_ticks() -> tuple[int, int] | None:
    """(idle, total) jiffies of the whole machine from /proc/stat (``None`` elsewhere)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + fields[4], sum(fields)  # idle + iowait, all


def idle_share(start: tuple[int, int] | None, end: tuple[int, int] | None) -> float | None:
    """The share of the machine's CPU time that was idle between two :func:`cpu_ticks`."""
    if not start or not end or end[1] == start[1]:
        return None
    return (end[0] - start[0]) / (end[1] - start[1])


def log(message: str) -> None:
    print(f"[mining bench] {message}", file=sys.stderr, flush=True)


def prepare(work: Path, frames: int) -> tuple[Path, Path, float]:
    """The demo model, the frame folder, and a threshold (q0.99 of the map over 4 frames)."""
    from pgn_deploy.export.api import export_model
    from pgn_deploy.synthroad.layouts import write_synthroad

    model = work / "demo.pgn.onnx"
    if not model.exists():
        export_model(CHECKPOINT, model, spec=make_spec(p=0.5, labels="uni", pred=True))
    shutil.rmtree(work / "synthroad", ignore_errors=True)  # exactly ``frames`` frames, none of an earlier run
    write_synthroad(work / "synthroad", frames, seed=21, layouts=["roadanomaly21"], progress=False)
    folder = work / "synthroad" / "dataset_AnomalyTrack" / "images"
    runtime = Runtime(model, "ort-cpu", intra_op_threads=1)
    import numpy as np

    values = [runtime.run(cv2.imread(str(p)), color="BGR").score().ravel() for p in sorted(folder.glob("*"))[:4]]
    return model, folder, float(np.quantile(np.concatenate(values), 0.99))


def timed(what: str, call) -> dict[str, Any]:
    before = load_average()
    start, cpu = time.perf_counter(), time.process_time()
    value = call()
    seconds = time.perf_counter() - start
    record = {"seconds": seconds, "driver_cpu_s": time.process_time() - cpu, "load_before": before,
              "load_after": load_average()}
    if isinstance(value, dict):
        record.update(value)
    log(f"{what}: {seconds:.2f} s (load {before} -> {record['load_after']})")
    return record


def plain_loop(model: Path, folder: Path, batch: int) -> dict[str, float]:
    """Wall and CPU seconds of Runtime.run over the decoded frames (decoding and loading not timed)."""
    runtime = Runtime(model, "ort-cpu", intra_op_threads=1, max_batch=batch)
    images = [cv2.imread(str(p)) for p in sorted(folder.iterdir())]
    runtime.run(images[:batch], color="BGR")  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    for first in range(0, len(images), batch):
        runtime.run(images[first:first + batch], color="BGR")
    return {"mining_s": time.perf_counter() - start, "mining_cpu_s": time.process_time() - cpu}


def mine_once(model: Path, sources: list[Path], out: Path, threshold: float, **options: Any) -> dict[str, Any]:
    """One run into a fresh folder: its mining step's wall and CPU seconds (CPU: this process's
    threads; the Ray actors' CPU is not in it)."""
    report = mine(model, sources, out, MineOptions(threshold=threshold, top=0, backend="ort-cpu", **options))
    assert report.processed > 0 and (report.failed, report.skipped) == (0, 0), report.to_text()
    return {"mining_s": report.seconds, "frames": report.processed, "mining_cpu_s": report.cpu_seconds}


def measure(model: Path, folder: Path, threshold: float, args: argparse.Namespace, scratch: Path) -> dict:
    """Every configuration once per repetition, in turn, so that the shared machine's load
    changes hit them alike. Ray (unless skipped) is started once, before the repetitions."""
    files = sorted(folder.iterdir())
    small = files[:args.small]
    configs = {"plain": lambda rep: plain_loop(model, folder, args.batch),
               "local": lambda rep: mine_once(model, [folder], scratch / f"local-{rep}", threshold, batch=args.batch,
                                              workers=1, threads=1)}
    for workers in ([] if args.skip_ray else [1, 2]):
        for name, sources in (("small", small), ("all", files)):
            configs[f"ray{workers}_{name}"] = functools.partial(
                lambda rep, w, n, src: mine_once(model, src, scratch / f"ray{w}-{n}-{rep}", threshold, engine="ray",
                                                 batch=args.batch, workers=w, threads=1),
                w=workers, n=name, src=sources)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    data: dict[str, Any] = {"runs": runs}
    if not args.skip_ray:
        import ray

        def start() -> None:
            ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)

        data["ray_init"] = timed("ray.init (local Ray, 2 CPUs)", start)
        data["ray_first_run"] = timed(
            f"ray, first run after ray.init, 1 worker, {len(small)} frames",
            lambda: mine_once(model, small, scratch / "ray-first", threshold, engine="ray", batch=args.batch,
                              workers=1, threads=1))
    try:
        for rep in range(args.reps):
            for name, call in configs.items():
                runs[name].append(timed(f"{name}, rep {rep + 1}", functools.partial(call, rep)))
    finally:
        if not args.skip_ray:
            ray.shutdown()
    return data


def summarize(data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Medians over the repetitions; the local engine against the plain loop; Ray's rates."""
    def median(name: str, key: str = "mining_s") -> float:
        return statistics.median(run[key] for run in data["runs"][name])

    plain_s, local_s = median("plain"), median("local")
    paired = [lo["mining_s"] / pl["mining_s"] for pl, lo in zip(data["runs"]["plain"], data["runs"]["local"])]
    local = {"plain_fps": args.frames / plain_s, "local_fps": args.frames / local_s,
             "plain_ms_per_frame": 1e3 * plain_s / args.frames,
             "plain_cpu_ms_per_frame": 1e3 * median("plain", "mining_cpu_s") / args.frames,
             "local_cpu_ms_per_frame": 1e3 * median("local", "mining_cpu_s") / args.frames,
             "pipeline_cost_of_medians": local_s / plain_s - 1.0,
             "pipeline_cost": statistics.median(paired) - 1.0,  # per repetition: local against the plain run before it
             "pipeline_cost_per_rep": [r - 1.0 for r in paired]}
    if args.skip_ray:
        return {"local": local}
    ray: dict[str, Any] = {"init_s": data["ray_init"]["seconds"], "first_run_s": data["ray_first_run"]["mining_s"]}
    for workers in (1, 2):
        t_small, t_all = median(f"ray{workers}_small"), median(f"ray{workers}_all")
        ray[f"workers_{workers}"] = {"small_run_s": t_small, "all_run_s": t_all, "whole_run_fps": args.frames / t_all,
                                     "marginal_fps": (args.frames - args.small) / (t_all - t_small)}
    one, two = ray["workers_1"], ray["workers_2"]
    ray["speedup_2_over_1"] = two["marginal_fps"] / one["marginal_fps"]
    steady_small = args.small / one["marginal_fps"]
    ray["per_run_fixed_s"] = one["small_run_s"] - steady_small
    ray["fixed_startup_s"] = ray["init_s"] + ray["first_run_s"] - steady_small
    return {"local": local, "ray": ray}


def fleet(args: argparse.Namespace, ms_per_frame: float) -> dict[str, Any]:
    """Computed, not measured: the sustained rate a fleet's daily video needs."""
    frames_per_day = args.vehicles * args.hours * 3600 * args.fps / args.every
    needed_fps = frames_per_day / 86400
    return {"vehicles": args.vehicles, "hours_per_day": args.hours, "fps": args.fps, "every": args.every,
            "frames_per_day": frames_per_day, "needed_fps_over_24h": needed_fps,
            "cpu_ms_per_frame_measured": ms_per_frame,
            "cpu_cores_at_measured_cost": needed_fps * ms_per_frame / 1e3}


def to_markdown(data: dict[str, Any]) -> str:
    m, loc = data["machine"], data["local"]
    lines = [
        "# pgn-mine throughput",
        "",
        f"`python benchmarks/mining.py` on {m['cpu']}, {m['usable_cores']} cores, {m['date_utc']}; "
        f"{data['frames']} SynthRoad frames of 256 x 512 (JPEG), demo model (p = 0.5, uni, pred), "
        f"batch {data['batch']}, ONNX Runtime CPU, 1 inference thread everywhere; medians of {data['reps']} "
        "repetitions, each running every configuration in turn.",
        "",
        f"The machine is shared with other engineers' work: load average (1, 5, 15 min) "
        f"{data['load_start']} at the start, {data['load_end']} at the end (2 cores); "
        + (f"the CPUs were idle {100 * data['idle_share']:.1f} % of the time during the benchmark. "
           if data.get("idle_share") is not None else "")
        + "Every run's load is in mining.json. Parallel speed-ups need idle cores: read the ratios with that "
        "in mind.",
        "",
        "| what | frames/s | note |",
        "|---|---|---|",
        f"| plain loop of `Runtime.run` (decoded frames) | {loc['plain_fps']:.2f} | "
        f"{loc['plain_ms_per_frame']:.0f} ms per frame |",
        f"| `--engine local` (1 decode thread) | {loc['local_fps']:.2f} | pipeline cost "
        f"{100 * loc['pipeline_cost']:+.1f} % (target <= 10 %): median of the repetitions' local/plain ratios "
        f"({', '.join(f'{100 * c:+.0f} %' for c in loc['pipeline_cost_per_rep'])}) |",
        "",
        f"CPU time per frame (all threads of the process, same timed span): plain loop "
        f"{loc['plain_cpu_ms_per_frame']:.1f} ms, local engine {loc['local_cpu_ms_per_frame']:.1f} ms, i.e. "
        f"{100 * (loc['local_cpu_ms_per_frame'] / loc['plain_cpu_ms_per_frame'] - 1):+.1f} % for decoding, "
        "instances and Parquet parts (the plain loop's frames were decoded before timing). Where a core is free, "
        "the decode thread runs beside inference and the wall-time cost is smaller than that; on a saturated "
        "machine the wall-time cost follows the CPU-time cost, stretched by the load.",
        "",
        "| what | frames/s | note |",
        "|---|---|---|",
    ]
    ray = data.get("ray")
    if ray:
        for workers in (1, 2):
            r = ray[f"workers_{workers}"]
            lines.append(f"| `--engine ray`, {workers} worker(s) | {r['marginal_fps']:.2f} marginal, "
                         f"{r['whole_run_fps']:.2f} whole run | run of {data['frames']} frames "
                         f"{r['all_run_s']:.1f} s, of {data['small']} frames {r['small_run_s']:.1f} s |")
        lines += ["", f"- Ray, 2 workers over 1: **{ray['speedup_2_over_1']:.2f}x** (target >= 1.6x)",
                  f"- Ray's fixed start-up cost: **{ray['fixed_startup_s']:.1f} s** (`ray.init` {ray['init_s']:.1f} s "
                  f"+ the first run's {ray['first_run_s']:.1f} s less its frames' steady cost: worker processes, "
                  "imports, actor start, model load); each later run in the same Ray pays "
                  f"{ray['per_run_fixed_s']:.1f} s (actors, planning, writing)"]
    f = data["fleet"]
    lines += [
        "",
        "## A fleet's daily video (a computation from the measured cost, not a measurement)",
        "",
        f"{f['vehicles']} vehicles x {f['hours_per_day']:g} h/day x {f['fps']:g} fps, every {f['every']}-th frame "
        f"mined: {f['frames_per_day'] / 1e6:.1f} million frames a day = **{f['needed_fps_over_24h']:.0f} frames/s** "
        f"sustained over 24 h. At the plain loop's measured {f['cpu_ms_per_frame_measured']:.0f} ms of CPU time per "
        f"frame (one thread, 256 x 512, this small model) that is {f['cpu_cores_at_measured_cost']:.0f} CPU cores "
        f"busy around the clock, plus decoding. One GPU node doing the whole job must sustain "
        f"{f['needed_fps_over_24h']:.0f} frames/s, decoding included (or N nodes {f['needed_fps_over_24h']:.0f}/N "
        "each: Ray spreads the actors). No GPU was measured here; the GPU rate of a given model comes from "
        "`pgn-bench` on that GPU.",
        "",
        "## The same command on a cluster",
        "",
        "`ray start --head` on one node and `ray start --address HEAD:6379` on the others (or a KubeRay "
        "`RayCluster`, with `pgn-mine` as a `RayJob`'s entrypoint), then `pgn-mine ... --engine ray --ray-address "
        "auto --workers N --threads T`: N actors of T CPUs each, spread over the nodes, every node reading the "
        "model, the sources and `--out` from shared storage. With GPUs, `--num-gpus 1` (or 0.5 to put two actors "
        "on one GPU) and `--backend ort-cuda`/`ort-trt`/`trt`; a TensorRT plan is specific to a GPU model and "
        "TensorRT version, so build one per node type (`pgn-build`) or let `ort-trt` build on each node. "
        "Details: docs/mining.md.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        atomic_write_text(out / "mining.md", to_markdown(json.loads(Path(args.from_json).read_text())), force=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="pgn-mine-bench-") as temp:
        work = Path(args.work) if args.work else Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="runs-", dir=temp))
        data: dict[str, Any] = {"machine": machine_info(), "frames": args.frames, "small": args.small,
                                "batch": args.batch, "reps": args.reps, "load_start": load_average()}
        ticks = cpu_ticks()
        model, folder, threshold = prepare(work, args.frames)
        data["threshold"] = threshold
        data["measurements"] = measure(model, folder, threshold, args, scratch)
        data.update(summarize(data["measurements"], args))
        data["fleet"] = fleet(args, data["local"]["plain_cpu_ms_per_frame"])
        data["load_end"] = load_average()
        data["idle_share"] = idle_share(ticks, cpu_ticks())
    atomic_write_text(out / "mining.json", json.dumps(data, indent=2, sort_keys=True) + "\n", force=args.force)
    atomic_write_text(out / "mining.md", to_markdown(data), force=args.force)
    print(to_markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
