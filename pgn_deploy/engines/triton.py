"""``pgn-triton``: a Triton Inference Server model repository for a grafted model.

Layout written (one model folder, replaced as a whole)::

    REPO/NAME/config.pbtxt
    REPO/NAME/1/model.onnx      (--backend onnxruntime)
    REPO/NAME/1/model.plan      (--backend tensorrt: a plan from pgn-build)

``config.pbtxt`` is built as Triton's own ``ModelConfig`` protobuf (from ``tritonclient``) and
lists every graph input and output with its dims (``-1`` where dynamic, the batch dimension
left out when batching) and data type, dynamic batching when the model's batch is dynamic,
the instance group, and the model's ``pgn_deploy`` metadata JSON as the parameter
``pgn_deploy``, which clients read from the model configuration endpoint. The served model is
the raw graph: clients feed the preprocessed N x 3 x H x W tensor the metadata describes and
read the ``pgn_*`` maps (float32 N x 1 x h x w) and ``pred`` (int32 N x h x w) as named outputs.
A model exported with ``--input-format uint8-nhwc-rgb|bgr`` declares its input
``TYPE_UINT8 [-1, -1, 3]``: clients send camera frames as they are (the graph normalises);
one exported with ``--outputs`` lists only the kept outputs; ``<map>_norm`` and ``ood_mask``
are ordinary outputs. The optional ``ood_threshold`` input of a ``--normalize`` model (a float32
scalar with the calibrated default as its initializer) is declared ``optional: true``,
``TYPE_FP32``, ``dims: [1]`` with ``reshape: { shape: [ ] }`` (Triton wants non-empty dims; the
reshape hands the model its scalar), so a client may send a threshold per request, when the
repository is written for Triton's ONNX Runtime backend without batching (``max_batch_size: 0``:
a fixed-batch model, or ``--max-batch 0``). Triton's ONNX Runtime backend refuses optional inputs
in a model that batches, and a TensorRT plan holds the threshold as a constant: there the served
mask uses the calibrated default (the report says so).
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pgn_deploy.contract import (
    METADATA_KEY,
    ArtifactExistsError,
    BadInputError,
    ModelLoadError,
    UnsupportedModelError,
    file_sha256,
    load_onnx,
    process_umask,
    read_metadata,
    require,
)
from pgn_deploy.engines.tensorrt_build import default_plan_path
from pgn_deploy.runtime.backends.plan_sidecar import read_sidecar

BACKENDS = {
    # --backend -> (Triton backend, platform, file in the version folder, instance kind)
    "onnxruntime": ("onnxruntime", "onnxruntime_onnx", "model.onnx", "KIND_AUTO"),
    "tensorrt": ("tensorrt", "tensorrt_plan", "model.plan", "KIND_GPU"),
}
DEFAULT_MAX_BATCH = 8
VERSION = "1"

# ONNX TensorProto element type -> Triton DataType name
TRITON_TYPES = {
    1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16",
    6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64",
    12: "TYPE_UINT32", 13: "TYPE_UINT64", 16: "TYPE_BF16",
}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, ONNX element type, dims (-1 where dynamic)."""

    name: str
    elem_type: int
    dims: tuple[int, ...]


@dataclasses.dataclass
class RepositoryReport:
    """What :func:`write_triton_repository` wrote."""

    model_dir: Path
    config: Path
    model_file: Path
    backend: str
    max_batch_size: int
    optional_inputs: list[str] = dataclasses.field(default_factory=list)
    note: str = ""

    def to_text(self) -> str:
        """What ``pgn-triton`` prints: the model folder, its files, the optional inputs declared."""
        text = (f"wrote {self.model_dir} ({self.backend}, max_batch_size {self.max_batch_size}): "
                f"{self.config}, {self.model_file}")
        if self.optional_inputs:
            text += f"\noptional inputs: {', '.join(self.optional_inputs)}"
        return text + (f"\n{self.note}" if self.note else "")

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict, paths as strings."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


def _tensor_specs(values: Any, initializers: set[str]) -> list[TensorSpec]:
    specs = []
    for value in values:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        if not tensor.HasField("shape"):
            raise UnsupportedModelError(f"graph tensor {value.name!r} has no declared shape; Triton needs its rank")
        dims = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        specs.append(TensorSpec(value.name, int(tensor.elem_type), dims))
    return specs


def model_signature(model: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of an ONNX model as Triton sees them."""
    initializers = {init.name for init in model.graph.initializer}
    return _tensor_specs(model.graph.input, initializers), _tensor_specs(model.graph.output, set())


def optional_inputs(model: Any, meta: Any) -> list[TensorSpec]:
    """The graph inputs a request may leave out: the ``--normalize`` model's ``ood_threshold``
    (an input with an initializer default); empty for other models."""
    if not meta.ood_mask:
        return []
    name = meta.ood_mask["threshold_input"]
    return _tensor_specs([i for i in model.graph.input if i.name == name], set())


def _batch_limit(inputs: list[TensorSpec], outputs: list[TensorSpec], max_batch: int | None,
                 plan_max_batch: int | None) -> int:
    """Triton's ``max_batch_size``: 0 when the model's batch dimension is fixed or ``max_batch`` is 0."""
    dynamic = all(spec.dims and spec.dims[0] == -1 for spec in [*inputs, *outputs])
    if not dynamic:
        if max_batch:
            raise BadInputError("--max-batch needs a model with a dynamic batch dimension; this one is fixed")
        return 0
    limit = max_batch if max_batch is not None else min(DEFAULT_MAX_BATCH, plan_max_batch or DEFAULT_MAX_BATCH)
    if limit < 0:
        raise BadInputError(f"--max-batch must be >= 0 (0: no batching), got {limit}")
    if plan_max_batch is not None and limit > plan_max_batch:
        raise BadInputError(f"--max-batch {limit} exceeds the plan's profile (batch <= {plan_max_batch}); "
                            "rebuild the plan with a larger --shapes maximum")
    return limit


def build_config(name: str, backend: str, inputs: list[TensorSpec], outputs: list[TensorSpec],
                 max_batch_size: int, instances: int, metadata_json: str,
                 optional: list[TensorSpec] | None = None) -> Any:
    """The ``ModelConfig`` protobuf message of the model folder ``name``; ``optional``: inputs
    declared ``optional: true`` (a scalar as ``dims: [1]``, ``reshape: { shape: [ ] }``)."""
    pb = require("tritonclient.grpc.model_config_pb2", "writing a Triton model repository")
    triton_backend, platform, filename, kind = BACKENDS[backend]
    config = pb.ModelConfig(name=name, backend=triton_backend, platform=platform,
                            max_batch_size=max_batch_size, default_model_filename=filename)

    def dims(spec: TensorSpec) -> list[int]:
        return list(spec.dims[1:] if max_batch_size else spec.dims)

    def data_type(spec: TensorSpec) -> int:
        if spec.elem_type not in TRITON_TYPES:
            raise UnsupportedModelError(
                f"tensor {spec.name!r} has ONNX type {spec.elem_type}, which Triton cannot carry")
        return pb.DataType.Value(TRITON_TYPES[spec.elem_type])

    for spec in inputs:
        config.input.add(name=spec.name, data_type=data_type(spec), dims=dims(spec))
    for spec in optional or []:
        declared = config.input.add(name=spec.name, data_type=data_type(spec), optional=True,
                                    dims=dims(spec) or [1])
        if not dims(spec):
            declared.reshape.SetInParent()  # shape [] : the model's scalar
    for spec in outputs:
        config.output.add(name=spec.name, data_type=data_type(spec), dims=dims(spec))
    if max_batch_size:
        config.dynamic_batching.SetInParent()
    config.instance_group.add(count=instances, kind=pb.ModelInstanceGroup.Kind.Value(kind))
    config.parameters[METADATA_KEY].string_value = metadata_json
    return config


def write_triton_repository(
    model_path: str | os.PathLike[str],
    repo: str | os.PathLike[str],
    backend: str = "onnxruntime",
    plan: str | os.PathLike[str] | None = None,
    name: str | None = None,
    max_batch: int | None = None,
    instances: int = 1,
    force: bool = False,
) -> RepositoryReport:
    """Write ``REPO/NAME`` for the grafted ONNX model at ``model_path``.

    ``backend``: ``onnxruntime`` (copies the ONNX file) or ``tensorrt`` (copies ``plan``,
    default ``engines/NAME.plan``, whose sidecar must name this very ONNX file by sha256: the
    config is derived from the ONNX graph). ``name``: the model's name in the repository
    (default: the file name without ``.pgn.onnx``). ``max_batch``: Triton's max batch size
    (default 8, at most the plan's profile maximum; 0 for a fixed-batch model, or to serve a dynamic
    one without batching, which declares the optional ``ood_threshold`` input). ``instances``:
    model instances (per GPU for tensorrt). An existing model folder is replaced only with
    ``force``; the folder is built beside it and renamed into place.
    """
    if backend not in BACKENDS:
        raise BadInputError(f"unknown --backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if instances < 1:
        raise BadInputError(f"--instances must be >= 1, got {instances}")
    model_path = Path(model_path)
    model = load_onnx(model_path, load_weights=False)
    meta = read_metadata(model)
    name = name or default_plan_path(model_path).stem
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
        raise BadInputError(f"model name {name!r}: use letters, digits, '_', '.' and '-' only")
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise BadInputError(f"{repo}: is a file, expected the repository folder")
    target = repo / name
    if target.exists() and not force:
        raise ArtifactExistsError(f"{target} exists; pass --force to replace it")

    source, plan_max_batch = model_path, None
    if backend == "tensorrt":
        source, plan_max_batch = _checked_plan(plan, model_path, meta.input.name)
    inputs, outputs = model_signature(model)
    max_batch_size = _batch_limit(inputs, outputs, max_batch, plan_max_batch)
    optional, note = optional_inputs(model, meta), ""
    if optional and (backend != "onnxruntime" or max_batch_size):
        why = ("Triton's ONNX Runtime backend takes optional inputs only without batching (--max-batch 0)"
               if backend == "onnxruntime" else "the TensorRT plan holds it as a constant")
        note = f"{', '.join(s.name for s in optional)} not declared ({why}): the mask uses the calibrated default"
        optional = []
    config = build_config(name, backend, inputs, outputs, max_batch_size, instances, meta.dumps(), optional)
    filename = BACKENDS[backend][2]
    repo.mkdir(parents=True, exist_ok=True)
    _install_folder(target, config, source, filename)
    return RepositoryReport(model_dir=target, config=target / "config.pbtxt",
                            model_file=target / VERSION / filename, backend=backend,
                            max_batch_size=max_batch_size, optional_inputs=[s.name for s in optional], note=note)


def _checked_plan(plan: str | os.PathLike[str] | None, model_path: Path, input_name: str) -> tuple[Path, int | None]:
    """The plan file for ``model_path`` and the largest batch of its profile (None: unknown)."""
    plan = Path(plan) if plan is not None else default_plan_path(model_path)
    if not plan.is_file():
        raise ModelLoadError(f"{plan}: no such plan; build it with pgn-build {model_path} (or pass --plan)")
    sidecar = read_sidecar(plan)
    if sidecar.onnx_sha256 != file_sha256(model_path):
        raise BadInputError(f"{plan} was built from another ONNX file than {model_path} (sha256 differs); rebuild it")
    shapes = sidecar.profiles.get(input_name)
    return plan, int(shapes["max"][0]) if shapes else None


def _install_folder(target: Path, config: Any, source: Path, filename: str) -> None:
    """Build the model folder under a temporary name beside ``target``, then swap it in."""
    from google.protobuf import text_format

    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(staging, 0o777 & ~process_umask())  # mkdtemp makes 0700: Triton may run as another user
    old = target.with_name(f".{target.name}.old")
    try:
        (staging / VERSION).mkdir()
        shutil.copyfile(source, staging / VERSION / filename)
        (staging / "config.pbtxt").write_text(text_format.MessageToString(config))
        replaced = target.exists()
        if replaced:
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        try:
            staging.rename(target)
        except BaseException:
            if replaced:
                old.rename(target)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
