"""Safe loading of a segmentation checkpoint into an ``nn.Module`` (or an ONNX model to graft).

:func:`load_model` accepts, by content (not by file name, except ``.onnx``):

(a) the SDK checkpoint convention: a dict saved with ``torch.save`` holding ``arch``
    (``"package.module:callable"``), ``arch_kwargs`` (dict), ``state_dict`` and optionally
    ``class_names`` (list of str) and ``input`` (``mean``, ``std``, ``channel_order``, ``scale``,
    ``size``, ``resize``);
(b) a plain state_dict, with ``arch`` (and ``arch_kwargs``) given by the caller;
(c) a TorchScript archive (``torch.jit.save``);
(d) an ONNX file (returned as an ``onnx.ModelProto``: graft only);
(e) a fully pickled ``nn.Module`` (``torch.save(model)``), only with ``trust_pickle=True``.

Every checkpoint is read with ``torch.load(..., weights_only=True)`` except (e), because
unpickling arbitrary objects runs code from the file. The ``arch`` string names code to
import and call, so an ``arch`` read from a file (not given by the caller) must be an
``nn.Module`` subclass or a function annotated to return one, outside the standard library.
Every failure is a :class:`~pgn_deploy.contract.ModelLoadError` with one line of text.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import pickle
import re
import sys
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from pgn_deploy.contract import ModelLoadError, first_line, load_onnx

KINDS = ("checkpoint", "state_dict", "torchscript", "onnx", "pickle")


@dataclasses.dataclass
class LoadedModel:
    """What :func:`load_model` found.

    ``kind``: one of :data:`KINDS`; ``module``: the network in eval mode on the CPU (``None``
    for ONNX); ``onnx_model``: the ``onnx.ModelProto`` for kind ``onnx`` (else ``None``);
    ``class_names`` and ``input`` (the checkpoint's ``input`` dict) when the file has them.
    """

    source: Path
    kind: str
    module: torch.nn.Module | None = None
    onnx_model: Any = None
    class_names: list[str] | None = None
    input: dict[str, Any] | None = None


def load_model(
    path: str | Path,
    arch: str | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    trust_pickle: bool = False,
) -> LoadedModel:
    """Load a checkpoint, TorchScript archive or ONNX file (see the module docstring).

    ``arch``/``arch_kwargs`` build the network for a plain state_dict and override the ones
    stored in an SDK checkpoint. Raises :class:`ModelLoadError` for a missing, truncated or
    corrupt file, an unknown ``arch`` or a state_dict that does not fit the network.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    if path.suffix.lower() == ".onnx":
        return LoadedModel(path, "onnx", onnx_model=load_onnx(path))
    if _is_torchscript(path):
        return LoadedModel(path, "torchscript", module=_load_torchscript(path))
    content = _torch_load(path, trust_pickle)
    if isinstance(content, torch.nn.Module):
        return LoadedModel(path, "pickle", module=content.eval())
    if not isinstance(content, Mapping):
        raise ModelLoadError(
            f"{path}: holds a {type(content).__name__}, not a checkpoint dict, a state_dict or a module"
        )
    if "state_dict" in content and "arch" in content:
        return _from_sdk_checkpoint(path, content, arch, arch_kwargs)
    if _is_state_dict(content):
        if arch is None:
            raise ModelLoadError(
                f"{path}: is a plain state_dict; pass --arch module:callable "
                "(and --arch-kwargs JSON) to say which network it belongs to"
            )
        module = build_module(arch, arch_kwargs or {}, trusted=True)
        _load_state_dict(module, content, arch, path)
        return LoadedModel(path, "state_dict", module=module.eval())
    raise ModelLoadError(
        f"{path}: a dict with keys {sorted(map(str, content))[:6]} is neither an SDK checkpoint "
        "(arch, arch_kwargs, state_dict) nor a plain state_dict"
    )


# --------------------------------------------------------------------------- file kinds
def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip holding ``<name>/constants.pkl`` (``torch.save`` writes none)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _load_torchscript(path: Path) -> torch.nn.Module:
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:  # torch raises RuntimeError and others for broken archives
        raise ModelLoadError(f"{path}: not a readable TorchScript archive ({first_line(exc)})") from None


_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_BLOCKED_GLOBAL = re.compile(r"GLOBAL (\S+) whose module (\S+) is blocked")
# Constructor arguments that ask torchvision/timm/smp for pretrained weights (a download).
PRETRAINED_KWARGS = ("weights", "weights_backbone", "pretrained", "pretrained_backbone", "encoder_weights")


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    """``torch.load`` with ``weights_only=True``; a pickled object needs ``trust_pickle``."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        blocked = _BLOCKED_GLOBAL.search(str(exc))
        if blocked is not None:  # torch never unpickles these, whatever trust_pickle says
            raise ModelLoadError(
                f"{path}: refused: unpickling it would call {blocked.group(1)} (module "
                f"{blocked.group(2)}), which runs code or commands; --trust-pickle does not allow that"
            ) from None
        unsafe = _UNSAFE_GLOBAL.search(str(exc))
        if unsafe is None:
            raise ModelLoadError(f"{path}: not a readable PyTorch checkpoint (corrupt file?)") from None
        if not trust_pickle:
            raise ModelLoadError(
                f"{path}: holds a pickled Python object ({unsafe.group(1)}); loading it runs "
                "arbitrary code from the file. Pass --trust-pickle (trust_pickle=True) only if you "
                "trust its source, or save an SDK checkpoint (see docs/export.md)"
            ) from None
    except Exception as exc:  # truncated zip, empty file, wrong format: several exception types
        raise ModelLoadError(
            f"{path}: not a readable PyTorch checkpoint, TorchScript archive or ONNX model "
            f"(truncated or corrupt? {first_line(exc)})"
        ) from None
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling runs arbitrary code: anything can fail
        raise ModelLoadError(f"{path}: unpickling failed ({first_line(exc)})") from None


def _is_state_dict(content: Mapping[Any, Any]) -> bool:
    return bool(content) and all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in content.items()
    )


# --------------------------------------------------------------------------- SDK checkpoints
def _from_sdk_checkpoint(
    path: Path, content: Mapping[str, Any], arch: str | None, arch_kwargs: Mapping[str, Any] | None
) -> LoadedModel:
    state_dict = content["state_dict"]
    if not isinstance(state_dict, Mapping) or not _is_state_dict(state_dict):
        raise ModelLoadError(f"{path}: the checkpoint's 'state_dict' is not a dict of tensors")
    stored_kwargs = content.get("arch_kwargs") or {}
    if not isinstance(stored_kwargs, Mapping):
        raise ModelLoadError(f"{path}: the checkpoint's 'arch_kwargs' is not a dict")
    class_names = content.get("class_names")
    if class_names is not None and not (
        isinstance(class_names, (list, tuple)) and all(isinstance(n, str) for n in class_names)
    ):
        raise ModelLoadError(f"{path}: the checkpoint's 'class_names' is not a list of strings")
    input_info = content.get("input")
    if input_info is not None and not isinstance(input_info, Mapping):
        raise ModelLoadError(f"{path}: the checkpoint's 'input' is not a dict")
    arch_name = arch or content["arch"]
    if not isinstance(arch_name, str):
        raise ModelLoadError(f"{path}: the checkpoint's 'arch' is not a 'module:callable' string")
    kwargs = dict(arch_kwargs) if arch_kwargs is not None else dict(stored_kwargs)
    module = build_module(arch_name, kwargs, trusted=arch is not None)
    _load_state_dict(module, state_dict, arch_name, path)
    return LoadedModel(
        path,
        "checkpoint",
        module=module.eval(),
        class_names=list(class_names) if class_names is not None else None,
        input=dict(input_info) if input_info is not None else None,
    )


def build_module(arch: str, arch_kwargs: Mapping[str, Any], trusted: bool = True) -> torch.nn.Module:
    """Import ``"package.module:callable"`` and call it with ``arch_kwargs``; must give an nn.Module.

    ``trusted=False`` (an ``arch`` read from a checkpoint file) refuses standard-library
    modules and callables that are neither an ``nn.Module`` subclass nor a function annotated
    to return one, so that a file cannot name ``os:system`` or similar.
    """
    module_name, sep, attr_path = arch.partition(":")
    if not sep or not module_name or not attr_path:
        raise ModelLoadError(f"arch {arch!r} is not of the form 'package.module:callable'")
    if not trusted and module_name.split(".")[0] in sys.stdlib_module_names:
        raise ModelLoadError(f"arch {arch!r} from the checkpoint names a standard-library module; refused")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(f"unknown arch {arch!r}: cannot import {module_name!r} ({exc})") from None
    for attr in attr_path.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise ModelLoadError(f"unknown arch {arch!r}: {module_name!r} has no {attr_path!r}") from None
    if not callable(target):
        raise ModelLoadError(f"arch {arch!r} is not callable")
    if not trusted and not _builds_module(target):
        raise ModelLoadError(
            f"arch {arch!r} from the checkpoint is neither an nn.Module class nor a function "
            f"annotated '-> nn.Module'; pass --arch {arch} to confirm that you trust it"
        )
    refuse_pretrained(arch, arch_kwargs)
    try:
        with _no_downloads():
            module = target(**arch_kwargs)
    except _DownloadRefused as exc:
        raise ModelLoadError(
            f"building arch {arch!r} with {dict(arch_kwargs)} tried to download {exc}; exports never use the "
            "network (the checkpoint's state_dict holds the weights)") from None
    except Exception as exc:  # the user's constructor may raise anything
        raise ModelLoadError(f"building arch {arch!r} with {dict(arch_kwargs)} failed: {first_line(exc)}") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"arch {arch!r} returned a {type(module).__name__}, not a torch.nn.Module")
    return module


def refuse_pretrained(arch: str, arch_kwargs: Mapping[str, Any]) -> None:
    """:class:`ModelLoadError` when ``arch_kwargs`` ask for pretrained weights (a download):
    a key of :data:`PRETRAINED_KWARGS` whose value is not None/False/"none"/empty."""
    asked = {k: v for k, v in arch_kwargs.items()
             if k in PRETRAINED_KWARGS and v not in (None, False, "", "none", "None")}
    if asked:
        raise ModelLoadError(
            f"arch {arch!r}: arch_kwargs {asked} ask for pretrained weights, which would be downloaded; "
            "exports never use the network: set them to None (the checkpoint's state_dict holds the weights)")


class _DownloadRefused(Exception):
    """Raised instead of a download while a network is being built (the message: the URL)."""


@contextlib.contextmanager
def _no_downloads() -> Iterator[None]:
    """While building a network, ``torch.hub`` downloads raise :class:`_DownloadRefused`
    (torchvision fetches pretrained weights through ``torch.hub.download_url_to_file``)."""
    original = torch.hub.download_url_to_file

    def refuse(url: str, *args: Any, **kwargs: Any) -> None:
        raise _DownloadRefused(url)

    torch.hub.download_url_to_file = refuse
    try:
        yield
    finally:
        torch.hub.download_url_to_file = original


def _builds_module(target: Any) -> bool:
    """Whether ``target`` is an nn.Module class or a Python function annotated to return one."""
    if inspect.isclass(target):
        return issubclass(target, torch.nn.Module)
    if not inspect.isfunction(target):
        return False
    try:
        returns = inspect.signature(target, eval_str=True).return_annotation
    except Exception:  # unresolvable string annotations
        return False
    return inspect.isclass(returns) and issubclass(returns, torch.nn.Module)


def _load_state_dict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], arch: str, path: Path) -> None:
    """``load_state_dict`` with one line naming what does not fit."""
    try:
        result = module.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # size mismatches are raised, not returned
        mismatches = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        detail = mismatches[0] if mismatches else first_line(exc)
        raise ModelLoadError(f"{path}: the state_dict does not fit arch {arch!r}: {detail}") from None
    problems = []
    if result.missing_keys:
        problems.append(f"{len(result.missing_keys)} missing key(s) such as {result.missing_keys[0]!r}")
    if result.unexpected_keys:
        problems.append(f"{len(result.unexpected_keys)} unexpected key(s) such as {result.unexpected_keys[0]!r}")
    if problems:
        raise ModelLoadError(f"{path}: the state_dict does not fit arch {arch!r}: {'; '.join(problems)}")

