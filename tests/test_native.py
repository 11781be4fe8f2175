"""The C++ runtime (cpp_bindings/, through pgn_deploy.native) against the Python runtime.

On the demo model, two torchvision models and the runtime tests' tiny models (one resizing its
input to a fixed size and without a ``pred`` output): the class map, every score map, the OoD
masks and the instances equal the Python runtime's; the same bad input raises the same error
with the same message; the example program writes the heatmap and mask Python would draw.

Skipped, with the reason, when the C++ runtime is not built (``make cpp``).
"""
from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from pgn_deploy import native
from pgn_deploy.contract import (
    BackendUnavailableError,
    Metadata,
    ModelLoadError,
    PGNError,
    make_spec,
    read_metadata,
)
from pgn_deploy.runtime import Runtime
from pgn_deploy.runtime.stats import display_range
from pgn_deploy.runtime.visualize import heatmap

REPO = Path(__file__).resolve().parents[1]
DEMO_CHECKPOINT = REPO / "export" / "models" / "demo_synthroad.pth"
PGN_INFER = REPO / "cpp_bindings" / "build" / "release" / "pgn-infer"
TORCHVISION = ("lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large")
RTOL = 1e-5

# --------------------------------------------------------------------------- models and images
def _export_torchvision(name: str, folder: Path) -> Path:
    torch = pytest.importorskip("torch")
    from pgn_deploy import export_model
    from pgn_deploy.export.load import build_module

    arch = f"torchvision.models.segmentation:{name}"
    kwargs = {"weights": None, "weights_backbone": None, "num_classes": 4}
    torch.manual_seed(0)
    checkpoint = folder / f"{name}.pth"
    torch.save({"arch": arch, "arch_kwargs": kwargs, "state_dict": build_module(arch, kwargs).state_dict()},
               checkpoint)
    return export_model(checkpoint, folder / f"{name}.pgn.onnx",
                        spec=make_spec(p=(0.5, 2.0), labels="both", pred=True, baselines=True),
                        input_shape="1x3x64x64").path


def _export_demo(folder: Path) -> Path:
    if not DEMO_CHECKPOINT.is_file():
        pytest.skip(f"{DEMO_CHECKPOINT.relative_to(REPO)} is not in this checkout")
    from pgn_deploy import export_model

    return export_model(DEMO_CHECKPOINT, folder / "demo.pgn.onnx",
                        spec=make_spec(p=(0.5, 1.0), labels="both", pred=True, baselines=True),
                        input_shape="1x3x128x256").path


def _tiny(folder: Path, name: str) -> Path:
    from pgn_deploy.contract import InputInfo
    from tests.support.runtime_models import build_model

    if name == "tiny":
        return build_model(folder / "tiny.pgn.onnx", pred=True)
    if name == "tiny_uint8":
        return _tiny_uint8(folder)
    resized = InputInfo(channel_order="BGR", size=(24, 32), resize=True)
    return build_model(folder / "tiny_resized.pgn.onnx", pred=False, input_info=resized, seed=1)


def _tiny_uint8(folder: Path) -> Path:
    """The tiny model calibrated, with ``<map>_norm``/``ood_mask`` and uint8 BGR frames as input."""
    from pgn_deploy.contract import load_onnx, save_onnx
    from pgn_deploy.graft.deploy import prepare_deployment
    from pgn_deploy.runtime import calibrate

    calibrated = calibrate(_tiny(folder, "tiny"), IMAGES[:2], folder / "calibrated.onnx", backend="ort-cpu").path
    model = prepare_deployment(load_onnx(calibrated), normalize=True, input_format="uint8-nhwc-bgr")
    return save_onnx(model, folder / "tiny_uint8.pgn.onnx")


MODELS = ("tiny", "tiny_resized", "tiny_uint8", "demo", *TORCHVISION)


def _require_native() -> None:
    if not native.available():
        pytest.skip(f"the C++ runtime is not built ({native.unavailable_reason()}); build it with: make cpp")


@pytest.fixture(scope="module", params=MODELS)
def model(request, tmp_path_factory) -> Path:
    _require_native()
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "demo":
        return _export_demo(folder)
    if request.param in TORCHVISION:
        return _export_torchvision(request.param, folder)
    return _tiny(folder, request.param)


@pytest.fixture(scope="module")
def runtimes(model) -> tuple[Runtime, native.Runtime]:
    return Runtime(model, "ort-cpu"), native.Runtime(model, "ort-cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny grafted model with ``pred`` (for the error and example tests)."""
    _require_native()
    return _tiny(tmp_path_factory.mktemp("tiny_errors"), "tiny")


def _image(height: int, width: int, seed: int) -> np.ndarray:
    """A road-like picture: smooth gradients, noise and a bright block (an 'obstacle')."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 200 // width, y * 200 // height, (x + y) * 100 // (width + height)], axis=-1)
    image = image + rng.integers(0, 50, image.shape)
    image[height // 3: height // 2, width // 3: width // 2] = (250, 40, 200)
    return np.clip(image, 0, 255).astype(np.uint8)


IMAGES = [_image(64, 64, 0), _image(50, 70, 1), _image(64, 64, 2)]


# --------------------------------------------------------------------------- comparisons
def _assert_map_close(cpp: np.ndarray, py: np.ndarray, name: str) -> None:
    """Equal to 1e-5 relative to the map's magnitude (maps resized by cv2.resize differ by
    OpenCV build: the wheel's optimized float path vs Debian's; see docs/cpp.md)."""
    assert cpp.dtype == py.dtype == np.float32 and cpp.shape == py.shape, name
    scale = float(np.max(np.abs(py[np.isfinite(py)]), initial=0.0))
    np.testing.assert_allclose(cpp, py, rtol=RTOL, atol=RTOL * scale, err_msg=name)


def _safe_thresholds(cpp: np.ndarray, py: np.ndarray) -> list[float]:
    """Thresholds at several quantiles, each moved into a gap with no pixel of either map within
    1e-5 relative, so that a last-bit difference cannot flip a pixel of the mask."""
    values = np.unique(np.concatenate([cpp[np.isfinite(cpp)], py[np.isfinite(py)]]).astype(np.float64))
    chosen = []
    for q in (0.5, 0.9, 0.99):
        start = int(q * (len(values) - 1))
        for i in range(start, len(values) - 1):
            low, high = values[i], values[i + 1]
            if high - low > 4 * RTOL * max(abs(low), abs(high), 1e-30):
                chosen.append(float((low + high) / 2))
                break
    return chosen


def _assert_results_equal(cpp, py) -> None:
    np.testing.assert_array_equal(cpp.pred, py.pred)
    assert list(cpp.scores) == list(py.scores)
    for name in py.scores:
        _assert_map_close(cpp.scores[name], py.scores[name], name)
    assert cpp.default_score == py.default_score and cpp.size == py.size
    for name in py.scores:
        for threshold in _safe_thresholds(cpp.scores[name], py.scores[name]):
            np.testing.assert_array_equal(cpp.ood_mask(threshold, name), py.ood_mask(threshold, name))
            mine, theirs = cpp.instances(threshold, 2, name), py.instances(threshold, 2, name)
            assert [(i.label_id, i.area, i.box) for i in mine] == [(i.label_id, i.area, i.box) for i in theirs]
            np.testing.assert_allclose([i.mean_score for i in mine], [i.mean_score for i in theirs], rtol=RTOL)


# --------------------------------------------------------------------------- equality
@pytest.mark.parametrize("color", ["RGB", "BGR"])
def test_uint8_input_in_cpp_equals_the_float_model_fed_by_python(tmp_path, color):
    """The C++ library feeds a uint8-input model frames as they are; its maps equal the float
    model's, preprocessed in Python, to 1e-5 relative."""
    _require_native()
    uint8_model = _tiny_uint8(tmp_path)
    float_model = tmp_path / "calibrated.onnx"
    assert native.Runtime(uint8_model, "ort-cpu").metadata["input"]["format"] == "uint8-nhwc-bgr"
    cpp = native.Runtime(uint8_model, "ort-cpu").run(IMAGES, color=color)
    py = Runtime(float_model, "ort-cpu").run(IMAGES, color=color)
    for mine, theirs in zip(cpp, py):
        np.testing.assert_array_equal(mine.pred, theirs.pred)
        for name in theirs.scores:
            _assert_map_close(mine.scores[name], theirs.scores[name], name)



def test_metadata_reads_the_same(model, runtimes):
    _, cpp = runtimes
    assert cpp.metadata == read_metadata(model).to_json()


@pytest.mark.parametrize("color", ["RGB", "BGR"])
def test_one_image_equals_the_python_runtime(runtimes, color):
    py, cpp = runtimes
    assert cpp.score_names == py.score_names and cpp.default_score == py.default_score
    for image in IMAGES[:2]:
        _assert_results_equal(cpp.run(image, color=color), py.run(image, color=color))


def test_a_list_of_images_equals_the_python_runtime(runtimes):
    py, cpp = runtimes
    mine, theirs = cpp.run(IMAGES), py.run(IMAGES)
    assert len(mine) == len(theirs) == len(IMAGES)
    for a, b in zip(mine, theirs):
        _assert_results_equal(a, b)


def test_logits_on_request(runtimes):
    py, cpp = runtimes
    mine, theirs = cpp.run(IMAGES[1], logits=True), py.run(IMAGES[1], logits=True)
    np.testing.assert_allclose(mine.logits, theirs.logits.astype(np.float32), rtol=RTOL, atol=1e-6)
    assert cpp.run(IMAGES[1]).logits is None


def test_run_from_several_threads(runtimes):
    _, cpp = runtimes
    serial = [cpp.run(image) for image in IMAGES]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda i: cpp.run(IMAGES[i % 3]), range(12)))
    for i, result in enumerate(parallel):
        np.testing.assert_array_equal(result.pred, serial[i % 3].pred)
        for name, value in serial[i % 3].scores.items():
            np.testing.assert_array_equal(result.scores[name], value)


# --------------------------------------------------------------------------- errors
def _same_error(make_py, make_cpp) -> str:
    """Both calls raise the same PGNError class with the same message; returns the message."""
    with pytest.raises(PGNError) as theirs:
        make_py()
    with pytest.raises(PGNError) as mine:
        make_cpp()
    assert type(mine.value) is type(theirs.value)
    assert str(mine.value) == str(theirs.value)
    return str(mine.value)


def test_missing_model_and_model_without_metadata(tiny, tmp_path):
    missing = tmp_path / "missing.onnx"
    message = _same_error(lambda: Runtime(missing), lambda: native.Runtime(missing))
    assert message == f"{missing}: no such file"
    from tests.support.runtime_models import build_model

    plain = build_model(tmp_path / "plain.onnx", metadata=False)
    message = _same_error(lambda: Runtime(plain, "ort-cpu"), lambda: native.Runtime(plain, "ort-cpu"))
    assert "has no pgn_deploy metadata" in message
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="not a readable ONNX model"):
        native.Runtime(corrupt)
    _same_error(lambda: Runtime(tiny, max_batch=0), lambda: native.Runtime(tiny, max_batch=0))
    _same_error(lambda: Runtime(tiny, "tpu"), lambda: native.Runtime(tiny, "tpu"))
    _same_error(lambda: Runtime(tiny, "trt"), lambda: native.Runtime(tiny, "trt"))



def test_plan_sidecar_errors(tiny, tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"a TensorRT plan")
    message = _same_error(lambda: Runtime(plan), lambda: native.Runtime(plan))
    assert message.startswith(f"{plan}.json: no such file")
    sidecar = tmp_path / "model.plan.json"
    for document in ({"format": 2}, {"format": 1}, {"format": 1, "metadata": {"format_version": 1}}):
        sidecar.write_text(json.dumps(document))
        _same_error(lambda: Runtime(plan), lambda: native.Runtime(plan))
    sidecar.write_text(json.dumps({"format": 1, "metadata": read_metadata(tiny).to_json()}))
    with pytest.raises(BackendUnavailableError, match="trt"):  # no TensorRT in this build
        native.Runtime(plan)


BAD_INPUTS = {
    "gray image": np.zeros((8, 9), np.uint8),
    "four channels": np.zeros((8, 9, 4), np.uint8),
    "float image": np.zeros((8, 9, 3), np.float32),
    "empty image": np.zeros((0, 9, 3), np.uint8),
    "rank 5": np.zeros((1, 1, 8, 9, 3), np.uint8),
    "empty list": [],
    "bad image in a list": [np.zeros((8, 9, 3), np.uint8), np.zeros((8, 9, 2), np.uint8)],
    "not an array": "street.png",
}


@pytest.mark.parametrize("bad", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_images_raise_the_same_error(tiny, bad):
    py, cpp = Runtime(tiny, "ort-cpu"), native.Runtime(tiny, "ort-cpu")
    _same_error(lambda: py.run(BAD_INPUTS[bad]), lambda: cpp.run(BAD_INPUTS[bad]))


def test_bad_arguments_of_the_result_raise_the_same_error(tiny):
    py, cpp = Runtime(tiny, "ort-cpu"), native.Runtime(tiny, "ort-cpu")
    _same_error(lambda: py.run(IMAGES[0], color="YUV"), lambda: cpp.run(IMAGES[0], color="YUV"))
    theirs, mine = py.run(IMAGES[0]), cpp.run(IMAGES[0])
    _same_error(lambda: theirs.ood_mask(), lambda: mine.ood_mask())
    _same_error(lambda: theirs.score("nope"), lambda: mine.score("nope"))
    _same_error(lambda: theirs.instances(1.0, -1), lambda: mine.instances(1.0, -1))


def _edited(doc: dict, edit: str) -> dict:
    """``doc`` (Metadata.to_json()) broken in one way."""
    doc = json.loads(json.dumps(doc))
    if edit == "version":
        doc["format_version"] = 2
    elif edit == "no version":
        del doc["format_version"]
    elif edit == "no outputs":
        del doc["outputs"]
    elif edit == "no std":
        del doc["input"]["std"]
    elif edit == "head fields":
        del doc["head"]["logits"], doc["head"]["head_logits"], doc["head"]["logits_output"]
    elif edit == "bad label":
        doc["spec"]["labels"] = ["uni", "xyz"]
    elif edit == "bad p":
        doc["spec"]["p"] = [0.0]
    return doc


@pytest.mark.parametrize("edit", ["version", "no version", "no outputs", "no std", "head fields", "bad label",
                                  "bad p"])
def test_malformed_metadata_gives_the_same_message(tiny, edit):
    text = json.dumps(_edited(read_metadata(tiny).to_json(), edit))
    _same_error(lambda: Metadata.loads(text), lambda: native.parse_metadata(text))


def test_unbuilt_module_says_how_to_build_it(monkeypatch):
    monkeypatch.setattr(native, "_native", None)
    monkeypatch.setattr(native, "_IMPORT_ERROR", "No module named 'pgn_deploy._native'")
    assert not native.available()
    with pytest.raises(BackendUnavailableError, match="make cpp"):
        native.Runtime("model.pgn.onnx")


# --------------------------------------------------------------------------- example program
@pytest.mark.skipif(not PGN_INFER.is_file(), reason=f"{PGN_INFER.relative_to(REPO)} is not built (make cpp)")
def test_example_program_writes_the_heatmap_and_mask_python_would(tiny, tmp_path):
    image = IMAGES[1]
    cv2.imwrite(str(tmp_path / "street.png"), image)
    result = Runtime(tiny, "ort-cpu").run(image, color="BGR")
    score = result.scores[result.default_score]
    threshold = _safe_thresholds(score, score)[1]
    command = [str(PGN_INFER), str(tmp_path / "street.png"), str(tiny), "--threshold", repr(threshold),
               "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    shown = display_range(score, None, result.default_score)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "street.heatmap.png")),
                                  heatmap(score, shown["lo"], shown["hi"]))
    mask = cv2.imread(str(tmp_path / "street.ood.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(mask, result.ood_mask(threshold) * 255)
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 2 and "exists; pass --force" in again.stderr
