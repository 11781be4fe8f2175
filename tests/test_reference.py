"""The PyTorch reference against calculus: explicit outer products and per-pixel autograd."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
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


# --------------------------------------------------------------------------- penultimate layer
def penultimate_head(seed: int, *, kernel=3, dilation=1, bias=False, bn=True, e2=4, e=6, c=5, n=2, h=5, w=7):
    """A random float64 eval-mode head ``conv -> [BN] -> (act) -> classifier`` and its input psi2
    (odd sizes; BN statistics far from the identity so a missing factor shows)."""
    gen = torch.Generator().manual_seed(seed)
    conv = torch.nn.Conv2d(e2, e, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation, bias=bias).double()
    batch_norm = torch.nn.BatchNorm2d(e).double().eval() if bn else None
    classifier = torch.nn.Conv2d(e, c, 1).double()
    with torch.no_grad():
        for param in (*conv.parameters(), *classifier.parameters()):
            param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float64))
        if batch_norm is not None:
            batch_norm.weight.copy_(torch.rand(e, generator=gen, dtype=torch.float64) * 2 + 0.2)
            batch_norm.bias.copy_(torch.randn(e, generator=gen, dtype=torch.float64))
            batch_norm.running_mean.copy_(torch.randn(e, generator=gen, dtype=torch.float64))
            batch_norm.running_var.copy_(torch.rand(e, generator=gen, dtype=torch.float64) * 3 + 0.1)
    psi2 = torch.randn(n, e2, h, w, generator=gen, dtype=torch.float64)
    return psi2, conv, batch_norm, classifier


PIXELS = [(0, 0, 0), (1, 4, 6), (0, 2, 3), (1, 0, 5), (0, 4, 1)]


@pytest.mark.parametrize("p", P_VALUES)
@pytest.mark.parametrize("label", ["uni", "oh", "gt"])
@pytest.mark.parametrize("kernel,dilation,bias,bn,weights", [
    (1, 1, False, True, "trained"),
    (3, 2, True, True, "trained"),
    (3, 1, False, True, "graph"),
    (3, 2, True, False, "trained"),
])
def test_penultimate_closed_form_equals_autograd(p, label, kernel, dilation, bias, bn, weights):
    psi2, conv, batch_norm, classifier = penultimate_head(3, kernel=kernel, dilation=dilation, bias=bias, bn=bn)
    gt = torch.randint(0, 5, (2, 5, 7), generator=torch.Generator().manual_seed(4))
    closed = R.penultimate_pgn_module(psi2, conv, batch_norm, classifier, p, label, "exact", weights=weights, gt=gt)
    oracle = R.autograd_penultimate_pgn(psi2, conv, batch_norm, classifier, PIXELS, p, label, weights=weights, gt=gt)
    assert rel_err(torch.stack([closed[n, y, x] for n, y, x in PIXELS]), oracle) < 1e-9


@pytest.mark.parametrize("activation", ["leaky_relu", "relu6", "identity"])
def test_penultimate_other_activations_equal_autograd(activation):
    psi2, conv, batch_norm, classifier = penultimate_head(5, kernel=3, dilation=1)
    act = {"activation": activation, "negative_slope": 0.2}
    closed = R.penultimate_pgn_module(psi2, conv, batch_norm, classifier, 0.5, "oh", "exact", **act)
    oracle = R.autograd_penultimate_pgn(psi2, conv, batch_norm, classifier, PIXELS, 0.5, "oh", **act)
    assert rel_err(torch.stack([closed[n, y, x] for n, y, x in PIXELS]), oracle) < 1e-9


def test_penultimate_oracle_is_plain_autograd_through_the_modules():
    """The oracle's hand-written BN equals back-propagation through the PyTorch modules
    (Dropout included, identity in eval mode) to ``conv.weight``."""
    psi2, conv, batch_norm, classifier = penultimate_head(6, kernel=3, dilation=2, bias=True)
    head = torch.nn.Sequential(conv, batch_norm, torch.nn.ReLU(), torch.nn.Dropout(0.3), classifier).eval()
    direct = R.autograd_pgn(head(psi2), [conv.weight], PIXELS, 0.3, "uni")
    oracle = R.autograd_penultimate_pgn(psi2, conv, batch_norm, classifier, PIXELS, 0.3, "uni")
    assert rel_err(oracle, direct) < 1e-12


def test_penultimate_bn_factor_separates_trained_from_folded_weights():
    psi2, conv, batch_norm, classifier = penultimate_head(7)
    trained = R.penultimate_pgn_module(psi2, conv, batch_norm, classifier, 1.0, "uni", "exact", weights="trained")
    folded = R.penultimate_pgn_module(psi2, conv, batch_norm, classifier, 1.0, "uni", "exact", weights="graph")
    assert rel_err(trained, folded) > 1e-2


@pytest.mark.parametrize("p", P_VALUES)
@pytest.mark.parametrize("label", ["uni", "oh"])
def test_penultimate_paper_form_equals_explicit_outer_product(p, label):
    """Paper form: the closed form against ``||s (x) unfold(psi2)||_p`` materialized."""
    psi2, conv, batch_norm, classifier = penultimate_head(8, kernel=3, dilation=2)
    closed = R.penultimate_pgn_module(psi2, conv, batch_norm, classifier, p, label, "paper")
    with torch.no_grad():
        z = batch_norm(conv(psi2))
        g = R.class_factor(classifier(torch.relu(z)), "paper", label)
        factor = batch_norm.weight / torch.sqrt(batch_norm.running_var + batch_norm.eps)
        s = torch.einsum("ce,nchw->nehw", classifier.weight[:, :, 0, 0], g) * (z > 0) * factor[None, :, None, None]
        patches = F.unfold(psi2, 3, dilation=2, padding=2).reshape(2, -1, 5, 7)
        explicit = (s[:, :, None] * patches[:, None]).abs().pow(p).sum(dim=(1, 2)).pow(1 / p)
    assert rel_err(closed, explicit) < 1e-9
