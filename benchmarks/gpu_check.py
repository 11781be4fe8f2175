"""GPU check, prepared for a machine with only PyTorch and CUDA: eager PGN vs the plain forward, and
the reference math on CUDA against float64 on the CPU.

Run from the repository root (nothing else of the project needs installing; torchvision is used
when present)::

    python benchmarks/gpu_check.py --out benchmarks/results

It writes ``gpu_check.json`` and ``gpu_check.md`` (with the GPU's name) and takes well under five
minutes on a current GPU:

1. **Latency** at 1 x 3 x 1024 x 2048 on CUDA, fp32 and fp16 (``module.half()``), for the demo
   model (the shipped checkpoint) and torchvision's deeplabv3_mobilenet_v3_large (random
   weights, 19 classes; skipped without torchvision): the plain forward against eager PGN the
   published code's way (forward hooks on the 1x1 classifier conv capture ``psi`` and the
   logits, then the closed form of :func:`pgn_deploy.reference.pgn_maps` for p = 0.5, labels
   uni and oh, maps resized to the input size). In fp16 the network runs in half precision and
   the PGN maps are computed in float32 from the captured tensors (what the grafted fp16 model
   does). Timed with CUDA events, plain and PGN interleaved, median over ``--iters`` calls.
2. **Reference math**: :func:`pgn_deploy.reference.pgn_maps` on CUDA in float32 against the same
   function in float64 on the CPU, on seeded random tensors (paper and exact forms, p in {0.5, 1,
   2}) and on the demo model's own captured ``psi``/logits at 1024 x 2048; reported as the
   relative error ``max |a - b| / max |b|`` per map (float32 rounding is about 1e-6).

``--device cpu --size 128x256`` runs the same code on a CPU (a smoke test of the script; its
results are not a GPU result and are marked with the device).
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pgn_deploy.contract import PGNSpec  # noqa: E402  (torch-free, stdlib only)
from pgn_deploy.reference import pgn_maps  # noqa: E402  (torch only)

NUM_CLASSES = 19
SPEC = PGNSpec(p=(0.5,), labels=("uni", "oh"))
DEMO_CHECKPOINT = REPO / "export" / "models" / "demo_synthroad.pth"


def load_demo() -> torch.nn.Module:
    """The shipped demo checkpoint (its ``arch``/``arch_kwargs``/``state_dict``)."""
    from pgn_deploy.models.demo import DemoDeepLabV3Plus

    checkpoint = torch.load(DEMO_CHECKPOINT, map_location="cpu", weights_only=True)
    module = DemoDeepLabV3Plus(**(checkpoint.get("arch_kwargs") or {}))
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()


def load_deeplabv3() -> torch.nn.Module | None:
    """torchvision's deeplabv3_mobilenet_v3_large with seeded random weights, or None without torchvision."""
    try:
        from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large
    except ImportError:
        return None
    torch.manual_seed(0)
    return deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES,
                                        aux_loss=False).eval()


def logits_of(result: Any) -> torch.Tensor:
    """The logits of a torchvision dict result or of a plain tensor result."""
    return result["out"] if isinstance(result, dict) else result


class EagerPGN:
    """``module(x)`` then the PGN maps from hooks on the 1x1 classifier conv(s) (published code's way)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.active = False  # the plain forward keeps nothing
        self.captured: list[tuple[torch.Tensor, torch.Tensor]] = []
        convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)
                 and m.kernel_size == (1, 1) and m.out_channels == NUM_CLASSES]
        if not convs:
            raise SystemExit("no 1x1 classifier conv with 19 outputs found")
        for conv in convs:
            conv.register_forward_hook(self._hook)

    def _hook(self, _module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if self.active:
            self.captured.append((inputs[0], output))

    def tensors(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(logits, features at the classifier's largest resolution, summed head logits), float32."""
        self.captured.clear()
        self.active = True
        try:
            logits = logits_of(self.module(x))
        finally:
            self.active = False
        size = max((z.shape[-2:] for _, z in self.captured), key=lambda s: s[0] * s[1])

        def resize(t: torch.Tensor) -> torch.Tensor:
            t = t.float()
            return t if t.shape[-2:] == size else F.interpolate(t, size=size, mode="bilinear", align_corners=False)

        features, head = [resize(psi) for psi, _ in self.captured], sum(resize(z) for _, z in self.captured)
        self.captured.clear()
        return logits, features, head

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, features, head = self.tensors(x)
        return logits, pgn_maps(features, head, SPEC, output_size=tuple(x.shape[-2:]))


def timed(calls: dict[str, Any], iters: int, device: torch.device) -> dict[str, list[float]]:
    """Milliseconds per call, the calls interleaved; CUDA events on a GPU, perf_counter on a CPU."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():  # warm-up (cuDNN algorithm choice, allocator)
        for _ in range(3):
            call()
    for _ in range(iters):
        for name, call in calls.items():
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                call()
                end.record()
                torch.cuda.synchronize()
                samples[name].append(start.elapsed_time(end))
            else:
                tick = time.perf_counter()
                call()
                samples[name].append(1e3 * (time.perf_counter() - tick))
    return samples


def latency(name: str, eager: EagerPGN, device: torch.device, size: tuple[int, int],
            iters: int) -> list[dict[str, Any]]:
    """Plain forward vs eager PGN in fp32 and fp16 for one model (moved to ``device`` in place)."""
    rows = []
    for dtype in (torch.float32, torch.float16):
        if device.type == "cpu" and dtype == torch.float16:
            continue  # half convolutions on a CPU say nothing about a GPU
        net = eager.module.to(device=device, dtype=dtype)
        x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)

        def plain() -> None:
            with torch.inference_mode():
                logits_of(net(x))

        def pgn() -> None:
            with torch.inference_mode():
                eager(x)

        samples = timed({"plain": plain, "eager_pgn": pgn}, iters, device)
        medians = {k: statistics.median(v) for k, v in samples.items()}
        rows.append({"model": name, "dtype": str(dtype).removeprefix("torch."), "size": list(size),
                     "median_ms": medians, "iters": iters,
                     "eager_pgn_over_plain": medians["eager_pgn"] / medians["plain"]})
    eager.module.float()
    return rows


def relative_error(got: torch.Tensor, reference: torch.Tensor) -> float:
    """``max |got - reference| / max |reference|`` in float64."""
    got, reference = got.double().cpu(), reference.double().cpu()
    scale = float(reference.abs().max())
    return float((got - reference).abs().max()) / scale if scale else float((got - reference).abs().max())


def math_check(device: torch.device, eager: EagerPGN, size: tuple[int, int]) -> list[dict[str, Any]]:
    """pgn_maps on ``device`` in float32 against float64 on the CPU (module doc, item 2)."""
    rows = []
    gen = torch.Generator().manual_seed(0)
    features = [torch.randn(1, 64, 64, 128, generator=gen).relu() * 3]
    head = torch.randn(1, NUM_CLASSES, 64, 128, generator=gen) * 4
    cases = [("random", form, PGNSpec(p=(0.5, 1.0, 2.0), labels=("uni", "oh"), form=form), features, head)
             for form in ("paper", "exact")]
    eager.module.to(device=device, dtype=torch.float32)
    with torch.inference_mode():
        x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1)).to(device)
        _, captured, captured_head = eager.tensors(x)
    cases.append(("demo captured psi/logits", "paper", PGNSpec(p=(0.5, 1.0, 2.0), labels=("uni", "oh")),
                  [f.cpu() for f in captured], captured_head.cpu()))
    for source, form, spec, psi, logits in cases:
        out = tuple(logits.shape[-2:]) if source == "random" else size
        with torch.inference_mode():
            reference = pgn_maps([f.double() for f in psi], logits.double(), spec, output_size=out)
            got = pgn_maps([f.to(device).float() for f in psi], logits.to(device).float(), spec, output_size=out)
        for name in reference:
            rows.append({"source": source, "form": form, "map": name,
                         "relative_error": relative_error(got[name], reference[name])})
    return rows


def device_info(device: torch.device) -> dict[str, Any]:
    """GPU name and capability (or the CPU), PyTorch and CUDA versions, UTC time."""
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
                            "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}",
                 "memory_gib": round(props.total_memory / 2**30, 1), "cudnn": torch.backends.cudnn.version()}
    return info


def markdown(doc: dict[str, Any]) -> str:
    """The committed summary."""
    info = doc["device"]
    where = info.get("gpu", "CPU (smoke test, not a GPU result)")
    lines = [f"# GPU check: {where}", "",
             f"PyTorch {info['torch']}, CUDA {info['cuda']}, {info['date_utc']}; {doc['seconds']:.0f} s in all.", "",
             "## Eager PGN vs the plain forward (median ms)", "",
             "| model | dtype | size | plain | eager PGN | ratio |", "|---|---|---|---|---|---|"]
    for row in doc["latency"]:
        ms = row["median_ms"]
        lines.append(f"| {row['model']} | {row['dtype']} | {row['size'][0]}x{row['size'][1]} | {ms['plain']:.2f} | "
                     f"{ms['eager_pgn']:.2f} | {row['eager_pgn_over_plain']:.2f} |")
    lines += ["", "## Reference math: float32 on the device vs float64 on the CPU", "",
              "| source | form | map | relative error |", "|---|---|---|---|"]
    lines += [f"| {r['source']} | {r['form']} | {r['map']} | {r['relative_error']:.2e} |" for r in doc["math"]]
    lines += ["", *[f"- {note}" for note in doc["notes"]]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/gpu_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md (created)")
    parser.add_argument("--device", default="cuda", help="torch device (default cuda; cpu for a smoke test)")
    parser.add_argument("--size", default="1024x2048", help="input HxW (default 1024x2048)")
    parser.add_argument("--iters", type=int, default=20, help="timed calls per variant (default 20)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: error: CUDA is not available to PyTorch on this machine", file=sys.stderr)
        return 2
    height, width = (int(v) for v in args.size.lower().split("x"))
    torch.backends.cudnn.benchmark = True
    start = time.time()
    notes = []
    models = {"demo": EagerPGN(load_demo())}
    deeplab = load_deeplabv3()
    if deeplab is None:
        notes.append("torchvision is not installed: deeplabv3_mobilenet_v3_large was skipped")
    else:
        models["deeplabv3_mobilenet_v3_large (random weights)"] = EagerPGN(deeplab)
    rows = [row for name, eager in models.items() for row in latency(name, eager, device, (height, width),
                                                                      args.iters)]
    math = math_check(device, models["demo"], (height, width))
    notes.append("fp16: the network in half precision (module.half()), the PGN maps in float32 from the captured "
                 "tensors; ratio = eager PGN / plain forward")
    doc = {"device": device_info(device), "latency": rows, "math": math, "notes": notes,
           "seconds": round(time.time() - start, 1)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "gpu_check.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
