"""Safe checkpoint loading: the five kinds pgn-export reads and one clear error for bad files."""
from __future__ import annotations

import os

import onnx
import pytest
import torch

from pgn_deploy.contract import ModelLoadError
from pgn_deploy.export.load import build_module, load_model

CONV_ARCH = "torch.nn:Conv2d"
CONV_KWARGS = {"in_channels": 3, "out_channels": 5, "kernel_size": 1}


def build_unannotated():  # an importable builder without a return annotation (see the tests)
    return torch.nn.Conv2d(**CONV_KWARGS)


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv2d(**CONV_KWARGS).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory, net):
    """One file of every kind (and of every kind of damage), written once."""
    folder = tmp_path_factory.mktemp("ckpt")
    x = torch.randn(1, 3, 8, 8)
    sdk = {
        "arch": CONV_ARCH,
        "arch_kwargs": CONV_KWARGS,
        "state_dict": net.state_dict(),
        "class_names": ["a", "b", "c", "d", "e"],
        "input": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "channel_order": "BGR", "size": [8, 8]},
    }
    paths = {name: folder / name for name in (
        "sdk.pth", "sd.pth", "ts.pt", "full.pth", "model.onnx", "trunc.pth", "garbage.pth",
        "empty.pth", "trunc.onnx", "garbage.onnx", "list.pth",
    )}
    torch.save(sdk, paths["sdk.pth"])
    torch.save(net.state_dict(), paths["sd.pth"])
    torch.jit.save(torch.jit.trace(net, x), paths["ts.pt"])
    torch.save(net, paths["full.pth"])
    torch.onnx.export(net, (x,), str(paths["model.onnx"]), dynamo=False, input_names=["input"])
    data = paths["sdk.pth"].read_bytes()
    paths["trunc.pth"].write_bytes(data[: len(data) // 2])
    paths["garbage.pth"].write_bytes(os.urandom(4096))
    paths["empty.pth"].write_bytes(b"")
    onnx_bytes = paths["model.onnx"].read_bytes()
    paths["trunc.onnx"].write_bytes(onnx_bytes[: len(onnx_bytes) // 2])
    paths["garbage.onnx"].write_bytes(os.urandom(4096))
    torch.save([torch.zeros(1)], paths["list.pth"])
    return paths


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sdk_checkpoint_needs_no_flag(files, net):
    loaded = load_model(files["sdk.pth"])
    assert loaded.kind == "checkpoint"
    assert _same_weights(loaded.module, net) and not loaded.module.training
    assert loaded.class_names == ["a", "b", "c", "d", "e"]
    assert loaded.input["channel_order"] == "BGR" and loaded.input["size"] == [8, 8]


def test_sdk_checkpoint_arch_flags_override_the_stored_ones(files):
    with pytest.raises(ModelLoadError, match="does not fit"):
        load_model(files["sdk.pth"], arch_kwargs={**CONV_KWARGS, "out_channels": 7})


def test_plain_state_dict_needs_arch(files, net):
    with pytest.raises(ModelLoadError, match="--arch"):
        load_model(files["sd.pth"])
    loaded = load_model(files["sd.pth"], arch=CONV_ARCH, arch_kwargs=CONV_KWARGS)
    assert loaded.kind == "state_dict" and _same_weights(loaded.module, net)


def test_torchscript_archive(files, net):
    loaded = load_model(files["ts.pt"])
    assert loaded.kind == "torchscript"
    x = torch.randn(2, 3, 5, 7)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), net(x))


def test_onnx_file_is_passed_through(files):
    loaded = load_model(files["model.onnx"])
    assert loaded.kind == "onnx" and loaded.module is None
    assert isinstance(loaded.onnx_model, onnx.ModelProto)


def test_full_pickle_only_with_trust_pickle(files, net):
    with pytest.raises(ModelLoadError, match=r"arbitrary code.*--trust-pickle"):
        load_model(files["full.pth"])
    loaded = load_model(files["full.pth"], trust_pickle=True)
    assert loaded.kind == "pickle" and _same_weights(loaded.module, net)


@pytest.mark.parametrize(
    "name,message",
    [
        ("missing.pth", "no such file"),
        ("trunc.pth", "truncated or corrupt"),
        ("garbage.pth", "corrupt"),
        ("empty.pth", "truncated or corrupt"),
        ("trunc.onnx", "not a readable ONNX model"),
        ("garbage.onnx", "not a readable ONNX model"),
        ("list.pth", "holds a list"),
    ],
)
def test_bad_files_give_one_line(files, tmp_path, name, message):
    path = files.get(name, tmp_path / name)
    with pytest.raises(ModelLoadError, match=message) as info:
        load_model(path, trust_pickle=name == "list.pth")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "arch,message",
    [
        ("no_such_package.models:net", "cannot import"),
        ("torch.nn:NoSuchNet", "has no"),
        ("torch.nn.Conv2d", "not of the form"),
        ("torch.nn:Conv2d", "failed"),  # missing required constructor arguments
        ("torch:zeros", "returned a Tensor"),
    ],
)
def test_unknown_or_broken_arch(arch, message):
    with pytest.raises(ModelLoadError, match=message) as info:
        build_module(arch, {} if arch != "torch:zeros" else {"size": (1,)})
    assert "\n" not in str(info.value)


def test_state_dict_mismatch_names_the_keys(files, tmp_path, net):
    bad = dict(net.state_dict())
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "extra.pth")
    with pytest.raises(ModelLoadError, match=r"unexpected key.*extra\.weight"):
        load_model(tmp_path / "extra.pth", arch=CONV_ARCH, arch_kwargs=CONV_KWARGS)
    del bad["extra.weight"], bad["bias"]
    torch.save(bad, tmp_path / "missing.pth")
    with pytest.raises(ModelLoadError, match=r"missing key.*'bias'"):
        load_model(tmp_path / "missing.pth", arch=CONV_ARCH, arch_kwargs=CONV_KWARGS)
    with pytest.raises(ModelLoadError, match="size mismatch"):
        load_model(files["sd.pth"], arch=CONV_ARCH, arch_kwargs={**CONV_KWARGS, "out_channels": 4})


def _sdk_file(tmp_path, arch: str, arch_kwargs: dict) -> os.PathLike:
    path = tmp_path / "ckpt.pth"
    torch.save({"arch": arch, "arch_kwargs": arch_kwargs, "state_dict": {"w": torch.zeros(1)}}, path)
    return path


def test_checkpoint_cannot_name_arbitrary_code(tmp_path):
    marker = tmp_path / "ran"
    path = _sdk_file(tmp_path, "os:system", {"command": f"touch {marker}"})
    with pytest.raises(ModelLoadError, match="standard-library"):
        load_model(path)
    assert not marker.exists()
    path = _sdk_file(tmp_path, "torch:load", {"f": str(path)})
    with pytest.raises(ModelLoadError, match="nn.Module"):
        load_model(path)


def test_unannotated_builder_needs_the_arch_flag(tmp_path, net):
    arch = f"{__name__}:build_unannotated"
    path = tmp_path / "ckpt.pth"
    torch.save({"arch": arch, "arch_kwargs": {}, "state_dict": net.state_dict()}, path)
    with pytest.raises(ModelLoadError, match=f"pass --arch {arch}"):
        load_model(path)
    assert _same_weights(load_model(path, arch=arch).module, net)


def test_annotated_torchvision_builder_is_accepted_from_a_checkpoint(tmp_path):
    arch = "torchvision.models.segmentation:lraspp_mobilenet_v3_large"
    kwargs = {"weights": None, "weights_backbone": None, "num_classes": 3}
    state_dict = build_module(arch, kwargs).state_dict()
    path = tmp_path / "lraspp.pth"
    torch.save({"arch": arch, "arch_kwargs": kwargs, "state_dict": state_dict}, path)
    loaded = load_model(path)
    assert loaded.kind == "checkpoint"
    assert all(torch.equal(loaded.module.state_dict()[k], v) for k, v in state_dict.items())
