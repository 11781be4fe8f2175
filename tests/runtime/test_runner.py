"""Runtime: parity with a direct onnxruntime session, batching, threads and every bad input."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from pgn_deploy import contract as C
from pgn_deploy.runtime import Runtime
from pgn_deploy.runtime.backends import ort as ort_backend
from pgn_deploy.runtime.backends.base import BrokenInstallError, open_backend
from tests.support.runtime_models import NUM_CLASSES, build_model

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("runtime_models")
    return {
        "dynamic": build_model(folder / "dynamic.pgn.onnx"),
        "no_pred": build_model(folder / "no_pred.pgn.onnx", pred=False),
        "batch1": build_model(folder / "batch1.pgn.onnx", batch=1),
        "resize": build_model(folder / "resize.pgn.onnx",
                              input_info=C.InputInfo(size=(32, 48), resize=True, channel_order="BGR")),
        "fixed": build_model(folder / "fixed.pgn.onnx",
                             input_info=C.InputInfo(size=(32, 48), dynamic_size=False)),
        "plain": build_model(folder / "plain.onnx", metadata=False),
    }


@pytest.fixture(scope="module")
def runtime(models) -> Runtime:
    return Runtime(models["dynamic"], "ort-cpu")


def image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def reference_input(img: np.ndarray) -> np.ndarray:
    """The documented preprocessing, written out independently: RGB, /255, -mean, /std, NCHW."""
    x = img.astype(np.float32) / np.float32(255.0)
    x = (x - MEAN) / STD
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def direct_run(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input": x})))


def assert_same(a, b) -> None:
    np.testing.assert_array_equal(a.pred, b.pred)
    assert a.scores.keys() == b.scores.keys()
    for name in a.scores:
        np.testing.assert_array_equal(a.scores[name], b.scores[name])


# ----------------------------------------------------------------------------- parity
def test_outputs_equal_a_direct_onnxruntime_session(runtime, models):
    img = image(37, 50)
    result = runtime.run(img, logits=True)
    direct = direct_run(models["dynamic"], reference_input(img))
    assert runtime.backend_name == "ort-cpu"
    assert list(result.scores) == ["pgn_uni_p0.5", "pgn_uni_p2", "msp", "entropy"]
    for name, values in result.scores.items():
        assert values.dtype == np.float32 and values.shape == (37, 50)
        np.testing.assert_array_equal(values, direct[name][0, 0])
    assert result.pred.dtype == np.int32
    np.testing.assert_array_equal(result.pred, direct["pred"][0])
    np.testing.assert_array_equal(result.logits, direct["logits"][0])
    assert set(result.timings) == {"preprocess_ms", "inference_ms", "postprocess_ms"}


def test_pred_equals_the_argmax_of_the_logits(runtime, models):
    result = runtime.run(image(29, 41, seed=3), logits=True)
    assert result.logits.shape == (NUM_CLASSES, 29, 41)
    np.testing.assert_array_equal(result.pred, result.logits.argmax(axis=0))
    without = Runtime(models["no_pred"], "ort-cpu")
    img = image(29, 41, seed=3)
    other = without.run(img)
    assert other.logits is None
    direct_logits = direct_run(models["no_pred"], reference_input(img))["logits"][0]
    np.testing.assert_array_equal(other.pred, direct_logits.argmax(axis=0))


def test_logits_are_fetched_only_when_needed(runtime, models, monkeypatch):
    fetched = []
    backend = runtime.backend
    original = type(backend).run
    monkeypatch.setattr(backend, "run", lambda feeds, names: fetched.append(names) or original(backend, feeds, names))
    runtime.run(image(16, 16))
    assert "logits" not in fetched[-1] and "pred" in fetched[-1]
    runtime.run(image(16, 16), logits=True)
    assert "logits" in fetched[-1]


def spy_calls(runtime: Runtime, monkeypatch) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    backend = runtime.backend
    original = type(backend).run

    def run(feeds, names):
        shapes.append(feeds["input"].shape)
        return original(backend, feeds, names)

    monkeypatch.setattr(backend, "run", run)
    return shapes


def test_mixed_sizes_in_one_call_batch_same_sizes(runtime, monkeypatch):
    images = [image(30, 40, 1), image(21, 35, 2), image(30, 40, 3), image(21, 35, 4), image(30, 40, 5)]
    singles = [runtime.run(img) for img in images]
    calls = spy_calls(runtime, monkeypatch)
    results = runtime.run(images)
    assert calls == [(3, 3, 30, 40), (2, 3, 21, 35)]
    assert [r.size for r in results] == [(30, 40), (21, 35), (30, 40), (21, 35), (30, 40)]
    for single, batched in zip(singles, results):
        np.testing.assert_array_equal(single.pred, batched.pred)
        for name in single.scores:
            np.testing.assert_allclose(single.scores[name], batched.scores[name], rtol=1e-5, atol=1e-6)


def test_max_batch_splits_a_group(models, monkeypatch):
    runtime = Runtime(models["dynamic"], "ort-cpu", max_batch=2)
    calls = spy_calls(runtime, monkeypatch)
    runtime.run([image(8, 8, i) for i in range(5)])
    assert [shape[0] for shape in calls] == [2, 2, 1]


def test_a_static_batch_model_runs_one_image_per_call(models, monkeypatch):
    runtime = Runtime(models["batch1"], "ort-cpu")
    assert not runtime.backend.dynamic_batch
    calls = spy_calls(runtime, monkeypatch)
    results = runtime.run([image(12, 12, 1), image(12, 12, 2)])
    assert len(calls) == 2 and len(results) == 2
    batch = np.concatenate([reference_input(image(12, 12, 1)), reference_input(image(12, 12, 2))])
    assert len(runtime.run(batch)) == 2 and len(calls) == 4


def test_a_preprocessed_batch_equals_the_images(runtime):
    images = [image(24, 32, 7), image(24, 32, 8)]
    batch = np.concatenate([reference_input(img) for img in images])
    from_batch = runtime.run(batch)
    from_images = runtime.run(images)
    for a, b in zip(from_batch, from_images):
        assert_same(a, b)


def test_channel_order_is_converted(runtime):
    rgb = image(20, 30, 9)
    assert_same(runtime.run(rgb, color="RGB"), runtime.run(np.ascontiguousarray(rgb[..., ::-1]), color="BGR"))


def test_resize_model_maps_results_back_to_the_image_size(models):
    import cv2

    runtime = Runtime(models["resize"], "ort-cpu")
    bgr = image(40, 60, 11)
    result = runtime.run(bgr, color="BGR")
    assert result.size == (40, 60)
    small = cv2.resize(bgr, (48, 32), interpolation=cv2.INTER_LINEAR)[..., ::-1]  # model wants BGR
    direct = direct_run(models["resize"], reference_input(np.ascontiguousarray(small[..., ::-1])))
    expected = cv2.resize(direct["pgn_uni_p0.5"][0, 0], (60, 40), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(result.scores["pgn_uni_p0.5"], expected)
    np.testing.assert_array_equal(result.pred, cv2.resize(direct["pred"][0], (60, 40), interpolation=cv2.INTER_NEAREST))


def test_io_binding_equals_a_plain_run(runtime, models):
    bound = Runtime(models["dynamic"], "ort-cpu", io_binding=True, intra_op_threads=1)
    images = [image(18, 22, 5), image(18, 22, 6)]
    for a, b in zip(runtime.run(images), bound.run(images)):
        assert_same(a, b)


def test_concurrent_calls_equal_serial_calls(runtime):
    images = [image(20 + i, 30 + 2 * i, seed=i) for i in range(8)]
    serial = [runtime.run(img) for img in images]
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for _ in range(3):
                results[index] = runtime.run(images[index])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for i, expected in enumerate(serial):
        assert_same(results[i], expected)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "bad,message",
    [
        (np.zeros((8, 8, 3), np.float32), "dtype float32; images must be uint8"),
        (np.zeros((8, 8, 3), np.uint16), "dtype uint16"),
        (np.zeros((8, 8), np.uint8), "rank 2"),
        (np.zeros((2, 8, 8, 3, 1), np.uint8), "rank 5"),
        (np.zeros((8, 8, 4), np.uint8), "4 channels"),
        (np.zeros((3, 8, 8), np.uint8), "8 channels"),
        (np.zeros((0, 8, 3), np.uint8), "empty"),
        ([], "list of images is empty"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)], "image 1 has rank 2"),
        ("photo.png", "got str"),
        (np.zeros((1, 8, 8, 3), np.uint8), "preprocessed float"),
        (np.zeros((1, 4, 8, 8), np.float32), "4 channels"),
        (np.full((1, 3, 8, 8), np.nan, np.float32), "192 NaN or infinite"),
        (np.full((1, 3, 4, 4), np.inf, np.float32), "48 NaN or infinite"),
    ],
)
def test_bad_inputs_raise_a_clear_bad_input_error(runtime, bad, message):
    with pytest.raises(C.BadInputError, match=message):
        runtime.run(bad)


def test_bad_color_and_sizes(runtime, models):
    with pytest.raises(C.BadInputError, match="color must be"):
        runtime.run(image(8, 8), color="RGBA")
    fixed = Runtime(models["fixed"], "ort-cpu")
    assert fixed.run(image(32, 48)).size == (32, 48)
    with pytest.raises(C.BadInputError, match="takes only 32 x 48"):
        fixed.run(image(30, 48))
    with pytest.raises(C.BadInputError, match="max_batch"):
        Runtime(models["dynamic"], "ort-cpu", max_batch=0)
    with pytest.raises(C.BadInputError, match="intra_op_threads"):
        Runtime(models["dynamic"], "ort-cpu", intra_op_threads=-1)


def test_extra_feeds_are_checked(runtime):
    batch = reference_input(image(8, 8))
    with pytest.raises(C.BadInputError, match="does not have: pgn_gt"):
        runtime.run(batch, extra_feeds={"pgn_gt": np.zeros((1, 8, 8), np.int64)})


def test_model_problems_name_the_fix(models, tmp_path):
    with pytest.raises(C.MissingMetadataError, match="pgn-export"):
        Runtime(models["plain"])
    with pytest.raises(C.ModelLoadError, match="no such file"):
        Runtime(tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.pgn.onnx"
    corrupt.write_bytes(models["dynamic"].read_bytes()[:200])
    with pytest.raises(C.ModelLoadError):
        Runtime(corrupt)


def test_backend_choice_and_unavailable_backends(models):
    assert Runtime(models["dynamic"]).backend_name in {"ort-cpu", "ort-cuda", "ort-trt"}
    with pytest.raises(C.BadInputError, match="unknown backend 'tpu'"):
        Runtime(models["dynamic"], "tpu")
    with pytest.raises(C.BadInputError, match="cannot run it"):
        Runtime(models["dynamic"], "trt")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(C.BackendUnavailableError, match="onnxruntime-gpu"):
            Runtime(models["dynamic"], "ort-cuda")
        with pytest.raises(C.BackendUnavailableError, match="onnxruntime-gpu"):
            Runtime(models["dynamic"], "ort-trt")


def test_both_onnxruntime_packages_installed_is_refused_with_the_fix(models, monkeypatch):
    monkeypatch.setattr(ort_backend, "_installed", lambda name: name in {"onnxruntime", "onnxruntime-gpu"})
    with pytest.raises(BrokenInstallError, match="pip uninstall -y onnxruntime onnxruntime-gpu"):
        open_backend(models["dynamic"], "auto")
    with pytest.raises(BrokenInstallError):
        Runtime(models["dynamic"], "ort-cpu")


def test_a_plan_file_selects_trt_and_reads_its_sidecar(models, tmp_path):
    from pgn_deploy.runtime.backends.plan_sidecar import GpuInfo, PlanSidecar, sidecar_path
    from pgn_deploy.runtime.model_file import load_model_metadata

    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not a real engine")
    with pytest.raises(C.ModelLoadError, match="model.plan.json"):
        Runtime(plan)
    meta = C.read_metadata(models["dynamic"])
    sidecar = PlanSidecar(meta, "10.0.0", GpuInfo("none", "0.0"), "m.onnx", "0" * 64, {}, {})
    sidecar_path(plan).write_text(sidecar.dumps())
    assert load_model_metadata(plan).pgn_outputs == meta.pgn_outputs
    with pytest.raises(C.BadInputError, match="TensorRT plan: backend 'ort-cpu' cannot run it"):
        Runtime(plan, "ort-cpu")
    try:
        Runtime(plan)
    except C.BackendUnavailableError as exc:  # no TensorRT or no GPU here: named in the message
        assert "trt" in str(exc) and ("tensorrt" in str(exc).lower() or "GPU" in str(exc) or "CUDA" in str(exc))
    except C.ModelLoadError as exc:  # a TensorRT host refuses the fake plan or its sidecar
        assert "model.plan" in str(exc)
    else:
        pytest.fail("a fake plan must not load")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["ort-cuda", "ort-trt"])
def test_gpu_backends_agree_with_the_cpu(runtime, models, backend):
    provider = {"ort-cuda": "CUDAExecutionProvider", "ort-trt": "TensorrtExecutionProvider"}[backend]
    if provider not in ort.get_available_providers():
        pytest.skip(f"onnxruntime has no {provider} here (needs onnxruntime-gpu and a GPU)")
    try:
        gpu = Runtime(models["dynamic"], backend)
    except C.BackendUnavailableError as exc:
        pytest.skip(str(exc))
    images = [image(32, 48, 1), image(32, 48, 2), image(20, 24, 3)]
    for cpu_result, gpu_result in zip(runtime.run(images), gpu.run(images)):
        for name, values in cpu_result.scores.items():
            np.testing.assert_allclose(gpu_result.scores[name], values, rtol=1e-3, atol=1e-4)
        assert np.mean(gpu_result.pred == cpu_result.pred) > 0.99


def test_runtime_closes_its_backend(tmp_path):
    from pgn_deploy.contract import PGNError

    path = tmp_path / "m.pgn.onnx"
    build_model(path)
    image = np.zeros((32, 48, 3), np.uint8)
    with Runtime(path, "ort-cpu") as runtime:
        assert runtime.run(image).pred.shape == (32, 48)
        session_holder = runtime.backend
    assert session_holder.session is None  # the ONNX Runtime session was dropped
    with pytest.raises(PGNError, match="closed"):
        runtime.run(image)
    runtime.close()  # idempotent


def test_fp8_models_open_at_basic_optimization_others_at_the_default(models, tmp_path):
    """ONNX Runtime's extended CPU fusions mis-compute FP8 Q/DQ graphs: a model whose metadata says
    ``fp8`` gets ORT_ENABLE_BASIC, every other model the library's default (all)."""
    model = C.load_onnx(models["dynamic"])
    meta = C.read_metadata(model)
    meta.precision = "fp8"
    C.write_metadata(model, meta)
    fp8 = tmp_path / "fp8.pgn.onnx"
    C.save_onnx(model, fp8)
    levels = {}
    for name, path in (("fp8", fp8), ("fp32", models["dynamic"])):
        with Runtime(path, "ort-cpu") as rt:
            levels[name] = rt._backend.session.get_session_options().graph_optimization_level
    assert levels == {"fp8": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                      "fp32": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
