"""The PyTorch reference against calculus: explicit outer products and per-pixel autograd."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgn_deploy import reference as R
from pgn_deploy.contract import BadInputError, PGNSpec

P_VALUES = (0.1, 0.3, 0.5, 1.0, 2.0)


def random_head(seed: int, n=2, c=5, dims=(7,), h=4, w=6):
    """Features, weights, bias and logits (float64) of a random multi-branch 1x1 head."""
    gen = torch.Generator().manual_seed(seed)
    feats = [torch.randn(n, e, h, w, generator=gen, dtype=torch.float64) for e in dims]
    weights = [torch.randn(c, e, generator=gen, dtype=torch.float64, requires_grad=True) for e in dims]
    bias = torch.randn(c, generator=gen, dtype=torch.float64, requires_grad=True)
    logits = sum(torch.einsum("ce,nehw->nchw", k, x) for k, x in zip(weights, feats))
    return feats, weights, bias, logits + bias[None, :, None, None]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs() / b.abs().clamp_min(1e-300)).max().item()


@pytest.mark.parametrize("p", P_VALUES)
@pytest.mark.parametrize("form,label", [("paper", "uni"), ("paper", "oh"),
                                        ("exact", "uni"), ("exact", "oh"), ("exact", "gt")])
@pytest.mark.parametrize("bias", [False, True])
def test_factorization_equals_explicit_outer_product(p, form, label, bias):
    feats, _, _, logits = random_head(1, dims=(7, 3))
    gt = torch.randint(0, 5, (2, 4, 6), generator=torch.Generator().manual_seed(2))
    closed = R.pgn_map(feats, logits.detach(), p, label, form, bias, gt)
    explicit = R.explicit_gradient_norm(feats, logits.detach(), p, label, form, bias, gt)
    assert rel_err(closed, explicit) < 1e-9


@pytest.mark.parametrize("p", P_VALUES)
@pytest.mark.parametrize("label", ["uni", "oh", "gt"])
@pytest.mark.parametrize("bias", [False, True])
def test_exact_form_equals_autograd(p, label, bias):
    feats, weights, b, logits = random_head(3, dims=(6, 4))
    gt = torch.randint(0, 5, (2, 4, 6), generator=torch.Generator().manual_seed(4))
    pixels = [(0, 0, 0), (0, 2, 5), (1, 3, 1), (1, 1, 4)]
    params = weights + ([b] if bias else [])
    oracle = R.autograd_pgn(logits, params, pixels, p, label, gt)
    closed = R.pgn_map(feats, logits.detach(), p, label, "exact", bias, gt)
    picked = torch.stack([closed[n, y, x] for n, y, x in pixels])
    assert rel_err(picked, oracle) < 1e-9


def test_paper_form_differs_from_true_gradient():
    """The paper's closed form is not the loss gradient (pgn-math.md): the oracle must tell them apart."""
    feats, weights, _, logits = random_head(5)
    oracle = R.autograd_pgn(logits, weights, [(0, 1, 1)], 1.0, "uni")
    paper = R.pgn_map(feats, logits.detach(), 1.0, "uni", "paper")[0, 1, 1]
    assert abs(paper.item() - oracle.item()) / oracle.item() > 1e-3


@settings(max_examples=30, deadline=None)
@given(
    classes=st.integers(2, 9),
    dims=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    p=st.sampled_from(P_VALUES),
    form=st.sampled_from(["paper", "exact"]),
    label=st.sampled_from(["uni", "oh"]),
    seed=st.integers(0, 2**16),
)
def test_factorization_random_heads(classes, dims, p, form, label, seed):
    feats, _, _, logits = random_head(seed, n=1, c=classes, dims=tuple(dims), h=3, w=2)
    closed = R.pgn_map(feats, logits.detach(), p, label, form)
    explicit = R.explicit_gradient_norm(feats, logits.detach(), p, label, form)
    assert rel_err(closed, explicit) < 1e-9


@pytest.mark.parametrize("form", ["paper", "exact"])
def test_ties_and_zero_features_give_no_nan(form):
    logits = torch.zeros(1, 4, 2, 2, dtype=torch.float64)  # every class ties
    feats = [torch.zeros(1, 3, 2, 2, dtype=torch.float64)]
    for p in P_VALUES:
        out = R.pgn_map(feats, logits, p, "oh", form, bias=True)
        assert torch.isfinite(out).all()
    if form == "paper":  # every maximal class is zeroed: nothing is left
        assert R.class_factor(logits, "paper", "oh").abs().max() == 0


def test_pgn_maps_resizes_like_the_logits():
    feats, _, _, logits = random_head(6)
    spec = PGNSpec(p=(0.5, 2.0), labels=("uni", "oh"))
    maps = R.pgn_maps(feats, logits.detach(), spec, output_size=(8, 12))
    assert sorted(maps) == sorted(spec.map_names)
    direct = R.pgn_map(feats, logits.detach(), 0.5, "uni")
    expected = torch.nn.functional.interpolate(direct[:, None], size=(8, 12), mode="bilinear",
                                               align_corners=False)[:, 0]
    assert torch.equal(maps["pgn_uni_p0.5"], expected)
    kept = R.pgn_maps(feats, logits.detach(), PGNSpec(keep_feature_size=True), output_size=(8, 12))
    assert kept["pgn_uni_p0.5"].shape == (2, 4, 6)


def test_output_resolution_equals_autograd_through_the_resize():
    """resolution=output is the exact gradient of each output pixel's loss (resize commutes)."""
    feats, weights, _, logits = random_head(7)
    up = torch.nn.functional.interpolate(logits, size=(8, 12), mode="bilinear", align_corners=False)
    spec = PGNSpec(p=(0.5,), labels=("uni",), form="exact", resolution="output")
    maps = R.pgn_maps(feats, logits.detach(), spec, output_size=(8, 12))
    pixels = [(0, 0, 0), (1, 7, 11), (0, 3, 5)]
    oracle = R.autograd_pgn(up, weights, pixels, 0.5, "uni")
    picked = torch.stack([maps["pgn_uni_p0.5"][n, y, x] for n, y, x in pixels])
    assert rel_err(picked, oracle) < 1e-9


def test_bad_arguments():
    feats, _, _, logits = random_head(8)
    with pytest.raises(BadInputError):
        R.pgn_map(feats, logits.detach(), 0.0)
    with pytest.raises(BadInputError):
        R.class_factor(logits, "paper", "gt")
    with pytest.raises(BadInputError):
        R.class_factor(logits, "exact", "gt")  # no gt map given
