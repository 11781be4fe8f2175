"""pgn-check: passes on honest exports, fails on tampered ones, one line for bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

from pgn_deploy.cli.check import main
from pgn_deploy.contract import make_spec, read_metadata, write_metadata
from pgn_deploy.eval.checks.parity import check_parity
from pgn_deploy.export.api import export_model
from tests.support.networks import TinySegNet

LRASPP = "torchvision.models.segmentation:lraspp_mobilenet_v3_large"
LRASPP_KWARGS = {"weights": None, "weights_backbone": None, "num_classes": 5}
TINY = "tests.support.networks:TinySegNet"


def _lraspp_checkpoint(path: Path, seed: int) -> Path:
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(**LRASPP_KWARGS)
    torch.save({"arch": LRASPP, "arch_kwargs": LRASPP_KWARGS, "state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("check")


@pytest.fixture(scope="module")
def checkpoint(folder) -> Path:
    return _lraspp_checkpoint(folder / "lraspp.pth", seed=0)


@pytest.fixture(scope="module")
def grafted(folder, checkpoint) -> Path:
    """Paper form, both labels, two p, pred and baselines, exported at 64 x 64."""
    return export_model(checkpoint, folder / "paper.onnx",
                        spec=make_spec(p=[0.5, 1], labels="both", pred=True, baselines=True),
                        input_shape="1x3x64x64").path


def _checks(report) -> dict[tuple[str, str], str]:
    return {(r.check, r.output): r.status for r in report.results}


def test_passes_without_reference(grafted, capsys):
    assert main([str(grafted)]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("PASS") and "self" in out and "pgn_oh_p1" in out
    report = check_parity(grafted)
    checks = _checks(report)
    names = ["pgn_uni_p0.5", "pgn_uni_p1", "pgn_oh_p0.5", "pgn_oh_p1", "msp", "entropy", "pred"]
    assert all(checks[("self", name)] == "pass" for name in names)
    assert checks[("pruned", "out")] == "pass" and checks[("outputs", "out")] == "pass"
    assert report.input_shape == (2, 3, 64, 64) and report.passed


def test_passes_against_the_checkpoint(grafted, checkpoint, capsys):
    assert main([str(grafted), "--reference", str(checkpoint), "--json", "--samples", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["tolerances"]["reference"] == 1e-4
    checks = {(r["check"], r["output"]): r for r in report["results"]}
    assert checks[("reference-outputs", "out")]["status"] == "pass"
    for name in ("pgn_uni_p0.5", "pgn_oh_p1", "msp", "entropy", "pred"):
        assert checks[("reference", name)]["status"] == "pass"
        assert checks[("reference", name)]["compared"] > 0


@pytest.mark.parametrize(
    "arch_kwargs,resolution",
    [
        ({"num_classes": 4, "channels": [6, 5], "strides": [2, 4], "align_corners": True}, "feature"),
        ({"num_classes": 4, "channels": [6], "strides": [2], "mode": "nearest"}, "output"),
    ],
)
def test_exact_form_matches_autograd(tmp_path, arch_kwargs, resolution):
    torch.manual_seed(5)
    torch.save({"arch": TINY, "arch_kwargs": arch_kwargs, "state_dict": TinySegNet(**arch_kwargs).state_dict()},
               tmp_path / "tiny.pth")
    spec = make_spec(p=[0.3, 2], labels=["uni", "oh", "gt"], form="exact", bias=True, resolution=resolution)
    exported = export_model(tmp_path / "tiny.pth", spec=spec, input_shape="1x3x32x40").path
    report = check_parity(exported, tmp_path / "tiny.pth", input_shape="2x3x29x35", pixels=6)
    assert report.passed, [r for r in report.results if r.status != "pass"]
    autograd = [r for r in report.results if r.check == "autograd"]
    assert {r.output for r in autograd} == set(read_metadata(exported).pgn_outputs)
    assert all(r.status == "pass" and r.compared == 12 and r.max_rel < 1e-5 for r in autograd)
    against = "the graph map" if resolution == "output" else "closed form"
    assert all(against in r.note for r in autograd)


def _tampered(source: Path, target: Path, edit) -> Path:
    model = onnx.load(str(source))
    edit(model)
    onnx.save(model, str(target))
    return target


def test_fails_when_the_metadata_lies(grafted, tmp_path, capsys):
    def claim_bias(model):
        meta = read_metadata(model)
        meta.spec = type(meta.spec)(**{**meta.spec.to_json(), "bias": True})
        write_metadata(model, meta)

    lying = _tampered(grafted, tmp_path / "lying.onnx", claim_bias)
    assert main([str(lying), "--samples", "1"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "FAIL"
    assert any(line.split()[:2] == ["self", "pgn_uni_p0.5"] and "FAIL" in line.split() for line in lines)
    assert any(line.split()[:2] == ["self", "msp"] and "PASS" in line.split() for line in lines)


def test_fails_on_negative_maps(grafted, tmp_path):
    def negate_map(model):
        producer = next(n for n in model.graph.node if "pgn_uni_p1" in n.output)
        producer.output[list(producer.output).index("pgn_uni_p1")] = "positive_map"
        model.graph.node.append(onnx.helper.make_node("Neg", ["positive_map"], ["pgn_uni_p1"]))

    statuses = _checks(check_parity(_tampered(grafted, tmp_path / "negative.onnx", negate_map), samples=1))
    assert statuses[("outputs", "pgn_uni_p1")] == "fail" and statuses[("self", "pgn_uni_p1")] == "fail"
    assert statuses[("outputs", "pgn_uni_p0.5")] == "pass"


def test_fails_when_an_output_is_missing(grafted, tmp_path, capsys):
    def drop_entropy(model):
        model.graph.output.remove(next(o for o in model.graph.output if o.name == "entropy"))

    assert main([str(_tampered(grafted, tmp_path / "dropped.onnx", drop_entropy))]) == 1
    assert "listed in the metadata but not a graph output" in capsys.readouterr().out


def test_fails_against_another_checkpoint(grafted, folder, capsys):
    other = _lraspp_checkpoint(folder / "other.pth", seed=1)
    assert main([str(grafted), "--reference", str(other), "--samples", "1", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    checks = {(r["check"], r["output"]): r for r in report["results"]}
    assert not report["passed"] and checks[("reference-outputs", "out")]["status"] == "fail"
    assert checks[("reference", "*")]["status"] == "fail"
    assert "no Conv2d of the reference has the weights" in checks[("reference", "*")]["note"]


def test_onnx_and_torchscript_references_check_the_original_outputs(grafted, checkpoint, folder):
    from pgn_deploy.export.load import load_model

    module = load_model(checkpoint).module
    plain = folder / "plain.onnx"
    torch.onnx.export(module, (torch.randn(1, 3, 64, 64),), str(plain), dynamo=False, input_names=["input"],
                      output_names=["out"], dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}})
    statuses = _checks(check_parity(grafted, plain, samples=1))
    assert statuses[("reference-outputs", "out")] == "pass" and ("reference", "pgn_uni_p1") not in statuses
    traced = folder / "traced.pt"
    torch.jit.save(torch.jit.trace(module, torch.randn(1, 3, 64, 64), strict=False), traced)
    statuses = _checks(check_parity(grafted, traced, samples=1))
    assert statuses[("reference-outputs", "out")] == "pass" and statuses[("reference", "*")] == "skip"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["{folder}/missing.onnx"], "no such file"),
        (["{folder}/lraspp.pth"], "not a readable ONNX model"),
        (["{folder}/plain_for_check.onnx"], "no pgn_deploy metadata"),
        (["{grafted}", "--samples", "0"], "at least 1"),
        (["{grafted}", "--reference", "{folder}/missing.pth"], "no such file"),
    ],
)
def test_bad_input_is_one_line_with_exit_2(grafted, folder, checkpoint, capsys, argv, message):
    plain = folder / "plain_for_check.onnx"
    if not plain.exists():
        model = onnx.load(str(grafted))
        del model.metadata_props[:]
        onnx.save(model, str(plain))
    argv = [a.replace("{folder}", str(folder)).replace("{grafted}", str(grafted)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pgn-check: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_console_script_exit_status(grafted):
    script = Path(sys.executable).with_name("pgn-check")
    done = subprocess.run([str(script), str(grafted), "--samples", "1", "--json"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["passed"] is True
