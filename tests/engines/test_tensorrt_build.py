"""pgn-build and the trt backend: everything checkable on the CPU, and the GPU path where present.

CPU: ``--shapes`` parsing, the optimization profile, the sidecar, the refusal of a plan built by
another TensorRT release or for another GPU (mocked version and GPU query), and a clean failure
without tensorrt or without a GPU. GPU (markers ``gpu``/``trt``): fp32 and fp16 plans, the
``trt`` backend, and fp16 plans against ONNX Runtime fp32.
"""
from __future__ import annotations

import importlib.util
import json
import types

import numpy as np
import onnx
import pytest

from pgn_deploy.cli import build as build_cli
from pgn_deploy.contract import BackendUnavailableError, BadInputError, ModelLoadError, file_sha256, read_metadata
from pgn_deploy.engines import tensorrt_build
from pgn_deploy.engines.tensorrt_build import ShapeRange, parse_shape_specs, plan_profile
from pgn_deploy.runtime.backends import plan_sidecar
from pgn_deploy.runtime.backends import trt as trt_backend
from pgn_deploy.runtime.backends.base import BackendOptions
from pgn_deploy.runtime.backends.plan_sidecar import (
    GpuInfo,
    PlanSidecar,
    check_plan_compatible,
    read_sidecar,
    sidecar_path,
)
from tests.support.engine_models import SIZE, grafted, images


def _gpu_usable() -> bool:
    try:
        from pgn_deploy.runtime.backends.cuda import current_gpu

        current_gpu()
    except Exception:
        return False
    return True


HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_GPU = _gpu_usable()


# --------------------------------------------------------------------------- shapes
def test_parse_shape_specs():
    ranges = parse_shape_specs(["input:1x3x64x64/2x3x96x128/4x3x128x256"])
    assert ranges == {"input": ShapeRange((1, 3, 64, 64), (2, 3, 96, 128), (4, 3, 128, 256))}
    for bad in ["input", "input:1x3/1x3", "input:1x3x8/1x3/1x3x8", "input:2x3/1x3/4x3", "input:1xAx3/1x3/1x3",
                "input:0x3/1x3/1x3"]:
        with pytest.raises(BadInputError):
            parse_shape_specs([bad])
    with pytest.raises(BadInputError, match="twice"):
        parse_shape_specs(["a:1/1/1", "a:1/1/1"])


def test_profile_needs_shapes_for_dynamic_size_without_metadata_size():
    model = onnx.load(grafted("tiny"), load_external_data=False)
    meta = read_metadata(model)
    assert meta.input.size is None
    with pytest.raises(BadInputError, match="--shapes input"):
        plan_profile(model, meta, {})
    given = parse_shape_specs(["input:1x3x64x64/1x3x96x128/2x3x128x128"])
    assert plan_profile(model, meta, given) == given


def test_profile_defaults_batch_and_export_size():
    model = onnx.load(grafted("tiny"), load_external_data=False)
    meta = read_metadata(model)
    meta.input.size = SIZE
    profile = plan_profile(model, meta, {})
    assert profile["input"] == ShapeRange((1, 3, *SIZE), (1, 3, *SIZE), (8, 3, *SIZE))


def test_profile_rejects_wrong_names_ranks_and_fixed_dims():
    model = onnx.load(grafted("tiny"), load_external_data=False)
    meta = read_metadata(model)
    with pytest.raises(BadInputError, match="not an input"):
        plan_profile(model, meta, parse_shape_specs(["image:1x3x8x8/1x3x8x8/1x3x8x8"]))
    with pytest.raises(BadInputError, match="rank"):
        plan_profile(model, meta, parse_shape_specs(["input:1x8x8/1x8x8/1x8x8"]))
    with pytest.raises(BadInputError, match="fixed to 3"):
        plan_profile(model, meta, parse_shape_specs(["input:1x4x8x8/1x4x8x8/1x4x8x8"]))


# --------------------------------------------------------------------------- no tensorrt / no GPU
@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed: the missing-package path cannot run")
def test_build_without_tensorrt_fails_cleanly_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = build_cli.main([str(grafted("tiny")), "--shapes", "input:1x3x64x64/1x3x64x64/1x3x64x64"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("pgn-build: error:") and "tensorrt" in err[0]
    assert list(tmp_path.iterdir()) == []  # not even the default engines/ folder


@pytest.mark.skipif(HAS_GPU, reason="a CUDA GPU is usable: the no-GPU path cannot run")
def test_build_without_gpu_fails_cleanly_and_writes_nothing(tmp_path, monkeypatch, capsys):
    fake_trt = types.SimpleNamespace(__version__="10.15.1.29")
    monkeypatch.setattr(plan_sidecar, "require", lambda *a: fake_trt)
    plan = tmp_path / "tiny.plan"
    code = build_cli.main([str(grafted("tiny")), "-o", str(plan), "--shapes", "input:1x3x64x64/1x3x64x64/1x3x64x64"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "GPU" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_build_checks_arguments_before_tensorrt(tmp_path, capsys):
    plan = tmp_path / "x.plan"
    plan.write_bytes(b"old")
    assert build_cli.main([str(grafted("tiny")), "-o", str(plan), "--shapes", "input:1x3x8x8/1x3x8x8/1x3x8x8"]) == 2
    assert "exists" in capsys.readouterr().err and plan.read_bytes() == b"old"
    assert build_cli.main([str(grafted("tiny")), "-o", str(tmp_path / "y.plan")]) == 2
    assert "--shapes input" in capsys.readouterr().err
    assert build_cli.main([str(tmp_path / "missing.onnx")]) == 2


def test_old_tensorrt_is_refused(monkeypatch):
    monkeypatch.setattr(plan_sidecar, "require", lambda *a: types.SimpleNamespace(__version__="8.6.1"))
    with pytest.raises(BackendUnavailableError, match="TensorRT 10 or later"):
        tensorrt_build.tensorrt_module()


# --------------------------------------------------------------------------- sidecar and refusal
def _sidecar(version: str = "10.15.1.29", gpu: GpuInfo = GpuInfo("NVIDIA H100", "9.0")) -> PlanSidecar:
    path = grafted("tiny")
    return PlanSidecar(metadata=read_metadata(path), tensorrt_version=version, gpu=gpu,
                       onnx_file=path.name, onnx_sha256=file_sha256(path),
                       profiles={"input": ShapeRange((1, 3, 8, 8), (1, 3, 8, 8), (4, 3, 8, 8)).to_json()},
                       flags={"tf32": True, "strongly_typed": True, "workspace_mib": None, "timing_cache": None})


def _fake_plan(tmp_path, sidecar: PlanSidecar):
    plan = tmp_path / "tiny.plan"
    plan.write_bytes(b"not a real plan")
    sidecar_path(plan).write_text(sidecar.dumps())
    return plan


def test_sidecar_round_trip(tmp_path):
    plan = _fake_plan(tmp_path, _sidecar())
    assert read_sidecar(plan).to_json() == _sidecar().to_json()
    assert json.loads(sidecar_path(plan).read_text())["gpu"]["compute_capability"] == "9.0"


def test_compatibility_rules():
    side = _sidecar()
    check_plan_compatible(side, "10.15.1.29", GpuInfo("NVIDIA H100", "9.0"), "p.plan")
    check_plan_compatible(side, "10.15.1.29.post1", GpuInfo("NVIDIA H100", "9.0"), "p.plan")
    with pytest.raises(ModelLoadError, match=r"built by TensorRT 10\.15\.1\.29 .*this host has TensorRT 10\.16"):
        check_plan_compatible(side, "10.16.0.72", GpuInfo("NVIDIA H100", "9.0"), "p.plan")
    with pytest.raises(ModelLoadError, match="GPU architecture"):
        check_plan_compatible(side, "10.15.1.29", GpuInfo("NVIDIA A100", "8.0"), "p.plan")
    with pytest.warns(RuntimeWarning, match="H200"):
        check_plan_compatible(side, "10.15.1.29", GpuInfo("NVIDIA H200", "9.0"), "p.plan")


@pytest.mark.parametrize("host_version, host_gpu, message", [
    ("11.0.0.114", GpuInfo("NVIDIA H100", "9.0"), "TensorRT release"),
    ("10.15.1.29", GpuInfo("NVIDIA L4", "8.9"), "GPU architecture"),
])
def test_trt_backend_refuses_foreign_plans_before_deserializing(tmp_path, monkeypatch, host_version, host_gpu, message):
    plan = _fake_plan(tmp_path, _sidecar())
    fake_trt = types.SimpleNamespace(__version__=host_version,
                                     Runtime=lambda *a: pytest.fail("deserialization was attempted"))
    monkeypatch.setattr(trt_backend, "tensorrt_module", lambda purpose: fake_trt)
    monkeypatch.setattr(trt_backend, "current_gpu", lambda device_id=None: host_gpu)
    with pytest.raises(ModelLoadError, match=message):
        trt_backend.open_backend(plan, BackendOptions())


def test_trt_backend_needs_the_sidecar(tmp_path):
    plan = tmp_path / "lonely.plan"
    plan.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="sidecar"):
        trt_backend.open_backend(plan, BackendOptions())


# --------------------------------------------------------------------------- trt backend logic (host fakes)
class _HostMemory:
    """Stands in for device memory: address -> host array."""

    blocks: dict[int, np.ndarray] = {}


class _FakeBuffer:
    def __init__(self):
        self.ptr, self.nbytes = 0, 0

    def reserve(self, nbytes):
        if nbytes > self.nbytes:
            self.ptr, self.nbytes = id(self) * 1000 + nbytes, nbytes
            _HostMemory.blocks[self.ptr] = np.zeros(nbytes, np.uint8)
        return self.ptr

    def upload(self, array, stream):
        self.reserve(array.nbytes)
        _HostMemory.blocks[self.ptr][:array.nbytes] = np.frombuffer(array.tobytes(), np.uint8)

    def download(self, array, stream):
        array.view(np.uint8).reshape(-1)[:] = _HostMemory.blocks[self.ptr][:array.nbytes]

    def close(self):
        pass


class _FakeStream:
    handle = 7

    def synchronize(self):
        pass

    def close(self):
        pass


class _FakeContext:
    """y = 2 * x (float32 N x 1 x H x W); pred = int32 zeros N x H x W; batch <= 4."""

    def __init__(self):
        self.shape, self.addresses = None, {}

    def set_input_shape(self, name, shape):
        self.shape = shape
        return shape[0] <= 4

    def get_tensor_shape(self, name):
        n, _, h, w = self.shape
        return {"x": self.shape, "y": (n, 1, h, w), "pred": (n, h, w)}[name]

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream):
        assert set(self.addresses) == {"x", "y", "pred"}, "every I/O tensor needs an address"
        count = int(np.prod(self.shape))
        x = _HostMemory.blocks[self.addresses["x"]][:count * 4].view(np.float32)
        _HostMemory.blocks[self.addresses["y"]][:count * 4] = (2 * x).view(np.uint8)
        return True


class _FakeEngine:
    names = ["x", "y", "pred"]
    num_io_tensors = 3

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return "in" if name == "x" else "out"

    def get_tensor_dtype(self, name):
        return np.int32 if name == "pred" else np.float32

    def get_tensor_shape(self, name):
        return (-1, 1, -1, -1)

    def create_execution_context(self):
        return _FakeContext()


def test_trt_backend_run_logic_on_host_fakes(monkeypatch, tmp_path):
    fake_trt = types.SimpleNamespace(TensorIOMode=types.SimpleNamespace(INPUT="in"), nptype=lambda t: t)
    side = _sidecar()
    side.profiles = {"x": ShapeRange((1, 1, 2, 2), (1, 1, 2, 2), (4, 1, 8, 8)).to_json()}
    monkeypatch.setattr(trt_backend, "load_engine", lambda path, device_id: (fake_trt, _FakeEngine(), side))
    monkeypatch.setattr(trt_backend, "DeviceBuffer", _FakeBuffer)
    monkeypatch.setattr(trt_backend, "CudaStream", _FakeStream)
    backend = trt_backend.open_backend(tmp_path / "fake.plan", BackendOptions())
    assert (backend.input_names, backend.output_names, backend.dynamic_batch) == (["x"], ["y", "pred"], True)
    for shape in [(2, 1, 3, 4), (3, 1, 5, 5), (1, 1, 2, 2)]:  # buffers grow and are reused
        x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        out = backend.run({"x": x}, ["y"])
        assert list(out) == ["y"] and out["y"].dtype == np.float32
        np.testing.assert_array_equal(out["y"], 2 * x)
    with pytest.raises(BadInputError,
                       match=r"outside what the plan accepts \(the plan's profile: min 1x1x2x2, max 4x1x8x8"):
        backend.run({"x": np.zeros((5, 1, 2, 2), np.float32)}, ["y"])
    with pytest.raises(BadInputError, match="no outputs nope"):
        backend.run({"x": np.zeros((1, 1, 2, 2), np.float32)}, ["nope"])
    with pytest.raises(BadInputError, match="needs the inputs x"):
        backend.run({}, ["y"])


# --------------------------------------------------------------------------- GPU
def needs_trt(test):
    """Markers gpu + trt, skipped with the reason where tensorrt or a GPU is missing."""
    for mark in (pytest.mark.gpu, pytest.mark.trt,
                 pytest.mark.skipif(not HAS_TRT, reason="the tensorrt package is not installed"),
                 pytest.mark.skipif(not HAS_GPU, reason="no usable CUDA GPU")):
        test = mark(test)
    return test


SHAPES = [f"input:1x3x{SIZE[0]}x{SIZE[1]}/2x3x{SIZE[0]}x{SIZE[1]}/4x3x{SIZE[0]}x{SIZE[1]}"]


@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", ["tiny", "bigpsi", "lraspp"])
def test_plan_matches_onnxruntime_fp32(tmp_path, name, precision):
    """fp32 and fp16 plans vs ONNX Runtime fp32: pred >= 99.9 %, PGN relative error <= 1e-2."""
    from pgn_deploy.eval.checks.compare import compare_models
    from pgn_deploy.runtime import Runtime

    source = grafted(name, precision)
    report = tensorrt_build.build_plan(source, tmp_path / f"{name}.plan", shapes=SHAPES)
    side = read_sidecar(report.plan)
    assert side.onnx_sha256 == file_sha256(source) and side.metadata.precision == precision
    assert side.profiles["input"]["max"][0] == 4 and side.flags["strongly_typed"]
    comparison = compare_models(grafted(name), report.plan, synthetic=2, size=SIZE)
    assert comparison.passed, comparison.to_json()
    plan_results = Runtime(report.plan, backend="trt").run(images(3))
    ort_results = Runtime(grafted(name), backend="ort-cpu").run(images(3))
    for got, want in zip(plan_results, ort_results):
        assert (got.pred == want.pred).mean() >= 0.999
        for score in want.scores:
            scale = abs(want.scores[score]).max()
            assert abs(got.scores[score] - want.scores[score]).max() <= 1e-2 * scale, score


@needs_trt
def test_build_keeps_plan_without_force_and_uses_timing_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "timing.cache"
    args = [str(grafted("tiny")), "--shapes", SHAPES[0], "--timing-cache", str(cache), "--workspace", "256", "--json"]
    assert build_cli.main(args) == 0
    plan = tmp_path / "engines" / "tiny.plan"
    assert plan.is_file() and sidecar_path(plan).is_file() and cache.is_file()
    before = plan.read_bytes()
    assert build_cli.main(args) == 2 and plan.read_bytes() == before
    assert build_cli.main([*args, "--force", "--no-tf32"]) == 0
    assert read_sidecar(plan).flags["tf32"] is False
