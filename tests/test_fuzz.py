"""Fuzzing (issue 19): random bytes, shapes and dtypes thrown at ``Runtime.run``, the ONNX loader
(``contract.load_onnx``, ``Runtime(path)``) and the metric readers. Only a
:class:`~pgn_deploy.contract.PGNError` (a clean refusal) may come out -- or a correct result."""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pgn_deploy.contract import PGNError, load_onnx
from pgn_deploy.eval.metrics.score_io import check_frame, read_labels, read_scores
from pgn_deploy.runtime import Result, Runtime
from tests.support.runtime_models import build_model

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = st.sampled_from([np.uint8, np.int8, np.uint16, np.int32, np.int64, np.float16, np.float32, np.float64,
                          np.bool_, np.complex64])


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("fuzz") / "tiny.pgn.onnx")


@pytest.fixture(scope="module")
def runtime(model) -> Runtime:
    return Runtime(model, "ort-cpu", max_batch=2)


def _arrays() -> st.SearchStrategy[np.ndarray]:
    shapes = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=12)
    return DTYPES.flatmap(lambda dtype: hnp.arrays(dtype, shapes, elements=None))


@FUZZ
@given(inputs=st.one_of(_arrays(), st.lists(_arrays(), max_size=3), st.none(), st.integers(), st.text(max_size=8),
                        st.binary(max_size=32)),
       color=st.sampled_from(["RGB", "BGR", "rgb", "XYZ", ""]))
def test_runtime_run_refuses_or_returns_results(runtime, inputs, color):
    try:
        results = runtime.run(inputs, color=color)
    except PGNError:
        return
    for result in results if isinstance(results, list) else [results]:
        assert isinstance(result, Result)
        assert result.pred.ndim == 2 and all(np.isfinite(v).all() for v in result.scores.values())


@FUZZ
@given(data=st.binary(max_size=2048), keep=st.integers(min_value=0, max_value=100))
def test_onnx_loader_refuses_random_and_truncated_files(model, data, keep):
    real = model.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        for content in (data, real[: len(real) * keep // 100], real[:64] + data):
            path = Path(tmp) / "m.onnx"
            path.write_bytes(content)
            for load in (load_onnx, lambda p: Runtime(p, "ort-cpu")):
                try:
                    load(path)
                except PGNError:
                    continue


@FUZZ
@given(data=st.binary(max_size=512), array=_arrays(), suffix=st.sampled_from([".npy", ".png"]))
def test_metric_readers_refuse_random_files(data, array, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False) if array.dtype != object else None
        for content in (data, buffer.getvalue(), buffer.getvalue()[: len(buffer.getvalue()) // 2]):
            path = Path(tmp) / f"f{suffix}"
            path.write_bytes(content)
            for read in (read_scores, read_labels):
                try:
                    read(path)
                except PGNError:
                    continue


@FUZZ
@given(scores=_arrays(), labels=_arrays())
def test_check_frame_refuses_mismatched_arrays(scores, labels):
    try:
        checked_scores, checked_labels = check_frame(scores, labels)
    except PGNError:
        return
    assert checked_scores.shape == checked_labels.shape
