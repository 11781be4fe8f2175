"""Benchmark: pgn-mine's throughput, local and on Ray, against a plain loop of ``Runtime.run``.

On ``--frames`` generated road scenes (SynthRoad, RoadAnomaly21 layout, JPEGs of ``--size``;
default 512 x 1024, the deployment resolution of the other benchmarks) with the demo model
(exported here from ``export/models/demo_synthroad.pth``: p = 0.5, uni, pred):

* plain: ``Runtime.run`` over the frames already decoded in memory, ``--batch`` per call, one
  ONNX Runtime thread: the inference alone, the floor of any pipeline;
* plain x2: two processes running that loop side by side, each on half the frames: what this
  machine's two cores give two busy processes without any framework (the ceiling of 2 workers);
* local: ``mine(engine="local")`` on the files (one decode thread, inference with one thread,
  instances, Parquet parts), timed over its mining step; its median against the plain loop's
  (target: the pipeline costs <= 10 %);
* ray: ``mine(engine="ray")`` with 1 and 2 actors of one thread each in a local Ray of 2 CPUs.
  Each run pays a fixed cost (actors start and load the model, Ray Data plans), so every
  configuration is timed on all the frames and on ``--small`` of them: the marginal rate
  ``(frames - small) / (t_all - t_small)`` is the steady throughput (target: 2 workers >= 1.6x
  one), and ``ray.init`` plus the small run is the fixed start-up cost. During the Ray runs the
  CPU time of this process and of every process it started (raylet, GCS, actors, Ray's helper
  processes) is sampled from /proc: the marginal CPU per frame of each shows where the CPU goes;
* fleet: the throughput a node needs for a fleet's daily video, computed (not measured) from
  the flags, with the CPU cores it would keep busy at the plain loop's measured CPU time per
  frame (CPU time, not wall time: the shared machine's load stretches wall time).

Each of ``--reps`` repetitions runs every configuration in turn (medians reported), so that the
shared machine's changing load hits them alike; the load average is recorded before and after
every measurement. ``mining.json`` keeps one entry per frame size: a run replaces its size's
entry (with ``--force``) and ``mining.md`` shows every size measured, the default size first.

    PYTHONPATH=$PWD python benchmarks/mining.py --frames 128 --out benchmarks/results --force
    PYTHONPATH=$PWD python benchmarks/mining.py --size 256x512 --frames 256 --small 16 --out benchmarks/results --force
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2

from pgn_deploy.benchmark.machine import load_average, machine_info
from pgn_deploy.contract import BadInputError, PGNError, atomic_write_text, make_spec, parse_shape
from pgn_deploy.mining import MineOptions, mine
from pgn_deploy.runtime.runner import Runtime

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "export" / "models" / "demo_synthroad.pth"
DEFAULT_SIZE = "512x1024"  # the deployment resolution of the other benchmarks: the headline of mining.md
CPU_GROUPS = ("driver", "actors", "raylet", "gcs_server", "other Ray processes")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python benchmarks/mining.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default=DEFAULT_SIZE, help=f"frame size HxW (default {DEFAULT_SIZE})")
    parser.add_argument("--frames", type=int, default=64, help="generated frames (default 64)")
    parser.add_argument("--small", type=int, default=16, help="frames of the short Ray runs (default 16)")
    parser.add_argument("--batch", type=int, default=4, help="frames per inference call (default 4)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every measurement (default 3)")
    parser.add_argument("--skip-ray", action="store_true", help="only plain and local")
    parser.add_argument("--vehicles", type=int, default=1000, help="fleet size for the computation (default 1000)")
    parser.add_argument("--hours", type=float, default=8.0, help="recorded hours per vehicle and day (default 8)")
    parser.add_argument("--fps", type=float, default=30.0, help="camera frame rate (default 30)")
    parser.add_argument("--every", type=int, default=10, help="mine every N-th frame (default 10)")
    parser.add_argument("--work", help="folder for the model and frames (default: a temporary one)")
    parser.add_argument("--out", default="benchmarks/results", help="results folder (default benchmarks/results)")
    parser.add_argument("--force", action="store_true", help="replace this size's entry of mining.json and mining.md")
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


class ProcessTreeCpu:
    """CPU seconds (user + system) of this process and every process it started, by
    :data:`CPU_GROUPS`, sampled from /proc every ``interval`` s by a thread (a process that
    ends counts with its last sample); groups with :func:`cpu_by_group` between two :meth:`snapshot` calls."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.tick = interval, os.sysconf("SC_CLK_TCK")
        self.seen: dict[int, tuple[str, float]] = {}
        self.own_cpu = 0.0
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.available = Path("/proc/self/stat").exists()
        if self.available:
            self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            with self.lock:
                self.own_cpu = time.thread_time()
            self.stop.wait(self.interval)

    def sample(self) -> None:
        """Read the CPU time of this process's descendants once."""
        parents, cpu = {}, {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                fields = stat[stat.rindex(")") + 2:].split()
                parents[int(entry)], cpu[int(entry)] = int(fields[1]), (int(fields[11]) + int(fields[12])) / self.tick
        tree, grown = {os.getpid()}, True
        while grown:
            found = {pid for pid, parent in parents.items() if parent in tree} - tree
            tree |= found
            grown = bool(found)
        with self.lock:
            for pid in tree & cpu.keys():
                try:
                    name = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
                except OSError:
                    name = self.seen.get(pid, ("",))[0]
                self.seen[pid] = (name, cpu[pid])

    def snapshot(self) -> dict[int, tuple[str, float]] | None:
        """Every process seen so far: its latest name and cumulative CPU seconds (after a fresh
        sample); the sampler's own thread is taken out of the driver's. ``None`` without /proc."""
        if not self.available:
            return None
        self.sample()
        with self.lock:
            seen = dict(self.seen)
            name, seconds = seen[os.getpid()]
            seen[os.getpid()] = (name, seconds - self.own_cpu)
        return seen

    def close(self) -> None:
        self.stop.set()
        if self.available:
            self.thread.join()


def cpu_by_group(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per :data:`CPU_GROUPS` between two snapshots, each process counted under its
    name at the second (a pooled Ray worker becomes an actor)."""
    groups = dict.fromkeys(CPU_GROUPS, 0.0)
    for pid, (name, seconds) in after.items():
        groups[_cpu_group(pid, name)] += seconds - before.get(pid, (name, 0.0))[1]
    return groups


def _cpu_group(pid: int, name: str) -> str:
    if pid == os.getpid():
        return "driver"
    if "FrameMiner" in name or "MapWorker" in name:
        return "actors"
    return next((group for group in ("raylet", "gcs_server") if group in name), "other Ray processes")


def log(message: str) -> None:
    print(f"[mining bench] {message}", file=sys.stderr, flush=True)


def prepare(work: Path, frames: int, size: tuple[int, int]) -> tuple[Path, Path, float]:
    """The demo model, the frame folder, and a threshold (q0.99 of the map over 4 frames)."""
    from pgn_deploy.export.api import export_model
    from pgn_deploy.synthroad.layouts import write_synthroad

    model = work / "demo.pgn.onnx"
    if not model.exists():
        export_model(CHECKPOINT, model, spec=make_spec(p=0.5, labels="uni", pred=True))
    shutil.rmtree(work / "synthroad", ignore_errors=True)  # exactly ``frames`` frames, none of an earlier run
    write_synthroad(work / "synthroad", frames, seed=21, layouts=["roadanomaly21"], size=size, progress=False)
    folder = work / "synthroad" / "dataset_AnomalyTrack" / "images"
    runtime = Runtime(model, "ort-cpu", intra_op_threads=1)
    import numpy as np

    values = [runtime.run(cv2.imread(str(p)), color="BGR").score().ravel() for p in sorted(folder.glob("*"))[:4]]
    return model, folder, float(np.quantile(np.concatenate(values), 0.99))


def timed(what: str, call, sampler: ProcessTreeCpu | None = None) -> dict[str, Any]:
    before = load_average()
    cpu_before = sampler.snapshot() if sampler else None
    start, cpu = time.perf_counter(), time.process_time()
    value = call()
    seconds = time.perf_counter() - start
    record = {"seconds": seconds, "driver_cpu_s": time.process_time() - cpu, "load_before": before,
              "load_after": load_average()}
    cpu_after = sampler.snapshot() if sampler else None
    if cpu_before and cpu_after:
        record["cpu_s_by_process"] = cpu_by_group(cpu_before, cpu_after)
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


def _plain_half(model: str, files: list[str], batch: int, barrier, results) -> None:
    runtime = Runtime(model, "ort-cpu", intra_op_threads=1, max_batch=batch)
    images = [cv2.imread(path) for path in files]
    runtime.run(images[:batch], color="BGR")  # warm-up
    barrier.wait()
    start = time.time()
    for first in range(0, len(images), batch):
        runtime.run(images[first:first + batch], color="BGR")
    results.put((start, time.time()))


def plain_pair(model: Path, folder: Path, batch: int) -> dict[str, float]:
    """Two processes running :func:`plain_loop`'s loop side by side, each on half the frames
    (started together after loading and decoding): the wall seconds from the first start to the
    last end."""
    context = multiprocessing.get_context("spawn")
    files = [str(p) for p in sorted(folder.iterdir())]
    barrier, results = context.Barrier(2), context.Queue()
    halves = [files[:len(files) // 2], files[len(files) // 2:]]
    workers = [context.Process(target=_plain_half, args=(str(model), half, batch, barrier, results))
               for half in halves]
    for worker in workers:
        worker.start()
    spans = [results.get(timeout=1800) for _ in workers]
    for worker in workers:
        worker.join()
    return {"mining_s": max(end for _, end in spans) - min(start for start, _ in spans)}


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
               "plain_x2": lambda rep: plain_pair(model, folder, args.batch),
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
    sampler = ProcessTreeCpu()
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
                runs[name].append(timed(f"{name}, rep {rep + 1}", functools.partial(call, rep),
                                        sampler if name.startswith("ray") else None))
    finally:
        sampler.close()
        if not args.skip_ray:
            ray.shutdown()
    return data


def summarize(data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Medians over the repetitions; the local engine and two plain loops against one plain loop;
    Ray's marginal rates and its marginal CPU per frame by process."""
    runs = data["runs"]

    def median(name: str, key: str = "mining_s") -> float:
        return statistics.median(run[key] for run in runs[name])

    def paired(name: str) -> list[float]:  # per repetition: against the plain run of the same repetition
        return [other["mining_s"] / plain["mining_s"] for plain, other in zip(runs["plain"], runs[name])]

    plain_s, local_s = median("plain"), median("local")
    local = {"plain_fps": args.frames / plain_s, "local_fps": args.frames / local_s,
             "plain_x2_fps": args.frames / median("plain_x2"),
             "plain_x2_speedup": 1.0 / statistics.median(paired("plain_x2")),
             "plain_ms_per_frame": 1e3 * plain_s / args.frames,
             "plain_cpu_ms_per_frame": 1e3 * median("plain", "mining_cpu_s") / args.frames,
             "local_cpu_ms_per_frame": 1e3 * median("local", "mining_cpu_s") / args.frames,
             "pipeline_cost_of_medians": local_s / plain_s - 1.0,
             "pipeline_cost": statistics.median(paired("local")) - 1.0,
             "pipeline_cost_per_rep": [r - 1.0 for r in paired("local")]}
    if args.skip_ray:
        return {"local": local}
    ray: dict[str, Any] = {"init_s": data["ray_init"]["seconds"], "first_run_s": data["ray_first_run"]["mining_s"]}
    for workers in (1, 2):
        small, every = runs[f"ray{workers}_small"], runs[f"ray{workers}_all"]
        t_small, t_all = median(f"ray{workers}_small"), median(f"ray{workers}_all")
        ray[f"workers_{workers}"] = entry = {
            "small_run_s": t_small, "all_run_s": t_all, "whole_run_fps": args.frames / t_all,
            "marginal_fps": (args.frames - args.small) / (t_all - t_small)}
        if all("cpu_s_by_process" in run for run in small + every):
            entry["marginal_cpu_ms_per_frame"] = {
                group: 1e3 * (statistics.median(r["cpu_s_by_process"][group] for r in every)
                              - statistics.median(r["cpu_s_by_process"][group] for r in small))
                / (args.frames - args.small) for group in CPU_GROUPS}
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


def _pretty(size: str) -> str:
    return size.replace("x", " x ")


def size_section(data: dict[str, Any]) -> list[str]:
    """The Markdown of one frame size's run."""
    m, loc = data["machine"], data["local"]
    lines = [
        f"## {_pretty(data['size'])} frames",
        "",
        f"{m['date_utc']}: {data['frames']} frames, batch {data['batch']}, medians of {data['reps']} repetitions. "
        f"Load average (1, 5, 15 min) {data['load_start']} at the start, {data['load_end']} at the end (2 cores)"
        + (f"; the CPUs were idle {100 * data['idle_share']:.1f} % of the time." if data.get("idle_share") is not None
           else "."),
        "",
        "| what | frames/s | note |",
        "|---|---|---|",
        f"| plain loop of `Runtime.run` (decoded frames) | {loc['plain_fps']:.2f} | "
        f"{loc['plain_ms_per_frame']:.0f} ms per frame |",
        f"| two plain loops side by side (2 processes, half the frames each) | {loc['plain_x2_fps']:.2f} | "
        f"{loc['plain_x2_speedup']:.2f}x one loop: what the 2 cores give 2 busy processes without Ray |",
        f"| `--engine local` (1 decode thread) | {loc['local_fps']:.2f} | pipeline cost "
        f"{100 * loc['pipeline_cost']:+.1f} % (target <= 10 %): median of the repetitions' local/plain ratios "
        f"({', '.join(f'{100 * c:+.0f} %' for c in loc['pipeline_cost_per_rep'])}) |",
        "",
        f"CPU time per frame (all threads of the process, same timed span): plain loop "
        f"{loc['plain_cpu_ms_per_frame']:.1f} ms, local engine {loc['local_cpu_ms_per_frame']:.1f} ms, i.e. "
        f"{100 * (loc['local_cpu_ms_per_frame'] / loc['plain_cpu_ms_per_frame'] - 1):+.1f} % for decoding, "
        "instances and Parquet parts (the plain loop's frames were decoded before timing).",
    ]
    ray = data.get("ray")
    if not ray:
        return lines
    lines += ["", "| what | frames/s | note |", "|---|---|---|"]
    for workers in (1, 2):
        r = ray[f"workers_{workers}"]
        lines.append(f"| `--engine ray`, {workers} worker(s) | {r['marginal_fps']:.2f} marginal, "
                     f"{r['whole_run_fps']:.2f} whole run | run of {data['frames']} frames "
                     f"{r['all_run_s']:.1f} s, of {data['small']} frames {r['small_run_s']:.1f} s |")
    lines += ["", f"- Ray, 2 workers over 1: **{ray['speedup_2_over_1']:.2f}x** (target >= 1.6x); two plain loops "
              f"over one on the same cores: {loc['plain_x2_speedup']:.2f}x",
              f"- Ray's fixed start-up cost: **{ray['fixed_startup_s']:.1f} s** (`ray.init` {ray['init_s']:.1f} s "
              f"+ the first run's {ray['first_run_s']:.1f} s less its frames' steady cost: worker processes, "
              "imports, actor start, model load); each later run in the same Ray pays "
              f"{ray['per_run_fixed_s']:.1f} s (actors, planning)"]
    shares = [ray[f"workers_{w}"].get("marginal_cpu_ms_per_frame") for w in (1, 2)]
    if all(shares):
        lines += ["", "Where the CPU goes: marginal CPU time per frame of each process (ms; the CPU of the run of all "
                  "frames less that of the short run, over the frames between; medians), sampled from /proc:", "",
                  "| process | 1 worker | 2 workers |", "|---|---|---|"]
        lines += [f"| {group} | {shares[0][group]:.1f} | {shares[1][group]:.1f} |" for group in CPU_GROUPS]
        lines.append(f"| all | {sum(shares[0].values()):.1f} | {sum(shares[1].values()):.1f} |")
    return lines


def _ray_shares(doc: dict[str, Any], sizes: list[str]) -> str:
    """A sentence: the share of the marginal CPU per frame outside the actors, per size, 2 workers."""
    shares = []
    for size in sizes:
        cpu = doc["sizes"][size].get("ray", {}).get("workers_2", {}).get("marginal_cpu_ms_per_frame")
        if cpu:
            shares.append(f"{100 * (1 - cpu['actors'] / sum(cpu.values())):.1f} % at {_pretty(size)}")
    return ("Measured share of the CPU per frame spent outside the actors (driver and Ray's processes, 2 workers): "
            + ", ".join(shares) + "." if shares else "")


def to_markdown(doc: dict[str, Any]) -> str:
    """mining.md from every size of mining.json, the default size first."""
    sizes = sorted(doc["sizes"], key=lambda size: (size != DEFAULT_SIZE, -parse_shape(size)[0]))
    first = doc["sizes"][sizes[0]]
    lines = [
        "# pgn-mine throughput",
        "",
        f"`python benchmarks/mining.py` on {first['machine']['cpu']}, {first['machine']['usable_cores']} cores: "
        "SynthRoad frames (JPEG), demo model (p = 0.5, uni, pred), ONNX Runtime CPU, 1 inference thread everywhere; "
        "each repetition runs every configuration in turn. Frame sizes: "
        + ", ".join(_pretty(size) for size in sizes) + ". "
        f"{_pretty(DEFAULT_SIZE)} is the deployment resolution of the other benchmarks and what a fleet's cameras "
        "record: a frame's inference costs about four times that of a 256 x 512 frame (the model's training size, "
        "the earlier default here) while Ray's cost per task and per second does not grow with the pixels, so a "
        "run at 256 x 512 overstates Ray's share. The targets are read at "
        f"{_pretty(DEFAULT_SIZE)}; the other sizes stay beside it. " + _ray_shares(doc, sizes),
        "",
        "The machine is shared with other engineers' work: every run's load is in mining.json. Parallel speed-ups "
        "need idle cores: read the ratios with the load in mind.",
        "",
    ]
    for size in sizes:
        lines += [*size_section(doc["sizes"][size]), ""]
    f = first["fleet"]
    lines += [
        "## A fleet's daily video (a computation from the measured cost, not a measurement)",
        "",
        f"{f['vehicles']} vehicles x {f['hours_per_day']:g} h/day x {f['fps']:g} fps, every {f['every']}-th frame "
        f"mined: {f['frames_per_day'] / 1e6:.1f} million frames a day = **{f['needed_fps_over_24h']:.0f} frames/s** "
        f"sustained over 24 h. At the plain loop's measured {f['cpu_ms_per_frame_measured']:.0f} ms of CPU time per "
        f"frame (one thread, {_pretty(first['size'])}, this small model) that is "
        f"{f['cpu_cores_at_measured_cost']:.0f} CPU cores busy around the clock, plus decoding. One GPU node doing "
        f"the whole job must sustain {f['needed_fps_over_24h']:.0f} frames/s, decoding included (or N nodes "
        f"{f['needed_fps_over_24h']:.0f}/N each: Ray spreads the actors). No GPU was measured here; the GPU rate "
        "of a given model comes from `pgn-bench` on that GPU.",
        "",
        "## The same command on a cluster",
        "",
        "`ray start --head` on one node and `ray start --address HEAD:6379` on the others (or a KubeRay "
        "`RayCluster`, with `pgn-mine` as a `RayJob`'s entrypoint), then `pgn-mine ... --engine ray --ray-address "
        "auto --workers N --threads T`: N actors of T CPUs each, spread over the nodes, every node reading the "
        "model and the sources and writing `--out` on shared storage. With GPUs, `--num-gpus 1` (or 0.5 to put two "
        "actors on one GPU) and `--backend ort-cuda`/`ort-trt`/`trt`; a TensorRT plan is specific to a GPU model "
        "and TensorRT version, so build one per node type (`pgn-build`) or let `ort-trt` build on each node. "
        "Details: docs/mining.md.",
    ]
    return "\n".join(lines) + "\n"


def earlier_sizes(out: Path, force: bool) -> dict[str, Any]:
    """The entries of an existing mining.json (which needs ``force``: this run replaces its
    size's entry and keeps the others; a file without sizes is replaced whole)."""
    path = out / "mining.json"
    if not path.exists():
        return {}
    if not force:
        raise BadInputError(f"{path} exists; pass --force to replace this size's entry")
    return json.loads(path.read_text()).get("sizes", {})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        atomic_write_text(out / "mining.md", to_markdown(json.loads(Path(args.from_json).read_text())), force=True)
        return 0
    try:
        height, width = parse_shape(args.size, rank=2, what="--size")
        size, sizes = f"{height}x{width}", earlier_sizes(out, args.force)
    except PGNError as exc:
        print(f"{build_parser().prog}: error: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="pgn-mine-bench-") as temp:
        work = Path(args.work) if args.work else Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="runs-", dir=temp))
        data: dict[str, Any] = {"machine": machine_info(), "size": size, "frames": args.frames, "small": args.small,
                                "batch": args.batch, "reps": args.reps, "load_start": load_average()}
        ticks = cpu_ticks()
        model, folder, threshold = prepare(work, args.frames, (height, width))
        data["threshold"] = threshold
        data["measurements"] = measure(model, folder, threshold, args, scratch)
        data.update(summarize(data["measurements"], args))
        data["fleet"] = fleet(args, data["local"]["plain_cpu_ms_per_frame"])
        data["load_end"] = load_average()
        data["idle_share"] = idle_share(ticks, cpu_ticks())
    doc = {"sizes": {**sizes, size: data}}
    atomic_write_text(out / "mining.json", json.dumps(doc, indent=2, sort_keys=True) + "\n", force=True)
    atomic_write_text(out / "mining.md", to_markdown(doc), force=True)
    print(to_markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
