"""``python -m benchmarks``: the project's latency study (see ``benchmarks/NOTES.md``)."""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

DEFAULT_MODELS = ("demo", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "deeplabv3_resnet50")
DEFAULT_SIZES = "256x512,512x1024,1024x2048"
QUICK = {"models": "demo,deeplabv3_mobilenet_v3_large", "sizes": "128x256", "budget": 2.0}


def build_parser() -> argparse.ArgumentParser:
    from benchmarks.overhead import HEADLINE_BUDGET_FACTOR
    from benchmarks.study import SECTIONS
    from pgn_deploy.benchmark.timing import CLOCKS
    from pgn_deploy.runtime.backends.base import backend_names

    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=(
        "PGN latency study: grafted vs plain ONNX (one/ten maps, output/classifier size, resolution output), "
        "PyTorch eager PGN, MC dropout (naive and optimized), per-pixel backprop, peak memory, scaling, fp16. "
        "Writes latency_<name>.json/.md and PNG plots."))
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated (default: all four)")
    parser.add_argument("--sizes", default=DEFAULT_SIZES,
                        help=f"HxW list for the overhead sweep (default {DEFAULT_SIZES})")
    parser.add_argument("--focus", default="512x1024",
                        help="size of the per-method comparisons and memory (default 512x1024)")
    parser.add_argument("--crops", default="128x256,512x1024", help="input crops for per-pixel backprop")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"subset of {','.join(SECTIONS)}")
    parser.add_argument("--variants", default="all", help="grafted variants of the overhead sweep: all or NAME,... "
                        "(one, ten, one_keep, ten_keep, one_output, ten_output)")
    parser.add_argument("--backend", default="ort-cpu", choices=backend_names())
    parser.add_argument("--threads", type=int, default=2, help="CPU intra-op threads, ONNX Runtime and PyTorch")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall",
                        help="wall: elapsed time; cpu: CPU time of the process "
                             "(steadier on a shared machine, use with --threads 1)")
    parser.add_argument("--torch-device", default="cpu", help="device of the PyTorch methods (cpu, cuda)")
    parser.add_argument("--budget", type=float, default=20.0,
                        help=f"seconds of timing per comparison (the headline gets {HEADLINE_BUDGET_FACTOR:g}x)")
    parser.add_argument("--max-rounds", type=int, default=60,
                        help="most interleaved rounds per comparison (default 60)")
    parser.add_argument("--work", help="folder for the exported models, reused between runs (default: a temporary one)")
    parser.add_argument("--out", default="benchmarks/results", help="results folder (default benchmarks/results)")
    parser.add_argument("--name", default="study", help="results are latency_<name>.json/.md/_*.png (default study)")
    parser.add_argument("--force", action="store_true", help="overwrite existing result files")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK['models']} at {QUICK['sizes']}, short budget")
    return parser


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    from pgn_deploy.contract import parse_shape

    return tuple(parse_shape(item, 2, "--shapes") for item in text.split(",") if item.strip())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from benchmarks.common import Settings, log
    from benchmarks.models import BUILDERS, VARIANTS
    from benchmarks.report import write
    from benchmarks.study import SECTIONS, Plan, run_study

    if args.quick:
        args.models, args.sizes, args.budget = QUICK["models"], QUICK["sizes"], QUICK["budget"]
        args.focus, args.crops = QUICK["sizes"], QUICK["sizes"]
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    variants = (tuple(VARIANTS) if args.variants == "all"
                else tuple(v.strip() for v in args.variants.split(",") if v.strip()))
    bad = [m for m in models if m not in BUILDERS] + [s for s in sections if s not in SECTIONS]
    bad += [v for v in variants if v not in VARIANTS]
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.name):
        bad.append(f"--name {args.name!r} (letters, digits, _ . - only)")
    out = Path(args.out)
    if bad or not out.is_dir():
        print(f"python -m benchmarks: error: unknown {', '.join(bad)}" if bad else
              f"python -m benchmarks: error: {out} is not a folder", file=sys.stderr)
        return 2
    plan = Plan(models, _sizes(args.sizes), _sizes(args.focus)[0], _sizes(args.crops), sections, variants)
    settings = Settings(backend=args.backend, threads=args.threads, torch_device=args.torch_device,
                        budget_s=args.budget, max_rounds=args.max_rounds, clock=args.clock)
    with tempfile.TemporaryDirectory(prefix="pgn_study_") as tmp:
        doc = run_study(plan, settings, Path(args.work) if args.work else Path(tmp))
    for path in write(doc, out, args.name, args.force):
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
