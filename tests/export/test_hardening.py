"""pgn-export against hostile inputs (issue 19): output == input (item 5), the output checked
before loading (item 11), pretrained-weight downloads (item 12), pickles that run commands (item 13)."""
from __future__ import annotations

import os
import time

import pytest
import torch

from pgn_deploy.cli.export import main as export_main
from pgn_deploy.contract import BadInputError, ModelLoadError
from pgn_deploy.export.api import export_model
from pgn_deploy.export.load import build_module, load_model
from tests.support.eval_models import save_checkpoint


def _export(capsys, *argv) -> tuple[int, str]:
    code = export_main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink", "dotted"])
def test_the_output_is_never_the_input_with_or_without_force(tmp_path, capsys, how):
    checkpoint = save_checkpoint(tmp_path / "same.pth")
    original = checkpoint.read_bytes()
    output = {"same": checkpoint, "symlink": tmp_path / "link.pth", "hardlink": tmp_path / "hard.pth",
              "dotted": tmp_path / "." / "same.pth"}[how]
    if how == "symlink":
        output.symlink_to(checkpoint)
    elif how == "hardlink":
        os.link(checkpoint, output)
    for force in ([], ["--force"]):
        code, err = _export(capsys, checkpoint, "-o", output, *force)
        assert code == 2 and "is the input" in err and len(err.strip().splitlines()) == 1, err
    assert checkpoint.read_bytes() == original


def test_the_output_folder_is_checked_before_the_checkpoint_is_loaded(tmp_path, monkeypatch):
    checkpoint = save_checkpoint(tmp_path / "net.pth")
    import pgn_deploy.export.load as load

    def never(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before the output path was checked")

    monkeypatch.setattr(load, "load_model", never)
    with pytest.raises(BadInputError, match="does not exist"):
        export_model(checkpoint, tmp_path / "missing" / "out.onnx")
    (tmp_path / "out.onnx").write_bytes(b"keep")
    with pytest.raises(Exception, match="exists"):
        export_model(checkpoint, tmp_path / "out.onnx")


def test_pretrained_weights_in_arch_kwargs_are_refused_without_network(tmp_path, capsys):
    torchvision = pytest.importorskip("torchvision")
    del torchvision
    path = tmp_path / "lraspp.pth"
    torch.save({"arch": "torchvision.models.segmentation:lraspp_mobilenet_v3_large",
                "arch_kwargs": {"weights": "DEFAULT"}, "state_dict": {"x": torch.zeros(1)}}, path)
    start = time.monotonic()
    code, err = _export(capsys, path, "-o", tmp_path / "out.onnx")
    assert code == 2 and "pretrained weights" in err and "network" in err, err
    assert time.monotonic() - start < 60 and not (tmp_path / "out.onnx").exists()


def downloading_net() -> torch.nn.Module:
    """A constructor that fetches weights the way torchvision does (through torch.hub)."""
    torch.hub.load_state_dict_from_url(f"http://127.0.0.1:9/pgn-test-{os.getpid()}-{time.time_ns()}.pth")
    return torch.nn.Conv2d(3, 2, 1)


def test_a_constructor_that_downloads_is_stopped_before_the_network(tmp_path):
    with pytest.raises(ModelLoadError, match="tried to download http://127.0.0.1:9/pgn-test-"):
        build_module(f"{__name__}:downloading_net", {}, trusted=True)


class _RunsACommand:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ.get("PGN_TEST_PWNED", "/nonexistent/pwned"),))


@pytest.mark.parametrize("trust", [False, True])
def test_a_pickle_that_calls_os_system_is_refused_as_code_even_when_trusted(tmp_path, monkeypatch, trust):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("PGN_TEST_PWNED", str(marker))
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _RunsACommand()}, path)
    with pytest.raises(ModelLoadError) as info:
        load_model(path, trust_pickle=trust)
    message = str(info.value)
    assert "corrupt" not in message and "runs code" in message and "system" in message, message
    assert not marker.exists()
