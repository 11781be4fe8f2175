"""Check a graft against the trained PyTorch head in float64: every classifier family.

A :class:`HeadOracle` says how the trained head maps the classifier's input ``psi`` (taken
from the grafted graph itself, so the backbone's float32 rounding does not enter) to the
logits at the classifier's resolution, in float64 with autograd on the trained weights.
:func:`check_graft_family` then grafts ``paper`` and ``exact`` maps (kept at the classifier's
resolution) and compares

* ``paper``: every pixel with :func:`pgn_deploy.reference.closed_form_pgn` on the explicit
  feature term (unfolded k x k patches, or per token);
* ``exact``: sampled pixels with per-pixel back-propagation (:func:`reference.autograd_pgn`)
  w.r.t. the trained weights (and bias),

to ``rtol`` relative, leaving out pixels whose two largest logits are within ``TIE_GAP`` (the
float32 graph and the float64 oracle may disagree on the argmax there).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from pgn_deploy import reference
from pgn_deploy.contract import PGNSpec, pgn_output_name, read_metadata
from pgn_deploy.graft.attach import graft
from tests.support.graft_checks import run, with_outputs

TIE_GAP = 1e-4


@dataclasses.dataclass
class HeadOracle:
    """The trained head in float64: ``logits(psi)`` (N x C x h x w), ``params`` (weight, then
    bias when there is one; leaf tensors with ``requires_grad``), ``feature_sum(psi, p)``
    (N x h x w, explicit) and the per-class factor ``class_scale`` (C) of an affine after it."""

    logits: Callable[[torch.Tensor], torch.Tensor]
    params: list[torch.Tensor]
    feature_sum: Callable[[torch.Tensor, float], torch.Tensor]
    class_scale: torch.Tensor | None = None


def _leaf(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().double().clone().requires_grad_(True)


def conv_oracle(conv: torch.nn.Conv2d, after: Callable[[torch.Tensor], torch.Tensor] | None = None,
                class_scale: torch.Tensor | None = None) -> HeadOracle:
    """A (k x k, padded, dilated) Conv2d classifier, then ``after`` (a per-class affine)."""
    weight = _leaf(conv.weight)
    bias = _leaf(conv.bias) if conv.bias is not None else None
    pad_h, pad_w = conv.padding
    pads = (pad_h, pad_w, pad_h, pad_w)

    def logits(psi: torch.Tensor) -> torch.Tensor:
        z = F.conv2d(psi, weight, bias, padding=conv.padding, dilation=conv.dilation)
        return after(z) if after is not None else z

    def feature_sum(psi: torch.Tensor, p: float) -> torch.Tensor:
        return reference.patch_p_sum(psi, p, conv.kernel_size, pads, conv.dilation)

    return HeadOracle(logits, [weight] + ([bias] if bias is not None else []), feature_sum, class_scale)


def linear_oracle(linear: torch.nn.Linear, layout: Callable[[torch.Tensor], torch.Tensor]) -> HeadOracle:
    """A per-token Linear head; ``layout`` turns N x T x K (T with any class/register tokens)
    into N x K x h x w the way the model does."""
    weight = _leaf(linear.weight)
    bias = _leaf(linear.bias) if linear.bias is not None else None

    def logits(psi: torch.Tensor) -> torch.Tensor:
        return layout(F.linear(psi, weight, bias))

    def feature_sum(psi: torch.Tensor, p: float) -> torch.Tensor:
        return layout(reference.p_sum(psi, p, dim=-1)[..., None])[:, 0]

    return HeadOracle(logits, [weight] + ([bias] if bias is not None else []), feature_sum)


def check_graft_family(
    plain: onnx.ModelProto,
    oracle: HeadOracle,
    images: np.ndarray,
    *,
    bias: bool = False,
    p: tuple[float, ...] = (0.5, 2.0),
    labels: tuple[str, ...] = ("uni", "oh"),
    pixels: int = 6,
    rtol: float = 1e-4,
    graft_kwargs: dict | None = None,
) -> None:
    """Graft ``plain`` (paper and exact forms) and compare with ``oracle`` (module doc)."""
    for form in ("paper", "exact"):
        spec = PGNSpec(p=p, labels=labels, form=form, bias=bias, keep_feature_size=True)
        grafted = graft(plain, spec, **(graft_kwargs or {}))
        meta = read_metadata(grafted)
        outputs = run(with_outputs(grafted, meta.head.features), {meta.input.name: images})
        psi = torch.from_numpy(outputs[meta.head.features[0]]).double()
        phi = oracle.logits(psi)
        top2 = phi.detach().topk(2, dim=1).values
        clear = (top2[:, 0] - top2[:, 1]).numpy() > TIE_GAP
        assert clear.mean() > 0.9, f"{(~clear).sum()} near-tie pixels: re-initialise the classifier"
        for label in labels:
            for q in p:
                actual = outputs[pgn_output_name(label, q)][:, 0].astype(np.float64)
                assert actual.shape == tuple(phi.shape[:1] + phi.shape[2:]), (actual.shape, phi.shape)
                if form == "paper":
                    expected = reference.closed_form_pgn(oracle.feature_sum(psi, q), phi.detach(), q, label, "paper",
                                                         bias, class_scale=oracle.class_scale).numpy()
                    _assert_close(actual[clear], expected[clear], rtol, f"paper {label} p={q}")
                else:
                    rng = np.random.default_rng(int(q * 10) + len(label))
                    candidates = np.argwhere(clear)
                    picks = rng.choice(len(candidates), min(pixels, len(candidates)), replace=False)
                    chosen = [tuple(int(v) for v in candidates[i]) for i in picks]
                    params = oracle.params if bias else oracle.params[:1]
                    expected = reference.autograd_pgn(phi, params, chosen, q, label).detach().numpy()
                    _assert_close(np.array([actual[c] for c in chosen]), expected, rtol, f"exact {label} p={q}")


def _assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float, name: str) -> None:
    assert np.isfinite(actual).all(), name
    error = np.abs(actual - expected)
    tolerance = rtol * np.abs(expected) + 1e-6 * np.abs(expected).max()
    worst = int(np.argmax(error / np.maximum(tolerance, 1e-300)))
    assert (error <= tolerance).all(), (
        f"{name}: {int((error > tolerance).sum())} of {error.size} off; worst {actual.flat[worst]} vs "
        f"{expected.flat[worst]} (relative {error.flat[worst] / abs(expected.flat[worst]):.2e})"
    )
