"""``pgn-build``: a grafted ONNX model -> a strongly typed TensorRT plan plus its sidecar JSON.

The network's precision is what the ONNX file says (TensorRT 10.12 deprecated weakly typed
networks, TensorRT 11 removed them with the FP16/BF16 builder flags): build an fp16 plan from
the fp16 ONNX that :func:`pgn_deploy.engines.precision.convert_precision` writes, an INT8 or
FP8 plan from the Q/DQ ONNX of :func:`pgn_deploy.engines.quantize.quantize_precision` (explicit
quantization: no INT8/FP8 builder flag, the Q/DQ nodes say it; their layout is checked with
:func:`pgn_deploy.engines.lint.check_quantization` before TensorRT is imported). Parsing,
configuration and building go through Polygraphy's TensorRT loaders; this module adds the
optimization profile (one min/opt/max range per dynamic input), the checks that fail early
with one clear line (no tensorrt, no GPU, TensorRT < 10, a bad ``--shapes``), and the atomic
writing of ``NAME.plan`` and ``NAME.plan.json``.

Everything up to the TensorRT import is plain Python and runs (and is tested) on any host.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pgn_deploy.contract import (
    BadInputError,
    Metadata,
    UnsupportedModelError,
    atomic_write,
    atomic_write_text,
    check_output_path,
    file_sha256,
    load_onnx,
    parse_shape,
    read_metadata,
)
from pgn_deploy.runtime.backends.plan_sidecar import PlanSidecar, sidecar_path, tensorrt_module

DEFAULT_ENGINE_DIR = Path("engines")
DEFAULT_MAX_BATCH = 8


@dataclasses.dataclass(frozen=True)
class ShapeRange:
    """min/opt/max shapes of one input in an optimization profile."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_json(self) -> dict[str, list[int]]:
        """``{"min": [...], "opt": [...], "max": [...]}``, one int per dimension."""
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclasses.dataclass
class BuildReport:
    """What :func:`build_plan` wrote and how long TensorRT took (seconds)."""

    plan: Path
    sidecar: Path
    info: PlanSidecar
    seconds: float

    def to_text(self) -> str:
        """What ``pgn-build`` prints: the plan, where it runs and its sidecar."""
        gpu = self.info.gpu
        return (f"{self.plan}: TensorRT {self.info.tensorrt_version}, {gpu.name} (sm {gpu.compute_capability}), "
                f"{self.info.metadata.precision}, built in {self.seconds:.1f} s; sidecar {self.sidecar}")

    def to_json(self) -> dict[str, Any]:
        """Plan and sidecar paths (strings), the build time in ``seconds`` (rounded to ms) and the
        sidecar's fields, as a JSON-ready dict."""
        return {"plan": str(self.plan), "sidecar": str(self.sidecar), "seconds": round(self.seconds, 3),
                **self.info.to_json()}


# --------------------------------------------------------------------------- shapes


def trtexec_shape_specs(min_shapes: str | None, opt_shapes: str | None, max_shapes: str | None) -> list[str]:
    """trtexec's ``--minShapes/--optShapes/--maxShapes`` (``name:1x3x256x256,name2:...``) as ``--shapes`` specs.

    Every input named in one of the three must be named in all three; returns ``NAME:MIN/OPT/MAX``
    strings for :func:`parse_shape_specs`. No flag given: ``[]``.
    """
    given = {"--minShapes": min_shapes, "--optShapes": opt_shapes, "--maxShapes": max_shapes}
    if not any(given.values()):
        return []
    tables: dict[str, dict[str, str]] = {}
    for flag, text in given.items():
        if not text:
            raise BadInputError(f"{flag} is missing: trtexec-style shapes need --minShapes, --optShapes "
                                "and --maxShapes")
        table: dict[str, str] = {}
        for item in text.split(","):
            name, sep, shape = item.strip().rpartition(":")
            if not sep or not name:
                raise BadInputError(f"{flag} {item!r}: expected NAME:SHAPE, e.g. input:1x3x512x512")
            table[name.strip("'\"")] = shape
        tables[flag] = table
    names = list(tables["--minShapes"])
    if any(set(t) != set(names) for t in tables.values()):
        raise BadInputError("--minShapes, --optShapes and --maxShapes must name the same inputs")
    return [f"{n}:{tables['--minShapes'][n]}/{tables['--optShapes'][n]}/{tables['--maxShapes'][n]}" for n in names]


def parse_shape_specs(specs: Sequence[str]) -> dict[str, ShapeRange]:
    """Parse ``--shapes NAME:MIN/OPT/MAX`` values (``input:1x3x256x256/1x3x512x512/4x3x1024x1024``).

    The three shapes must have one rank and satisfy min <= opt <= max in every dimension.
    """
    ranges: dict[str, ShapeRange] = {}
    for spec in specs:
        name, sep, shapes = spec.rpartition(":")
        parts = shapes.split("/")
        if not sep or not name or len(parts) != 3:
            raise BadInputError(f"--shapes {spec!r}: expected NAME:MIN/OPT/MAX, "
                                "e.g. input:1x3x256x256/1x3x512x512/4x3x1024x1024")
        low, opt, high = (parse_shape(p, what=f"--shapes {name}") for p in parts)
        if not len(low) == len(opt) == len(high):
            raise BadInputError(f"--shapes {name}: min, opt and max must have the same rank")
        if not all(a <= b <= c for a, b, c in zip(low, opt, high)):
            raise BadInputError(f"--shapes {name}: need min <= opt <= max in every dimension")
        if name in ranges:
            raise BadInputError(f"--shapes {name} is given twice")
        ranges[name] = ShapeRange(low, opt, high)
    return ranges


def _graph_inputs(model: Any) -> dict[str, list[int | str | None]]:
    """Graph inputs (not initializers) -> dims: an int, a symbol (dim_param) or None."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims: list[int | str | None] = []
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            else:
                dims.append(dim.dim_param or None)
        inputs[value.name] = dims
    return inputs


def plan_profile(model: Any, meta: Metadata, given: dict[str, ShapeRange]) -> dict[str, ShapeRange]:
    """The optimization profile: a min/opt/max range for every graph input.

    ``given`` (from ``--shapes``) wins; a dimension whose symbol (``dim_param``) already got a
    range elsewhere reuses it (the ``pgn_gt`` label map shares N, H, W with the image); the
    batch dimension of the image input defaults to 1/1/8 and its height and width to the
    export size in the metadata. Any other dynamic dimension needs ``--shapes``.
    """
    inputs = _graph_inputs(model)
    unknown = sorted(set(given) - set(inputs))
    if unknown:
        raise BadInputError(f"--shapes names {', '.join(unknown)}, not an input of the model "
                            f"(inputs: {', '.join(inputs)})")
    symbols: dict[str, tuple[int, int, int]] = {}
    profile: dict[str, ShapeRange] = {}

    def learn(name: str, shape: ShapeRange) -> None:
        dims = inputs[name]
        if len(dims) != len(shape.min):
            raise BadInputError(f"--shapes {name}: rank {len(shape.min)}, the input has rank {len(dims)}")
        for axis, dim in enumerate(dims):
            triple = (shape.min[axis], shape.opt[axis], shape.max[axis])
            if isinstance(dim, int) and triple != (dim, dim, dim):
                raise BadInputError(f"--shapes {name}: dimension {axis} is fixed to {dim} in the model")
            if isinstance(dim, str):
                symbols.setdefault(dim, triple)
        profile[name] = shape

    def default_dim(name: str, axis: int, dim: int | str | None) -> tuple[int, int, int]:
        if isinstance(dim, int):
            return dim, dim, dim
        if isinstance(dim, str) and dim in symbols:
            return symbols[dim]
        if name == meta.input.name and axis == 0:
            return 1, 1, DEFAULT_MAX_BATCH
        if name == meta.input.name and axis in (2, 3) and meta.input.size:
            size = meta.input.size[axis - 2]
            return size, size, size
        shown = "x".join(str(d) if isinstance(d, int) else (d or "?") for d in inputs[name])
        raise BadInputError(
            f"input {name!r} ({shown}) has a dynamic dimension {axis} with no default; give "
            f"--shapes {name}:MIN/OPT/MAX (e.g. 1x3x256x256/1x3x512x512/4x3x1024x1024)"
        )

    for name, shape in given.items():
        learn(name, shape)
    order = sorted(inputs, key=lambda n: n != meta.input.name)  # the image first: others share its symbols
    for name in order:
        if name in profile:
            continue
        triples = [default_dim(name, axis, dim) for axis, dim in enumerate(inputs[name])]
        learn(name, ShapeRange(*(tuple(t[i] for t in triples) for i in range(3))))
    return {name: profile[name] for name in inputs}


# --------------------------------------------------------------------------- build
def default_plan_path(model_path: str | os.PathLike[str]) -> Path:
    """``engines/NAME.plan`` for ``.../NAME.pgn.onnx`` (or ``NAME.onnx``)."""
    name = Path(model_path).name
    for suffix in (".pgn.onnx", ".onnx"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return DEFAULT_ENGINE_DIR / f"{name}.plan"


def build_plan(
    model_path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    shapes: Sequence[str] = (),
    workspace_mib: int | None = None,
    timing_cache: str | os.PathLike[str] | None = None,
    tf32: bool = True,
    force: bool = False,
) -> BuildReport:
    """Build ``model_path`` (a grafted ONNX file) into a TensorRT plan and write its sidecar.

    ``out`` defaults to ``engines/NAME.plan`` (the folder is created); ``shapes``: ``--shapes``
    values; ``workspace_mib``: the builder's workspace memory pool limit; ``timing_cache``: a
    tactic timing cache file read if present and updated after the build; ``tf32=False``
    forbids TF32 in float32 layers. Nothing is written unless the build succeeds; an existing
    plan is replaced only with ``force``.
    """
    model_path = Path(model_path)
    model = load_onnx(model_path, load_weights=False)
    meta = read_metadata(model)
    profile = plan_profile(model, meta, parse_shape_specs(shapes))
    check_explicit_quantization(model, meta)
    if workspace_mib is not None and workspace_mib <= 0:
        raise BadInputError(f"--workspace must be a positive number of MiB, got {workspace_mib}")
    plan = Path(out) if out is not None else default_plan_path(model_path)
    make_folder = out is None and not plan.parent.exists()  # the default engines/ is created
    if not make_folder:
        check_output_path(plan, force)
        check_output_path(sidecar_path(plan), force)

    trt = tensorrt_module()
    from pgn_deploy.runtime.backends.cuda import current_gpu

    gpu = current_gpu()
    check_gpu_precision(meta.precision, gpu.compute_capability)
    flags = {
        "strongly_typed": True,
        "precision": meta.precision,
        "tf32": tf32,
        "workspace_mib": workspace_mib,
        "timing_cache": str(timing_cache) if timing_cache else None,
    }
    start = time.perf_counter()
    engine = _build_engine_bytes(trt, model_path, profile, workspace_mib, timing_cache, tf32)
    seconds = time.perf_counter() - start
    info = PlanSidecar(
        metadata=meta,
        tensorrt_version=trt.__version__,
        gpu=gpu,
        onnx_file=model_path.name,
        onnx_sha256=file_sha256(model_path),
        profiles={name: shape.to_json() for name, shape in profile.items()},
        flags=flags,
    )
    if make_folder:
        plan.parent.mkdir(parents=True, exist_ok=True)
    _write_plan(plan, bytes(engine), info, force)
    return BuildReport(plan=plan, sidecar=sidecar_path(plan), info=info, seconds=seconds)


FP8_MIN_CAPABILITY = (8, 9)
"""TensorRT runs FP8 from compute capability 8.9 (Ada) on: Hopper, Blackwell."""


def check_explicit_quantization(model: Any, meta: Metadata) -> None:
    """A Q/DQ model whose layout TensorRT's explicit quantization rejects fails here in one line
    (the first ``qdq`` error of :func:`pgn_deploy.engines.lint.check_quantization`)."""
    from pgn_deploy.engines.lint import check_quantization

    errors = [f.message for f in check_quantization(model, meta) if f.severity == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more; run pgn-lint)" if len(errors) > 1 else ""
        raise UnsupportedModelError(f"the Q/DQ layout does not fit TensorRT: {errors[0]}{more}")


def check_gpu_precision(precision: str, compute_capability: str) -> None:
    """FP8 plans need a GPU of compute capability 8.9 or newer."""
    if precision != "fp8":
        return
    major, _, minor = compute_capability.partition(".")
    if (int(major), int(minor or 0)) < FP8_MIN_CAPABILITY:
        raise UnsupportedModelError(
            f"FP8 plans need compute capability {'.'.join(map(str, FP8_MIN_CAPABILITY))} or newer (Ada, Hopper, "
            f"Blackwell); this GPU has {compute_capability}: build the int8 or fp16 model instead")


def _build_engine_bytes(trt: Any, model_path: Path, profile: dict[str, ShapeRange],
                        workspace_mib: int | None, timing_cache: Any, tf32: bool) -> Any:
    """Parse, configure and build through Polygraphy; TensorRT's errors become one PGNError."""
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, Profile
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    trt_profile = Profile()
    for name, shape in profile.items():
        trt_profile.add(name, min=shape.min, opt=shape.opt, max=shape.max)
    # TensorRT 10 opts in with the STRONGLY_TYPED creation flag; TensorRT 11 networks are
    # always strongly typed (the flag is accepted and ignored there, if present at all).
    strongly_typed = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    config = CreateConfig(
        tf32=tf32,
        profiles=[trt_profile],
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: workspace_mib << 20} if workspace_mib else None,
        load_timing_cache=str(timing_cache) if timing_cache else None,
    )
    network = NetworkFromOnnxPath(str(model_path), strongly_typed=strongly_typed)
    builder = EngineBytesFromNetwork(network, config=config,
                                     save_timing_cache=str(timing_cache) if timing_cache else None)
    try:
        with G_LOGGER.verbosity(G_LOGGER.ERROR):
            return builder()
    except PolygraphyException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedModelError(f"TensorRT could not build {model_path}: {first}") from None


def _write_plan(plan: Path, engine: bytes, info: PlanSidecar, force: bool) -> None:
    """Write the sidecar, then the plan, each atomically; a failed plan write removes the sidecar."""
    side = sidecar_path(plan)
    atomic_write_text(side, info.dumps(), force)
    try:
        atomic_write(plan, lambda tmp: tmp.write_bytes(engine), force)
    except BaseException:
        side.unlink(missing_ok=True)
        raise
