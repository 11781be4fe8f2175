"""Reference PGN math in PyTorch: the oracle the grafted graph is tested against.

Everything here follows ``docs/math.md``. Tensors are ``N x C x h x w`` (logits,
class factor) and ``N x E_i x h x w`` (the classifier inputs ``psi_i``); every function works
in the dtype it is given (pass float64 for the reference).

* :func:`class_factor` -- the class factor ``g`` of the ``paper`` or ``exact`` form.
* :func:`pgn_map` -- the closed form ``||g||_p * ||psi||_p`` (multi-branch, bias, any p > 0).
* :func:`pgn_maps` -- every map of a :class:`~pgn_deploy.contract.PGNSpec`, resized like the
  logits when the spec asks for it.
* :func:`explicit_gradient_norm` -- the unfactorized outer product, for the factorization test.
* :func:`patch_p_sum` -- ``||P||_p^p`` of every k x k input patch of a k x k classifier, from
  the explicit patches (an unfold): the feature term of a k x k head.
* :func:`closed_form_pgn` -- ``||a * g||_p * (F + [1])^(1/p)`` for any feature term ``F`` and a
  per-class factor ``a`` (an affine after the classifier).
* :func:`autograd_pgn` -- per-pixel back-propagation (the naive method the paper calls
  infeasible): the oracle for the ``exact`` form.
* :func:`penultimate_pgn_map` / :func:`penultimate_pgn_module` -- the penultimate layer's closed
  form ``||s||_p * ||P||_p`` (``docs/penultimate.md``); :func:`autograd_penultimate_pgn` -- its
  oracle, back-propagation to the penultimate conv's kernel (trained or BN-folded).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pgn_deploy.contract import BadInputError, PGNSpec, check_weights, pgn_output_name


def _check_p(p: float) -> float:
    p = float(p)
    if not p > 0:
        raise BadInputError(f"p must be > 0, got {p:g}")
    return p


def _onehot(index: torch.Tensor, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    """``N x h x w`` class ids -> ``N x C x h x w`` one-hot in ``like``'s dtype."""
    return F.one_hot(index.long(), num_classes).permute(0, 3, 1, 2).to(like.dtype)


def class_factor(
    logits: torch.Tensor, form: str = "paper", label: str = "uni", gt: torch.Tensor | None = None
) -> torch.Tensor:
    """The class factor ``g`` (``N x C x h x w``) of the PGN outer product ``g (x) psi``.

    ``paper`` (eqs. 7, 8): ``oh``: ``S_h * (1 - [h == c_hat])`` with every maximal class zeroed
    (ties compare with the max); ``uni``: ``S_h * (C - 1) / C``.
    ``exact`` (the true gradient): ``oh``: ``S - onehot(argmax)`` (first maximal class);
    ``uni``: ``S - 1/C``; ``gt``: ``S - onehot(gt)`` with ``gt`` an ``N x h x w`` class map.
    """
    probs = torch.softmax(logits, dim=1)
    num_classes = logits.shape[1]
    if form == "paper":
        if label == "uni":
            return probs * ((num_classes - 1) / num_classes)
        if label == "oh":
            is_max = probs == probs.amax(dim=1, keepdim=True)
            return probs * (~is_max).to(probs.dtype)
    elif form == "exact":
        if label == "uni":
            return probs - 1.0 / num_classes
        if label == "oh":
            return probs - _onehot(probs.argmax(dim=1), num_classes, probs)
        if label == "gt":
            if gt is None:
                raise BadInputError("label 'gt' needs a ground-truth class map")
            return probs - _onehot(gt, num_classes, probs)
    raise BadInputError(f"no class factor for form {form!r} with label {label!r}")


def p_sum(x: torch.Tensor, p: float, dim: int = 1) -> torch.Tensor:
    """``sum_i |x_i|^p`` over ``dim`` (0, not NaN, at x = 0 for p < 1)."""
    return x.abs().pow(_check_p(p)).sum(dim=dim)


def pgn_map(
    features: Sequence[torch.Tensor],
    logits: torch.Tensor,
    p: float,
    label: str = "uni",
    form: str = "paper",
    bias: bool = False,
    gt: torch.Tensor | None = None,
) -> torch.Tensor:
    """Closed-form PGN ``||g||_p * (sum_i ||psi_i||_p^p [+ 1 with bias])^(1/p)``, ``N x h x w``.

    ``features`` are the classifier inputs ``psi_i`` already at the logits' resolution (the
    model's own linear resize applied per branch); ``logits`` are ``N x C x h x w``.
    """
    p = _check_p(p)
    g = class_factor(logits, form, label, gt)
    feature_sum = sum(p_sum(psi, p) for psi in features)
    if bias:
        feature_sum = feature_sum + 1.0
    return p_sum(g, p).pow(1.0 / p) * feature_sum.pow(1.0 / p)


def patch_p_sum(
    psi: torch.Tensor,
    p: float,
    kernel: tuple[int, int],
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilations: tuple[int, int] = (1, 1),
) -> torch.Tensor:
    """``sum |P|^p`` over each output pixel's input patch ``P`` (E x kh x kw values) of a
    stride-1 convolution with ONNX ``pads`` (top, left, bottom, right) and ``dilations``,
    ``N x h' x w'``. Explicit: unfolds ``N x (E kh kw) x h' w'`` (small tensors only)."""
    p = _check_p(p)
    top, left, bottom, right = pads
    padded = F.pad(psi, (left, right, top, bottom))
    patches = F.unfold(padded, kernel, dilation=dilations)
    height = padded.shape[-2] - dilations[0] * (kernel[0] - 1)
    width = padded.shape[-1] - dilations[1] * (kernel[1] - 1)
    return p_sum(patches, p).reshape(psi.shape[0], height, width)


def closed_form_pgn(
    feature_sum: torch.Tensor,
    logits: torch.Tensor,
    p: float,
    label: str = "uni",
    form: str = "paper",
    bias: bool = False,
    gt: torch.Tensor | None = None,
    class_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """``||a * g||_p * (F + [1 with bias])^(1/p)``, ``N x h x w``: ``feature_sum`` ``F``
    (``N x h x w``) is ``sum |psi|^p`` over what one logit pixel sees (the pixel, a k x k patch:
    :func:`patch_p_sum`, or a token); ``class_scale`` ``a`` (``C``) the per-class factor of an
    affine ``phi = a * (K psi) + b`` after the classifier (gradient w.r.t. ``K``)."""
    p = _check_p(p)
    g = class_factor(logits, form, label, gt)
    if class_scale is not None:
        g = g * class_scale.to(g.dtype)[None, :, None, None]
    if bias:
        feature_sum = feature_sum + 1.0
    return p_sum(g, p).pow(1.0 / p) * feature_sum.pow(1.0 / p)


def explicit_gradient_norm(
    features: Sequence[torch.Tensor],
    logits: torch.Tensor,
    p: float,
    label: str = "uni",
    form: str = "paper",
    bias: bool = False,
    gt: torch.Tensor | None = None,
) -> torch.Tensor:
    """The p-norm of the explicit (unfactorized) outer products ``g (x) psi_i``, ``N x h x w``.

    Materializes ``N x C x E x h x w`` per branch: use on small tensors only.
    """
    p = _check_p(p)
    g = class_factor(logits, form, label, gt)
    total = sum(p_sum(g.unsqueeze(2) * psi.unsqueeze(1), p, dim=(1, 2)) for psi in features)
    if bias:
        total = total + p_sum(g, p)
    return total.pow(1.0 / p)


def baseline_maps(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """``msp`` (1 - max softmax) and ``entropy`` (nats) of ``N x C x h x w`` logits, ``N x h x w``."""
    log_probs = torch.log_softmax(logits, dim=1)
    probs = log_probs.exp()
    return {
        "msp": 1.0 - probs.amax(dim=1),
        "entropy": -(probs * log_probs).sum(dim=1),
    }


def resize_like_logits(
    x: torch.Tensor, size: tuple[int, int] | None, mode: str = "bilinear", align_corners: bool = False
) -> torch.Tensor:
    """Resize ``N x K x h x w`` to ``size`` the way the model resizes its logits (no-op if None)."""
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=align_corners)


def pgn_maps(
    features: Sequence[torch.Tensor],
    head_logits: torch.Tensor,
    spec: PGNSpec,
    output_size: tuple[int, int] | None = None,
    mode: str = "bilinear",
    align_corners: bool = False,
    gt: torch.Tensor | None = None,
    windows: Sequence[tuple[tuple[int, int], tuple[int, int, int, int], tuple[int, int]]] | None = None,
    class_scale: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Every PGN map of ``spec`` (``N x H x W`` each), as the grafted graph defines them.

    ``head_logits`` and ``features`` are at the classifier's resolution; ``output_size`` is the
    size the model resizes its logits to (``None``: no resize), with ``mode``/``align_corners``.
    ``resolution="feature"`` computes at the classifier's resolution then resizes each map;
    ``"output"`` resizes logits and features first (the exact per-output-pixel gradient).
    ``gt`` (``N x H x W`` at the output size) feeds label ``gt``. ``windows``: per branch,
    the (kernel, ONNX pads, dilations) of a k x k classifier (then ``features`` are its inputs,
    summed over each patch by :func:`patch_p_sum`; ``None``: 1x1 everywhere); ``class_scale``:
    the per-class factor of an affine after the classifier (:func:`closed_form_pgn`).
    """
    def resize(x: torch.Tensor) -> torch.Tensor:
        return resize_like_logits(x, output_size, mode, align_corners)

    if spec.resolution == "output":
        features = [resize(psi) for psi in features]
        head_logits = resize(head_logits)
    elif gt is not None and output_size is not None and tuple(gt.shape[-2:]) != tuple(head_logits.shape[-2:]):
        gt = F.interpolate(gt[:, None].double(), size=head_logits.shape[-2:], mode="nearest")[:, 0].long()
    maps = {}
    for label in spec.labels:
        for p in spec.p:
            if windows is None and class_scale is None:
                pgn = pgn_map(features, head_logits, p, label, spec.form, spec.bias, gt)
            else:
                sums = [patch_p_sum(psi, p, *window) for psi, window in zip(features, windows)] if windows else [
                    p_sum(psi, p) for psi in features]
                pgn = closed_form_pgn(sum(sums), head_logits, p, label, spec.form, spec.bias, gt, class_scale)
            if spec.resolution == "feature" and not spec.keep_feature_size:
                pgn = resize(pgn[:, None])[:, 0]
            maps[pgn_output_name(label, p)] = pgn
    return maps


def autograd_pgn(
    logits: torch.Tensor,
    params: Sequence[torch.Tensor],
    pixels: Sequence[tuple[int, int, int]],
    p: float,
    label: str = "uni",
    gt: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-pixel back-propagation: ``||dL_pixel / d params||_p`` for each ``(n, y, x)`` pixel.

    ``logits`` (``N x C x H x W``) must be computed from ``params`` (the classifier weights,
    and the biases when they count) with autograd enabled; each pixel's cross-entropy loss
    against the auxiliary label (``uni``: 1/C, ``oh``: one-hot of the argmax, ``gt``: one-hot
    of ``gt[n, y, x]``) is back-propagated on its own. Returns a 1-D tensor of norms. This is
    the ``exact`` form's oracle; it costs one backward pass per pixel.
    """
    p = _check_p(p)
    num_classes = logits.shape[1]
    norms = []
    for n, y, x in pixels:
        z = logits[n, :, y, x]
        log_probs = torch.log_softmax(z, dim=0)
        if label == "uni":
            target = torch.full_like(z, 1.0 / num_classes)
        elif label == "oh":
            target = F.one_hot(z.argmax(), num_classes).to(z.dtype)
        elif label == "gt":
            if gt is None:
                raise BadInputError("label 'gt' needs a ground-truth class map")
            target = F.one_hot(gt[n, y, x].long(), num_classes).to(z.dtype)
        else:
            raise BadInputError(f"unknown label {label!r}")
        loss = -(target * log_probs).sum()
        grads = torch.autograd.grad(loss, list(params), retain_graph=True)
        norms.append(sum(g.abs().pow(p).sum() for g in grads).pow(1.0 / p))
    return torch.stack(norms)


# --------------------------------------------------------------------------- penultimate layer
ACTIVATIONS = ("relu", "leaky_relu", "relu6", "identity")


def activation_derivative(z: torch.Tensor, activation: str = "relu", negative_slope: float = 0.01) -> torch.Tensor:
    """``act'(z)`` elementwise, as PyTorch's autograd defines it (``ReLU'(0) = 0``).

    ``relu``: ``[z > 0]``; ``leaky_relu``: 1 for ``z > 0`` else ``negative_slope``; ``relu6``:
    ``[0 < z < 6]``; ``identity``: 1.
    """
    if activation == "relu":
        return (z > 0).to(z.dtype)
    if activation == "leaky_relu":
        return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, negative_slope))
    if activation == "relu6":
        return ((z > 0) & (z < 6)).to(z.dtype)
    if activation == "identity":
        return torch.ones_like(z)
    raise BadInputError(f"unknown activation {activation!r}; choose from {', '.join(ACTIVATIONS)}")


def window_p_sum(
    x: torch.Tensor,
    p: float,
    kernel_size: tuple[int, int],
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    stride: tuple[int, int] = (1, 1),
) -> torch.Tensor:
    """``||P||_p^p`` per output pixel of a conv: the k x k window sum (the conv's zero padding,
    dilation and stride) of ``sum_e |x_e|^p``. ``x`` is ``N x E2 x H2 x W2``; returns ``N x h x w``."""
    per_pixel = p_sum(x, p)[:, None]
    ones = torch.ones((1, 1, *kernel_size), dtype=x.dtype, device=x.device)
    return F.conv2d(per_pixel, ones, padding=padding, dilation=dilation, stride=stride)[:, 0]


def penultimate_pgn_map(
    inputs: torch.Tensor,
    pre_activation: torch.Tensor,
    classifier_weight: torch.Tensor,
    logits: torch.Tensor,
    p: float,
    label: str = "uni",
    form: str = "paper",
    *,
    kernel_size: tuple[int, int],
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    stride: tuple[int, int] = (1, 1),
    scale: torch.Tensor | None = None,
    activation: str = "relu",
    negative_slope: float = 0.01,
    gt: torch.Tensor | None = None,
) -> torch.Tensor:
    """Closed-form penultimate-layer PGN ``||s||_p * ||P||_p`` (``N x h x w``).

    Head ``psi = act(BN(Conv_k(psi2)))``, classifier ``phi = K psi + b``. Per pixel the gradient
    w.r.t. the penultimate conv's kernel is the outer product ``s (x) P`` with
    ``s_f = (K^T g)_f * act'(z_f) * scale_f`` and ``P`` the conv's input patch, so its p-norm is
    ``||s||_p * (window sum of ||psi2||_p^p)^(1/p)``.

    ``inputs``: ``psi2`` (``N x E2 x H2 x W2``); ``pre_activation``: ``z`` (``N x E x h x w``, the
    BN output before the activation); ``classifier_weight``: ``K`` (``C x E`` or
    ``C x E x 1 x 1``); ``logits``: ``phi`` (``N x C x h x w``); ``scale``: the per-channel BN
    factor ``gamma / sqrt(var + eps)`` (``E``) for the gradient w.r.t. the trained (unfolded)
    weights, ``None`` (1) for the weights as they are in the graph (BN folded, or no BN).
    """
    p = _check_p(p)
    g = class_factor(logits, form, label, gt)
    kernel = classifier_weight.reshape(classifier_weight.shape[0], -1)
    s = torch.einsum("ce,nchw->nehw", kernel.to(g.dtype), g)
    s = s * activation_derivative(pre_activation, activation, negative_slope)
    if scale is not None:
        s = s * scale.to(s.dtype).reshape(1, -1, 1, 1)
    window = window_p_sum(inputs, p, kernel_size, padding, dilation, stride)
    return p_sum(s, p).pow(1.0 / p) * window.pow(1.0 / p)


def penultimate_pgn_module(
    inputs: torch.Tensor,
    conv: torch.nn.Conv2d,
    batch_norm: torch.nn.BatchNorm2d | None,
    classifier: torch.nn.Conv2d,
    p: float,
    label: str = "uni",
    form: str = "paper",
    *,
    activation: str = "relu",
    negative_slope: float = 0.01,
    weights: str = "trained",
    gt: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`penultimate_pgn_map` for PyTorch modules ``conv -> batch_norm -> act -> classifier``
    (eval mode, in the dtype of ``inputs``): ``weights="trained"`` is the gradient w.r.t.
    ``conv.weight`` (BN factor applied), ``"graph"`` w.r.t. the BN-folded kernel."""
    check_weights(weights)
    z = conv(inputs)
    scale = None
    if batch_norm is not None:
        z = batch_norm(z)
        if weights == "trained":
            scale = batch_norm.weight / torch.sqrt(batch_norm.running_var + batch_norm.eps)
    logits = classifier(activation_module(activation, negative_slope)(z))
    return penultimate_pgn_map(
        inputs, z, classifier.weight, logits, p, label, form,
        kernel_size=conv.kernel_size, padding=conv.padding, dilation=conv.dilation, stride=conv.stride,
        scale=scale, activation=activation, negative_slope=negative_slope, gt=gt,
    )


def activation_module(activation: str = "relu", negative_slope: float = 0.01) -> torch.nn.Module:
    """The PyTorch module of an :data:`ACTIVATIONS` name."""
    modules = {
        "relu": torch.nn.ReLU(),
        "leaky_relu": torch.nn.LeakyReLU(negative_slope),
        "relu6": torch.nn.ReLU6(),
        "identity": torch.nn.Identity(),
    }
    if activation not in modules:
        raise BadInputError(f"unknown activation {activation!r}; choose from {', '.join(ACTIVATIONS)}")
    return modules[activation]


def autograd_penultimate_pgn(
    inputs: torch.Tensor,
    conv: torch.nn.Conv2d,
    batch_norm: torch.nn.BatchNorm2d | None,
    classifier: torch.nn.Conv2d,
    pixels: Sequence[tuple[int, int, int]],
    p: float,
    label: str = "uni",
    *,
    activation: str = "relu",
    negative_slope: float = 0.01,
    weights: str = "trained",
    gt: torch.Tensor | None = None,
) -> torch.Tensor:
    """The oracle of the ``exact`` penultimate maps: per-pixel back-propagation to the kernel of
    ``conv`` (``weights="trained"``) or to the BN-folded kernel ``W * gamma / sqrt(var + eps)``
    (``"graph"``), through ``batch_norm`` (eval statistics), the activation and ``classifier``.
    ``pixels`` are ``(n, y, x)`` at the classifier's resolution; returns a 1-D tensor of norms."""
    check_weights(weights)
    kernel = conv.weight.detach().clone()
    bias = conv.bias.detach().clone() if conv.bias is not None else None
    factor, shift = None, None
    if batch_norm is not None:
        factor = (batch_norm.weight / torch.sqrt(batch_norm.running_var + batch_norm.eps)).detach()
        shift = (batch_norm.bias - batch_norm.running_mean * factor).detach()
        if weights == "graph":
            kernel = kernel * factor.reshape(-1, 1, 1, 1)
    kernel.requires_grad_(True)
    folded = weights == "graph" and batch_norm is not None
    z = F.conv2d(inputs, kernel, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    if bias is not None:
        z = z + (bias * factor if folded else bias).reshape(1, -1, 1, 1)
    if factor is not None:
        z = (z if folded else z * factor.reshape(1, -1, 1, 1)) + shift.reshape(1, -1, 1, 1)
    logits = classifier(activation_module(activation, negative_slope)(z))
    return autograd_pgn(logits, [kernel], pixels, p, label, gt)
