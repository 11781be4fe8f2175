"""The contract: output names, spec validation, metadata round trip, atomic files."""
from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from pgn_deploy import contract as C


def test_output_names_follow_python_g_format():
    assert C.pgn_output_name("uni", 0.5) == "pgn_uni_p0.5"
    assert C.pgn_output_name("oh", 1) == "pgn_oh_p1"
    assert C.pgn_output_name("uni", 2.0) == "pgn_uni_p2"
    assert C.pgn_output_name("gt", 1e-5) == "pgn_gt_p1e-05"
    for name in ("pgn_uni_p0.5", "pgn_oh_p1", "pgn_gt_p1e-05"):
        label, p = C.parse_pgn_output_name(name)
        assert C.pgn_output_name(label, p) == name
    assert C.parse_pgn_output_name("msp") is None
    assert C.parse_pgn_output_name("pgn_foo_p1") is None


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"p": (0.0,)}, "p must be"),
        ({"p": (-1.0,)}, "p must be"),
        ({"p": (float("nan"),)}, "p must be"),
        ({"labels": ("soft",)}, "unknown label"),
        ({"labels": ("gt",)}, "needs --form exact"),
        ({"form": "true"}, "unknown form"),
        ({"resolution": "input"}, "unknown resolution"),
        ({"upsample": "nearest"}, "unknown upsample"),
        ({"resolution": "output", "keep_feature_size": True}, "contradicts"),
        ({"p": (0.5, 0.5)}, "must not repeat"),
    ],
)
def test_spec_rejects_bad_values(kwargs, message):
    with pytest.raises(C.BadInputError, match=message):
        C.PGNSpec(**kwargs)


def _meta() -> C.Metadata:
    spec = C.PGNSpec(p=(0.5, 1), labels=("uni", "oh"), pred=True, baselines=True)
    return C.Metadata(
        spec=spec,
        head=C.HeadInfo(["conv"], ["psi"], "logits", "head_logits", "out", "linear"),
        num_classes=3,
        input=C.InputInfo(size=(64, 128)),
        original_outputs=["out"],
        pgn_outputs=spec.map_names,
        pred="pred",
        baselines=["msp", "entropy"],
        class_names=["a", "b", "c"],
    )


def _tiny_model() -> onnx.ModelProto:
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    return helper.make_model(graph)


def test_metadata_round_trip_through_an_onnx_file(tmp_path):
    model = _tiny_model()
    with pytest.raises(C.MissingMetadataError, match="run pgn-export"):
        C.read_metadata(model)
    meta = _meta()
    C.write_metadata(model, meta)
    C.write_metadata(model, meta)  # replaces, never duplicates
    assert sum(p.key == C.METADATA_KEY for p in model.metadata_props) == 1
    path = C.save_onnx(model, tmp_path / "m.onnx")
    back = C.read_metadata(path)
    assert back.to_json() == meta.to_json()
    assert back.score_outputs == [*meta.pgn_outputs, "msp", "entropy"]
    assert back.input.size == (64, 128)


def test_spec_written_before_upsample_existed_reads_as_resize():
    data = C.PGNSpec().to_json()
    assert data["upsample"] == "auto"
    del data["upsample"]
    assert C.PGNSpec.from_json(data).upsample == "resize"


def test_metadata_of_another_format_version_is_refused():
    data = _meta().to_json() | {"format_version": 99}
    with pytest.raises(C.MissingMetadataError, match="format 99"):
        C.Metadata.from_json(data)
    with pytest.raises(C.MissingMetadataError, match="malformed"):
        C.Metadata.loads('{"format_version": 1}')


def test_load_onnx_errors(tmp_path):
    with pytest.raises(C.ModelLoadError, match="no such file"):
        C.load_onnx(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not protobuf \xff\xff")
    with pytest.raises(C.ModelLoadError, match="not a readable ONNX model"):
        C.load_onnx(bad)


def test_atomic_write_never_leaves_partial_files(tmp_path):
    target = tmp_path / "out.txt"
    C.atomic_write_text(target, "good")
    with pytest.raises(C.ArtifactExistsError, match="--force"):
        C.atomic_write_text(target, "other")

    def failing(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        C.atomic_write(target, failing, force=True)
    assert target.read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    C.atomic_write_text(target, "new", force=True)
    assert target.read_text() == "new"
    with pytest.raises(C.BadInputError, match="does not exist"):
        C.atomic_write_text(tmp_path / "missing" / "x.txt", "x")


def test_require_names_the_extra(monkeypatch):
    monkeypatch.setitem(C.EXTRAS, "surely_not_a_module_xyz", "trt")
    with pytest.raises(C.BackendUnavailableError, match=r"building a TensorRT plan .*pgn-deploy\[trt\]"):
        C.require("surely_not_a_module_xyz.sub", "building a TensorRT plan")


def test_every_extra_named_in_the_code_exists_in_pyproject():
    from pathlib import Path

    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert set(C.EXTRAS.values()) <= set(pyproject["project"]["optional-dependencies"])


def test_one_shape_syntax_for_every_command():
    from pgn_deploy.contract import parse_shape

    assert parse_shape("1x3x512x1024", 4) == (1, 3, 512, 1024)
    assert parse_shape(" 256 X 512 ", 2) == (256, 512)
    assert parse_shape([2, 3, 4, 5], 4) == (2, 3, 4, 5)
    for bad, rank in (("256", 2), ("0x5", 2), ("axb", None), ("1,3,4,4", 4), ("1x3x4", 4), ("", None)):
        with pytest.raises(C.BadInputError, match="shape|--"):
            parse_shape(bad, rank)


def test_first_line_and_file_sha256(tmp_path):
    import hashlib

    from pgn_deploy.contract import file_sha256, first_line

    assert first_line(ValueError("one\ntwo")) == "one" and first_line(KeyError()) == "KeyError"
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * (3 << 20))
    assert file_sha256(path) == hashlib.sha256(b"x" * (3 << 20)).hexdigest()
