"""pgn-export and export_model: every checkpoint kind, the options, and bad input that leaves no file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pgn_deploy import export_model
from pgn_deploy.cli.export import main
from pgn_deploy.contract import PGNError, make_spec, read_metadata

NUM_CLASSES = 5
SHAPE = "1x3x64x64"
LRASPP = "torchvision.models.segmentation:lraspp_mobilenet_v3_large"
LRASPP_KWARGS = {"weights": None, "weights_backbone": None, "num_classes": NUM_CLASSES}
CLASS_NAMES = ["road", "car", "person", "sky", "other"]


class TinySegNet(torch.nn.Module):
    """Plain-tensor logits at half the input size: conv, ReLU, 1x1 classifier."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.body = torch.nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.classifier = torch.nn.Conv2d(6, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.body(x)))


@pytest.fixture(scope="module")
def lraspp() -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.segmentation.lraspp_mobilenet_v3_large(**LRASPP_KWARGS).eval()


@pytest.fixture(scope="module")
def sdk_checkpoint(tmp_path_factory, lraspp) -> Path:
    path = tmp_path_factory.mktemp("sdk") / "lraspp.pth"
    torch.save(
        {
            "arch": LRASPP,
            "arch_kwargs": LRASPP_KWARGS,
            "state_dict": lraspp.state_dict(),
            "class_names": CLASS_NAMES,
            "input": {"mean": [0.3, 0.4, 0.5], "std": [0.2, 0.2, 0.2], "channel_order": "BGR", "size": [64, 64]},
        },
        path,
    )
    return path


def _run(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input": x})))


def _torch_out(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    return (out["out"] if isinstance(out, dict) else getattr(out, "logits", out)).numpy()


# --------------------------------------------------------------------------- the happy paths
def test_sdk_checkpoint_with_defaults(sdk_checkpoint, lraspp, capsys):
    """``pgn-export model.pth`` alone: p 0.5, label uni, paper form, output beside the checkpoint."""
    assert main([str(sdk_checkpoint)]) == 0
    out = sdk_checkpoint.with_name("lraspp.pgn.onnx")
    assert f"wrote {out}" in capsys.readouterr().out
    meta = read_metadata(out)
    assert meta.spec.p == (0.5,) and meta.spec.labels == ("uni",)
    assert (meta.spec.form, meta.spec.resolution, meta.spec.bias) == ("paper", "feature", False)
    assert meta.pgn_outputs == ["pgn_uni_p0.5"] and meta.original_outputs == ["out"]
    assert meta.class_names == CLASS_NAMES and meta.num_classes == NUM_CLASSES
    assert meta.input.mean == (0.3, 0.4, 0.5) and meta.input.channel_order == "BGR"
    assert meta.input.size == (64, 64) and not meta.input.assumed_normalization
    x = np.random.default_rng(0).standard_normal((2, 3, 48, 80)).astype(np.float32)
    outputs = _run(out, x)
    np.testing.assert_allclose(outputs["out"], _torch_out(lraspp, x), rtol=1e-4, atol=1e-5)
    assert outputs["pgn_uni_p0.5"].shape == (2, 1, 48, 80)


def test_options_and_json(sdk_checkpoint, tmp_path, capsys):
    out = tmp_path / "all.onnx"
    argv = [str(sdk_checkpoint), "-o", str(out), "--p", "0.3", "--p", "2", "--label", "both", "--form", "exact",
            "--bias", "--resolution", "output", "--pred", "--baselines", "--input-shape", "2x3x32x48", "--json"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["path"] == str(out)
    meta = read_metadata(out)
    assert printed["metadata"] == meta.to_json()
    assert meta.pgn_outputs == ["pgn_uni_p0.3", "pgn_uni_p2", "pgn_oh_p0.3", "pgn_oh_p2"]
    assert meta.spec.form == "exact" and meta.spec.bias and meta.spec.resolution == "output"
    assert meta.pred == "pred" and meta.baselines == ["msp", "entropy"]
    assert meta.input.size == (32, 48)


def test_python_api_returns_path_and_metadata(sdk_checkpoint, tmp_path):
    result = export_model(sdk_checkpoint, tmp_path / "api.onnx",
                          spec=make_spec(p=1, labels="oh", keep_feature_size=True))
    assert result.path == tmp_path / "api.onnx" and result.path.is_file()
    assert result.metadata.pgn_outputs == ["pgn_oh_p1"] and result.metadata.spec.keep_feature_size
    assert result.metadata.to_json() == read_metadata(result.path).to_json()


def test_plain_state_dict_with_arch_and_unknown_normalization(tmp_path, capsys):
    torch.manual_seed(1)
    net = TinySegNet().eval()
    torch.save(net.state_dict(), tmp_path / "tiny.pth")
    argv = [str(tmp_path / "tiny.pth"), "--arch", f"{__name__}:TinySegNet", "--arch-kwargs", '{"num_classes": 3}',
            "--input-shape", "1x3x16x16", "--pred"]
    assert main(argv) == 0
    assert "assumed defaults" in capsys.readouterr().out
    meta = read_metadata(tmp_path / "tiny.pgn.onnx")
    assert meta.input.assumed_normalization and meta.input.mean == (0.485, 0.456, 0.406)
    assert meta.head.resize == "none" and meta.num_classes == 3
    x = np.random.default_rng(1).standard_normal((3, 3, 21, 17)).astype(np.float32)
    outputs = _run(tmp_path / "tiny.pgn.onnx", x)
    np.testing.assert_allclose(outputs["out"], _torch_out(net, x), rtol=1e-5, atol=1e-6)
    assert outputs["pred"].shape == (3, 11, 9)


def test_dynamo_exporter(tmp_path):
    torch.manual_seed(2)
    torch.save(TinySegNet().state_dict(), tmp_path / "tiny.pth")
    result = export_model(tmp_path / "tiny.pth", arch=f"{__name__}:TinySegNet", exporter="dynamo",
                          input_shape="2x3x16x16")
    assert result.metadata.pgn_outputs == ["pgn_uni_p0.5"]
    outputs = _run(result.path, np.zeros((1, 3, 10, 14), np.float32))
    assert outputs["pgn_uni_p0.5"].shape == (1, 1, 5, 7)


def test_torchscript_archive(tmp_path):
    torch.manual_seed(3)
    net = TinySegNet().eval()
    torch.jit.save(torch.jit.trace(net, torch.randn(1, 3, 16, 16)), tmp_path / "tiny.pt")
    result = export_model(tmp_path / "tiny.pt", input_shape="1x3x16x16")
    x = np.random.default_rng(3).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(_run(result.path, x)["out"], _torch_out(net, x), rtol=1e-5, atol=1e-6)


def test_onnx_file_is_grafted(tmp_path, lraspp):
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(lraspp, (torch.randn(1, 3, 64, 64),), str(plain), dynamo=False, input_names=["image"],
                      output_names=["logits"], opset_version=17)
    result = export_model(plain, spec=make_spec(labels="oh"))
    assert result.path == tmp_path / "plain.pgn.onnx"
    meta = result.metadata
    assert meta.input.name == "image" and meta.input.size == (64, 64) and not meta.input.dynamic_size
    assert meta.original_outputs == ["logits"] and meta.pgn_outputs == ["pgn_oh_p0.5"]


def test_transformers_logits_through_a_trusted_pickle(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.SegformerConfig(num_labels=4, depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32],
                                          decoder_hidden_size=16, num_attention_heads=[1, 1, 1, 1])
    torch.manual_seed(4)
    model = transformers.SegformerForSemanticSegmentation(config).eval()
    torch.save(model, tmp_path / "segformer.pth")
    with pytest.raises(PGNError, match="--trust-pickle"):
        export_model(tmp_path / "segformer.pth", input_shape=SHAPE)
    result = export_model(tmp_path / "segformer.pth", trust_pickle=True, input_shape=SHAPE)
    meta = result.metadata
    assert meta.original_outputs == ["logits"] and meta.head.resize == "none"
    outputs = _run(result.path, np.zeros((2, 3, 64, 64), np.float32))
    assert outputs["logits"].shape == (2, 4, 16, 16) and outputs["pgn_uni_p0.5"].shape == (2, 1, 16, 16)


def test_console_script_runs(sdk_checkpoint, tmp_path):
    out = tmp_path / "sub.onnx"
    script = Path(sys.executable).with_name("pgn-export")
    done = subprocess.run([str(script), str(sdk_checkpoint), "-o", str(out), "--json"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["path"] == str(out) and out.is_file()


# --------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, sdk_checkpoint) -> dict[str, Path]:
    """Damaged and unsuitable inputs, each alone in its own folder."""
    import torchvision

    root = tmp_path_factory.mktemp("bad")
    files: dict[str, Path] = {}

    def place(name: str, filename: str) -> Path:
        (root / name).mkdir()
        files[name] = root / name / filename
        return files[name]

    data = sdk_checkpoint.read_bytes()
    place("truncated", "model.pth").write_bytes(data[: len(data) // 3])
    place("corrupt", "model.pth").write_bytes(os.urandom(2048))
    place("corrupt_onnx", "model.onnx").write_bytes(os.urandom(2048))
    torch.save(TinySegNet(), place("pickle", "model.pth"))
    classifier = {"arch": "torchvision.models:resnet18", "arch_kwargs": {"weights": None, "num_classes": 7}}
    torch.save({**classifier, "state_dict": torchvision.models.resnet18(num_classes=7).state_dict()},
               place("classifier", "model.pth"))
    files["missing"] = root / "missing" / "model.pth"
    (root / "missing").mkdir()
    return files


def _exit_code(argv: list[str]) -> int:
    """``main(argv)``'s exit status, also when argparse rejects the arguments (SystemExit)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def _folder_snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize(
    "case,extra,message",
    [
        ("missing", [], "no such file"),
        ("truncated", [], "truncated or corrupt"),
        ("corrupt", [], "corrupt"),
        ("corrupt_onnx", [], "not a readable ONNX model"),
        ("pickle", [], "arbitrary code"),
        ("classifier", ["--input-shape", "1x3x32x32"], "not a segmentation network"),
    ],
)
def test_bad_checkpoints_fail_in_one_line_and_write_nothing(bad_files, capsys, case, extra, message):
    path = bad_files[case]
    before = _folder_snapshot(path.parent)
    assert main([str(path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pgn-export: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert _folder_snapshot(path.parent) == before


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--p", "0"], "p must be a finite number > 0"),
        (["--p", "-1"], "p must be a finite number > 0"),
        (["--label", "soft"], "invalid choice: 'soft'"),
        (["--label", "gt"], "needs --form exact"),
        (["-o", "{missing}/out.onnx"], "does not exist"),
        (["--input-shape", "3x64x64"], "must have 4 sizes"),
        (["--arch-kwargs", "{not json"], "not valid JSON"),
        (["--exporter", "magic"], "invalid choice: 'magic'"),
    ],
)
def test_bad_options_fail_before_loading(sdk_checkpoint, tmp_path, monkeypatch, capsys, extra, message):
    def no_loading(*_args, **_kwargs):
        raise AssertionError("the checkpoint was loaded before the options were validated")

    monkeypatch.setattr("pgn_deploy.export.load.load_model", no_loading)
    before = _folder_snapshot(sdk_checkpoint.parent)
    argv = [str(sdk_checkpoint), *[arg.replace("{missing}", str(tmp_path / "nowhere")) for arg in extra]]
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert _folder_snapshot(sdk_checkpoint.parent) == before
    assert not (tmp_path / "nowhere").exists()


def test_existing_output_needs_force(sdk_checkpoint, tmp_path, capsys):
    out = tmp_path / "taken.onnx"
    out.write_bytes(b"keep me")
    assert main([str(sdk_checkpoint), "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main([str(sdk_checkpoint), "-o", str(out), "--force"]) == 0
    assert read_metadata(out).pgn_outputs == ["pgn_uni_p0.5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.onnx"]  # no temporary file left


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(PGNError, match="no such file"):
        main([str(tmp_path / "missing.pth"), "--debug"])


def test_already_grafted_model_is_refused(sdk_checkpoint, tmp_path, capsys):
    grafted = export_model(sdk_checkpoint, tmp_path / "once.onnx").path
    assert main([str(grafted), "-o", str(tmp_path / "twice.onnx")]) == 2
    assert "already grafted" in capsys.readouterr().err
    assert not (tmp_path / "twice.onnx").exists()
    assert onnx.load(str(grafted)).graph.output[0].name == "out"
