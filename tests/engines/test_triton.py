"""pgn-triton: the model repository, its config.pbtxt parsed with Triton's own protobuf."""
from __future__ import annotations

import json

import onnx
import pytest

from pgn_deploy.cli import triton as triton_cli
from pgn_deploy.contract import METADATA_KEY, ArtifactExistsError, BadInputError, file_sha256, read_metadata, save_onnx
from pgn_deploy.engines.triton import write_triton_repository
from pgn_deploy.runtime.backends.plan_sidecar import GpuInfo, PlanSidecar, sidecar_path
from tests.support.engine_models import grafted

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient (extra 'triton') is not installed")
text_format = pytest.importorskip("google.protobuf.text_format")


def _parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _dtype(name: str) -> int:
    return model_config_pb2.DataType.Value(name)


def test_onnxruntime_repository_round_trips_through_the_protobuf(tmp_path):
    source = grafted("tiny")
    report = write_triton_repository(source, tmp_path, name="tiny", max_batch=4, instances=2)
    config = _parse(report.config)
    meta = read_metadata(source)
    assert config.name == "tiny" and config.backend == "onnxruntime" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 4 and config.HasField("dynamic_batching")
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, model_config_pb2.ModelInstanceGroup.KIND_AUTO)]
    inputs = {t.name: (t.data_type, list(t.dims)) for t in config.input}
    assert inputs == {"input": (_dtype("TYPE_FP32"), [3, -1, -1])}
    outputs = {t.name: (t.data_type, list(t.dims)) for t in config.output}
    assert set(outputs) == {o.name for o in onnx.load(source).graph.output}
    for name in meta.score_outputs:
        assert outputs[name] == (_dtype("TYPE_FP32"), [1, -1, -1])
    assert outputs[meta.pred] == (_dtype("TYPE_INT32"), [-1, -1])
    logits_type, logits_dims = outputs[meta.head.logits_output]
    assert logits_type == _dtype("TYPE_FP32") and len(logits_dims) == 3 and logits_dims[0] in (meta.num_classes, -1)
    assert json.loads(config.parameters[METADATA_KEY].string_value) == meta.to_json()
    assert report.model_file == tmp_path / "tiny" / "1" / "model.onnx"
    assert report.model_file.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # no staging leftovers


def test_existing_model_folder_is_replaced_only_with_force(tmp_path):
    write_triton_repository(grafted("tiny"), tmp_path, name="m")
    marker = tmp_path / "m" / "config.pbtxt"
    marker.write_text("# edited by hand\n")
    with pytest.raises(ArtifactExistsError):
        write_triton_repository(grafted("tiny"), tmp_path, name="m")
    assert marker.read_text() == "# edited by hand\n"
    write_triton_repository(grafted("tiny"), tmp_path, name="m", force=True)
    assert _parse(marker).name == "m"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_fixed_batch_model_has_no_batching(tmp_path):
    model = onnx.load(grafted("tiny"))
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_value = 1
    fixed = save_onnx(model, tmp_path / "fixed.pgn.onnx")
    repo = tmp_path / "repo"
    repo.mkdir()
    config = _parse(write_triton_repository(fixed, repo).config)
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [1, 3, -1, -1]
    with pytest.raises(BadInputError, match="dynamic batch"):
        write_triton_repository(fixed, repo, name="again", max_batch=4)


def _fake_plan(tmp_path, source, sha: str | None = None, max_batch: int = 4):
    plan = tmp_path / "tiny.plan"
    plan.write_bytes(b"plan bytes")
    side = PlanSidecar(metadata=read_metadata(source), tensorrt_version="10.15.1.29",
                       gpu=GpuInfo("NVIDIA H100", "9.0"), onnx_file=source.name,
                       onnx_sha256=sha or file_sha256(source),
                       profiles={"input": {"min": [1, 3, 8, 8], "opt": [1, 3, 8, 8], "max": [max_batch, 3, 8, 8]}},
                       flags={})
    sidecar_path(plan).write_text(side.dumps())
    return plan


def test_tensorrt_repository_serves_the_plan_of_this_onnx(tmp_path):
    source = grafted("tiny")
    plan = _fake_plan(tmp_path, source)
    repo = tmp_path / "repo"
    repo.mkdir()
    report = write_triton_repository(source, repo, backend="tensorrt", plan=plan)
    config = _parse(report.config)
    assert config.platform == "tensorrt_plan" and config.backend == "tensorrt"
    assert config.max_batch_size == 4  # the plan's profile maximum (below the default 8)
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert report.model_file.name == "model.plan" and report.model_file.read_bytes() == b"plan bytes"
    with pytest.raises(BadInputError, match="exceeds the plan"):
        write_triton_repository(source, repo, backend="tensorrt", plan=plan, name="big", max_batch=16)


def test_tensorrt_repository_refuses_a_plan_of_another_onnx(tmp_path):
    plan = _fake_plan(tmp_path, grafted("tiny"), sha="0" * 64)
    with pytest.raises(BadInputError, match="another ONNX file"):
        write_triton_repository(grafted("tiny"), tmp_path, backend="tensorrt", plan=plan)


def test_cli(tmp_path, capsys):
    assert triton_cli.main([str(grafted("tiny")), "--repo", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["max_batch_size"] == 8 and data["backend"] == "onnxruntime"
    assert triton_cli.main([str(grafted("tiny")), "--repo", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--force" in err[0]
    # the repository folder is created (with its parents) when missing; a file in its place is refused
    assert triton_cli.main([str(grafted("tiny")), "--repo", str(tmp_path / "new" / "repo"), "--quiet"]) == 0
    assert (tmp_path / "new" / "repo" / "tiny" / "config.pbtxt").is_file()
    (tmp_path / "file").write_text("x")
    assert triton_cli.main([str(grafted("tiny")), "--repo", str(tmp_path / "file")]) == 2


def test_uint8_frames_repository_serves_the_float_models_maps(tmp_path):
    """A uint8-input model's repository declares TYPE_UINT8 [-1, -1, 3]; its model file fed the
    frames as the config says returns the float model's maps for the Python-preprocessed image."""
    import numpy as np
    import onnxruntime as ort

    from pgn_deploy.contract import load_onnx
    from pgn_deploy.graft.deploy import prepare_deployment
    from pgn_deploy.runtime.preprocess import preprocess_image
    from tests.support.runtime_models import build_model

    float_path = build_model(tmp_path / "f.onnx")
    uint8_path = save_onnx(prepare_deployment(load_onnx(float_path), input_format="uint8-nhwc-bgr",
                                              outputs=["pred", "pgn_uni_p0.5", "msp"]), tmp_path / "u.onnx")
    repo = tmp_path / "repo"
    repo.mkdir()
    config = _parse(write_triton_repository(uint8_path, repo, name="frames", max_batch=2).config)
    assert {t.name: (t.data_type, list(t.dims)) for t in config.input} == {"input": (_dtype("TYPE_UINT8"), [-1, -1, 3])}
    assert sorted(t.name for t in config.output) == ["msp", "pgn_uni_p0.5", "pred"]  # no logits pulled
    meta = read_metadata(float_path)
    frames = np.random.default_rng(0).integers(0, 256, (2, 20, 28, 3), dtype=np.uint8)  # BGR, as a camera gives
    served = ort.InferenceSession(str(repo / "frames" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"])
    batch = np.stack([preprocess_image(f, "BGR", meta.input, np.dtype(np.float32)) for f in frames])
    names = ["pred", "pgn_uni_p0.5", "msp"]
    got = dict(zip(names, served.run(names, {"input": frames})))
    want = dict(zip(names, reference.run(names, {"input": batch})))
    np.testing.assert_array_equal(got["pred"], want["pred"])
    for name in ("pgn_uni_p0.5", "msp"):
        assert np.max(np.abs(got[name] - want[name]) / np.maximum(np.abs(want[name]), 1e-30)) <= 1e-5


def test_normalized_model_declares_the_optional_threshold_without_batching(tmp_path):
    """``--max-batch 0``: ``ood_threshold`` is declared optional, TYPE_FP32, dims [1] reshaped to the
    model's scalar, and the served file fed that scalar masks ``norm >= threshold``; with batching
    (which Triton's ONNX Runtime backend refuses for optional inputs) it is left out, and said so."""
    import numpy as np
    import onnxruntime as ort

    from pgn_deploy.graft.deploy import prepare_deployment
    from pgn_deploy.runtime import calibrate
    from tests.support.runtime_models import build_model

    frames = [np.random.default_rng(5).integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(2)]
    calibrate(build_model(tmp_path / "m.onnx"), frames, tmp_path / "c.onnx", backend="ort-cpu")
    model = save_onnx(prepare_deployment(onnx.load(tmp_path / "c.onnx"), normalize=True), tmp_path / "n.pgn.onnx")
    repo = tmp_path / "repo"
    report = write_triton_repository(model, repo, name="single", max_batch=0)
    config = _parse(report.config)
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    declared = {t.name: t for t in config.input}
    threshold = declared["ood_threshold"]
    assert threshold.optional and threshold.data_type == _dtype("TYPE_FP32") and list(threshold.dims) == [1]
    assert threshold.HasField("reshape") and list(threshold.reshape.shape) == []
    assert not declared["input"].optional and list(declared["input"].dims) == [-1, 3, -1, -1]
    assert report.optional_inputs == ["ood_threshold"] and "optional inputs: ood_threshold" in report.to_text()
    served = ort.InferenceSession(str(repo / "single" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(2).normal(0, 2, (1, 3, 24, 32)).astype(np.float32)
    mask_map = read_metadata(model).ood_mask["map"]
    for value in (0.25, 0.9):
        norm, mask = served.run([f"{mask_map}_norm", "ood_mask"],
                                {"input": batch, "ood_threshold": np.array(value, np.float32).reshape([])})
        np.testing.assert_array_equal(mask, (norm >= np.float32(value)).astype(np.uint8))
    batched = write_triton_repository(model, repo, name="batched", max_batch=2)
    assert "ood_threshold" not in {t.name for t in _parse(batched.config).input}
    assert batched.optional_inputs == [] and "not declared" in batched.to_text()
    with pytest.raises(BadInputError, match=">= 0"):
        write_triton_repository(model, repo, name="negative", max_batch=-1)
