"""Sampling baselines the paper compares PGN with: MC dropout and deep ensembles.

Both run on ONNX Runtime from models exported here, with the grafted model's own
pre-processing, so that every method of an evaluation sees the same pixels.

* **MC dropout** (:func:`export_mc_dropout`): the network is exported with every dropout layer
  replaced by a sampled dropout that draws a fresh mask on every call (ONNX
  ``RandomUniformLike``, unseeded), also in eval mode. :class:`MCDropoutScorer` tiles one image
  along the batch axis, at most ``batch`` copies per call, so the ``N`` samples cost
  ``ceil(N / batch)`` calls -- ``N`` full forward passes of compute. Maps: ``mc_entropy``
  (entropy of the mean softmax, nats) and ``mc_variance`` (variance of the softmax over the
  samples, averaged over classes; population variance, 0 for one sample).
* **Deep ensembles** (:class:`EnsembleScorer`): one plain ONNX export per member checkpoint;
  maps ``ens_entropy`` and ``ens_msp`` (1 - max of the mean softmax); cost: one forward pass
  per member.

Output maps are float32 H x W at the model's output resolution (the image's size).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pgn_deploy.contract import BadInputError, InputInfo, require
from pgn_deploy.runtime.preprocess import preprocess_image
from pgn_deploy.runtime.result import resize_score

MC_MAPS = ("mc_entropy", "mc_variance")
ENSEMBLE_MAPS = ("ens_entropy", "ens_msp")
COSTS = {
    "pgn": "no extra pass: outputs of the model's one forward pass",
    "msp": "no extra pass: output of the model's one forward pass",
    "entropy": "no extra pass: output of the model's one forward pass",
    "mc_dropout": "{n} forward pass(es) of the network with dropout sampling",
    "ensemble": "{n} forward pass(es), one per member network ({n} network(s) in memory)",
}
"""What each method costs at inference, per image (``{n}``: samples or members)."""


def cost(method: str, n: int = 1) -> str:
    """:data:`COSTS` of ``method`` for ``n`` samples / members, in words."""
    text = COSTS[method].format(n=n)
    return text.replace("(es)", "" if n == 1 else "es").replace("(s)", "" if n == 1 else "s")


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax of float logits along ``axis`` (float32 result)."""
    shifted = logits.astype(np.float32) - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def entropy(probs: np.ndarray, axis: int = 0) -> np.ndarray:
    """Entropy in nats of probabilities along ``axis`` (0 log 0 = 0)."""
    return -(probs * np.log(np.clip(probs, 1e-30, None))).sum(axis=axis)


def _sampled_dropout_class() -> type:
    torch = require("torch", "exporting an MC dropout model")

    class SampledDropout(torch.nn.Module):
        """Dropout that samples a mask on every call, in eval mode too (exports to ONNX).

        ``channelwise``: one draw per (sample, channel) as ``nn.Dropout2d``; else per element.
        ``rate`` 0 is the identity.
        """

        def __init__(self, rate: float, channelwise: bool) -> None:
            super().__init__()
            self.rate, self.channelwise = float(rate), channelwise

        def forward(self, x: Any) -> Any:
            if self.rate == 0.0:
                return x
            shape_of = x[:, :, :1, :1] if self.channelwise and x.dim() == 4 else x
            keep = (torch.rand_like(shape_of) >= self.rate).to(x.dtype)
            return x * keep / (1.0 - self.rate)

    return SampledDropout


def replace_dropout(module: Any, rate: float | None = None) -> int:
    """Replace every ``nn.Dropout``/``nn.Dropout2d`` in ``module`` (in place) by a sampled one.

    ``rate`` overrides each layer's own probability (0 switches dropout off). Returns the
    number of layers replaced.
    """
    torch = require("torch", "exporting an MC dropout model")
    sampled = _sampled_dropout_class()
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, (torch.nn.Dropout, torch.nn.Dropout2d)):
            p = child.p if rate is None else rate
            setattr(module, name, sampled(p, isinstance(child, torch.nn.Dropout2d)))
            count += 1
        else:
            count += replace_dropout(child, rate)
    return count


def _export_plain(checkpoint: str | os.PathLike[str], out: Path, info: InputInfo,
                  rate: float | None, mc: bool, force: bool) -> Path:
    torch = require("torch", "exporting a baseline model")
    from pgn_deploy.export.load import load_model
    from pgn_deploy.export.onnx_export import export_onnx

    loaded = load_model(checkpoint)
    if loaded.module is None:
        raise BadInputError(f"{checkpoint}: baselines need a PyTorch checkpoint, not an ONNX file")
    if mc and replace_dropout(loaded.module, rate) == 0:
        raise BadInputError(f"{checkpoint}: the network has no dropout layer, so MC dropout does not apply")
    size = info.size or (128, 256)
    example = torch.zeros(1, 3, *size)
    export_onnx(loaded.module, example, out, exporter="torchscript", dynamic=True, force=force)
    return out


def export_mc_dropout(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], info: InputInfo,
                      rate: float | None = None, force: bool = False) -> Path:
    """Export ``checkpoint`` as an ONNX model whose dropout layers sample on every call.

    ``rate`` overrides the dropout probability of every layer (0: dropout off, the plain
    model). Raises a PGNError if the network has no dropout layer.
    """
    return _export_plain(checkpoint, Path(out), info, rate, mc=True, force=force)


def export_member(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], info: InputInfo,
                  force: bool = False) -> Path:
    """Export one ensemble member (the plain network, logits output) to ONNX."""
    return _export_plain(checkpoint, Path(out), info, None, mc=False, force=force)


class _OnnxLogits:
    """An ONNX model returning logits (first output), fed with the grafted model's preprocessing;
    on ONNX Runtime's CUDA provider when it is installed, else on the CPU."""

    def __init__(self, path: str | os.PathLike[str], info: InputInfo) -> None:
        import onnxruntime as ort

        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(str(path), providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.info = info

    def probs(self, image: np.ndarray, color: str, copies: int = 1) -> np.ndarray:
        """Softmax of the logits, ``copies x C x H x W`` at the image's size."""
        x = preprocess_image(image, color, self.info, np.dtype(np.float32))[None]
        if copies > 1:
            x = np.repeat(x, copies, axis=0)
        logits = self.session.run([self.output_name], {self.input_name: x})[0]
        probs = softmax(logits)
        size = image.shape[:2]
        if probs.shape[-2:] != size:
            probs = np.stack([[resize_score(c, size) for c in sample] for sample in probs])
        return probs


class MCDropoutScorer:
    """MC dropout maps of one image from ``samples`` stochastic passes of an exported model,
    at most ``batch`` copies of the image per call (mean and variance merged per chunk)."""

    method = "mc_dropout"
    names = MC_MAPS

    def __init__(self, model_path: str | os.PathLike[str], info: InputInfo, samples: int,
                 batch: int = 4) -> None:
        if samples < 1:
            raise BadInputError(f"MC dropout needs at least one sample, got {samples}")
        if batch < 1:
            raise BadInputError(f"the MC dropout batch must be at least 1, got {batch}")
        self.model = _OnnxLogits(model_path, info)
        self.samples, self.batch = samples, batch

    def __call__(self, image: np.ndarray, color: str = "BGR") -> dict[str, np.ndarray]:
        """``{mc_entropy, mc_variance}`` of one uint8 H x W x 3 image (``color`` order): entropy of the mean
        softmax and the per-class variance averaged over classes, each H x W float32."""
        count, mean, m2 = 0, None, None
        for first in range(0, self.samples, self.batch):
            probs = self.model.probs(image, color, copies=min(self.batch, self.samples - first))
            n, chunk_mean = probs.shape[0], probs.mean(axis=0)
            chunk_m2 = ((probs - chunk_mean) ** 2).sum(axis=0)
            if mean is None:
                count, mean, m2 = n, chunk_mean, chunk_m2
            else:  # Chan et al.'s pairwise update of mean and summed squared deviations
                delta = chunk_mean - mean
                total = count + n
                mean = mean + delta * (n / total)
                m2 = m2 + chunk_m2 + delta**2 * (count * n / total)
                count = total
        return {
            "mc_entropy": entropy(mean).astype(np.float32),
            "mc_variance": (m2 / count).mean(axis=0).astype(np.float32),
        }


class EnsembleScorer:
    """Deep-ensemble maps of one image from the mean softmax of the member models."""

    method = "ensemble"
    names = ENSEMBLE_MAPS

    def __init__(self, model_paths: Sequence[str | os.PathLike[str]], info: InputInfo) -> None:
        if not model_paths:
            raise BadInputError("a deep ensemble needs at least one member")
        self.members = [_OnnxLogits(path, info) for path in model_paths]

    def __call__(self, image: np.ndarray, color: str = "BGR") -> dict[str, np.ndarray]:
        """``{ens_entropy, ens_msp}`` of one uint8 H x W x 3 image (``color`` order): entropy and
        1 - max of the members' mean softmax, each H x W float32."""
        mean = np.mean([member.probs(image, color)[0] for member in self.members], axis=0)
        return {
            "ens_entropy": entropy(mean).astype(np.float32),
            "ens_msp": (1.0 - mean.max(axis=0)).astype(np.float32),
        }
