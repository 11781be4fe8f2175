"""Train the shipped demo model (a small DeepLabV3+) from scratch on SynthRoad, on the CPU.

    .venv/bin/python export/train_demo.py --out export/models/demo_synthroad.pth

Frames are generated on the fly (no data on disk). Writes the checkpoint (SDK convention,
loads with ``torch.load(weights_only=True)``) and, beside it, ``<name>.log`` with the training
log, the final validation IoU per class, the mIoU and the wall time. Both files are written
atomically; existing ones are kept unless ``--force``.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import shlex
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a CPU shared with other jobs, spinning
# threads made steps several times slower. Must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from pgn_deploy.contract import PGNError, atomic_write_text, check_output_path  # noqa: E402
from pgn_deploy.models.demo import DemoDeepLabV3Plus  # noqa: E402
from pgn_deploy.models.demo_training import (  # noqa: E402
    TrainConfig,
    make_checkpoint,
    save_checkpoint,
    train,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="checkpoint path (.pth)")
    p.add_argument("--seed", type=int, default=d.seed, help="weights, crops and training frames")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--crop", type=int, nargs=2, default=d.crop, metavar=("H", "W"))
    p.add_argument("--scale", type=float, nargs=2, default=d.scale, metavar=("MIN", "MAX"),
                   help="random rescale of the frames before cropping")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (cosine decay)")
    p.add_argument("--pool", type=int, default=d.pool, help="frames kept in the training pool")
    p.add_argument("--refresh", type=int, default=d.refresh, help="new frames per step")
    p.add_argument("--val-frames", type=int, default=d.val_frames)
    p.add_argument("--val-every", type=int, default=d.val_every, help="steps between validations (0: end only)")
    p.add_argument("--class-weight-power", type=float, default=d.class_weight_power,
                   help="loss weights (median freq / freq) ** POWER; 0: plain cross-entropy")
    p.add_argument("--arch-kwargs", type=json.loads, default={}, metavar="JSON",
                   help='DemoDeepLabV3Plus arguments, e.g. \'{"dropout": 0.1, "head": 32}\'')
    p.add_argument("--fp32", action="store_true", help="train in float32 (default: bfloat16 autocast)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="processes generating training frames ahead (0: in the training loop)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log_path = args.out.with_suffix(".log")
    try:
        check_output_path(args.out, args.force)
        check_output_path(log_path, args.force)
    except PGNError as exc:
        print(f"train_demo: error: {exc}", file=sys.stderr)
        return 2
    try:
        inspect.signature(DemoDeepLabV3Plus).bind(**args.arch_kwargs)
    except TypeError as exc:
        print(f"train_demo: error: --arch-kwargs: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    config = TrainConfig(
        seed=args.seed, steps=args.steps, batch=args.batch, crop=tuple(args.crop), scale=tuple(args.scale), lr=args.lr,
        pool=args.pool, refresh=args.refresh,
        class_weight_power=args.class_weight_power, val_frames=args.val_frames, val_every=args.val_every,
        bf16=not args.fp32, workers=args.workers, arch_kwargs=args.arch_kwargs,
    )
    command = shlex.join([".venv/bin/python", "export/train_demo.py", *(sys.argv[1:] if argv is None else argv)])
    lines: list[str] = []

    def log(line: str) -> None:
        stamped = f"[{time.strftime('%H:%M:%S')}] {line}"
        lines.append(stamped)
        print(stamped, flush=True)

    log(f"command: {command}")
    log(f"config: {config}")
    log(f"torch {torch.__version__}, threads={torch.get_num_threads()}")
    model, result, wall = train(config, log)
    for line in result.lines():
        log(line)
    log(f"wall time: {wall:.1f} s ({wall / 60:.1f} min)")
    checkpoint = make_checkpoint(model, config, result, wall, command)
    save_checkpoint(checkpoint, args.out, args.force)
    log(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    atomic_write_text(log_path, "\n".join(lines) + "\n", args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
