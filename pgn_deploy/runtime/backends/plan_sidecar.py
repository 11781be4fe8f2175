"""The JSON file that travels with a TensorRT plan: ``engines/NAME.plan`` -> ``NAME.plan.json``.

A plan is an opaque, GPU- and version-specific blob; the sidecar says what it is (the grafted
model's ``pgn_deploy`` metadata), where it came from (the ONNX file's sha256) and where it can
run (the TensorRT version and the GPU it was built with). :func:`check_plan_compatible` is the
one place that decides whether a plan may be loaded on this host.
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any

from pgn_deploy.contract import BackendUnavailableError, Metadata, ModelLoadError, require

SIDECAR_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    """A CUDA device: its name and compute capability (``"9.0"`` for sm_90)."""

    name: str
    compute_capability: str


@dataclasses.dataclass
class PlanSidecar:
    """Everything known about a plan besides its bytes.

    ``profiles``: ``{input: {"min": [...], "opt": [...], "max": [...]}}``, the one
    optimization profile the plan was built with; ``flags``: the build options
    (``tf32``, ``workspace_mib``, ``timing_cache``, ``strongly_typed``).
    """

    metadata: Metadata
    tensorrt_version: str
    gpu: GpuInfo
    onnx_file: str
    onnx_sha256: str
    profiles: dict[str, dict[str, list[int]]]
    flags: dict[str, Any]
    format: int = SIDECAR_FORMAT

    def to_json(self) -> dict[str, Any]:
        """Every field as a JSON-ready dict: the content of the sidecar file."""
        return {
            "format": self.format,
            "metadata": self.metadata.to_json(),
            "tensorrt_version": self.tensorrt_version,
            "gpu": dataclasses.asdict(self.gpu),
            "onnx_file": self.onnx_file,
            "onnx_sha256": self.onnx_sha256,
            "profiles": self.profiles,
            "flags": self.flags,
        }

    def dumps(self) -> str:
        """The sidecar file's text: JSON with sorted keys, indented by 2, ending in a newline."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlanSidecar:
        """The sidecar of a parsed JSON dict; raises ModelLoadError when its ``format`` is not ``SIDECAR_FORMAT``."""
        if data.get("format") != SIDECAR_FORMAT:
            raise ModelLoadError(
                f"plan sidecar format {data.get('format')!r} is not supported (expected "
                f"{SIDECAR_FORMAT}); rebuild the plan with pgn-build"
            )
        return cls(
            metadata=Metadata.from_json(data["metadata"]),
            tensorrt_version=str(data["tensorrt_version"]),
            gpu=GpuInfo(**data["gpu"]),
            onnx_file=str(data["onnx_file"]),
            onnx_sha256=str(data["onnx_sha256"]),
            profiles=dict(data["profiles"]),
            flags=dict(data["flags"]),
        )


def sidecar_path(plan: str | os.PathLike[str]) -> Path:
    """The sidecar of ``engines/NAME.plan``: ``engines/NAME.plan.json``."""
    plan = Path(plan)
    return plan.with_name(plan.name + ".json")


def read_sidecar(plan: str | os.PathLike[str]) -> PlanSidecar:
    """Read the sidecar of ``plan``; a missing or malformed one raises :class:`ModelLoadError`."""
    path = sidecar_path(plan)
    if not path.is_file():
        raise ModelLoadError(
            f"{path}: no such file; a plan is loaded with the sidecar pgn-build writes beside it"
        )
    try:
        return PlanSidecar.from_json(json.loads(path.read_text()))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: malformed plan sidecar ({type(exc).__name__}: {exc})") from None




def release(version: str) -> tuple[int, ...]:
    """The ``major.minor.patch`` release of a TensorRT version string (``10.13.3.9.post1``)."""
    parts = []
    for part in version.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_plan_compatible(sidecar: PlanSidecar, tensorrt_version: str, gpu: GpuInfo,
                          plan: str | os.PathLike[str]) -> None:
    """Refuse a plan built by another TensorRT release or for another GPU architecture.

    Plans are not portable across TensorRT releases (major.minor.patch) nor across compute
    capabilities; both raise :class:`ModelLoadError` naming what was built and what is here.
    Another GPU model of the same compute capability runs the plan, with a warning that its
    kernels were timed on other hardware.
    """
    built = f"TensorRT {sidecar.tensorrt_version} on {sidecar.gpu.name} (sm {sidecar.gpu.compute_capability})"
    here = f"TensorRT {tensorrt_version} on {gpu.name} (sm {gpu.compute_capability})"
    if release(sidecar.tensorrt_version) != release(tensorrt_version):
        raise ModelLoadError(
            f"{plan} was built by {built}; this host has {here}: a plan runs only with the "
            f"TensorRT release that built it; rebuild it here with pgn-build"
        )
    if sidecar.gpu.compute_capability != gpu.compute_capability:
        raise ModelLoadError(
            f"{plan} was built by {built}; this host has {here}: a plan runs only on the GPU "
            f"architecture it was built for; rebuild it here with pgn-build"
        )
    if sidecar.gpu.name != gpu.name:
        warnings.warn(
            f"{plan} was built on {sidecar.gpu.name} and runs on {gpu.name} (same compute "
            f"capability); rebuild it here for kernels timed on this GPU",
            RuntimeWarning,
            stacklevel=2,
        )


MIN_TENSORRT = (10, 0)


def tensorrt_module(purpose: str = "building a TensorRT plan") -> Any:
    """The ``tensorrt`` module, version 10 or later; otherwise one clear PGNError."""
    trt = require("tensorrt", purpose)
    if release(trt.__version__)[:2] < MIN_TENSORRT:
        raise BackendUnavailableError(
            f"TensorRT {trt.__version__} is too old: strongly typed plans need TensorRT 10 or later"
        )
    return trt
