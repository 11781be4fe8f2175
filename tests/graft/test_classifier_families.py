"""Every classifier family the paper covers, grafted and checked against the trained head.

Each model is built from code (random weights; the classifier re-initialised with a larger
spread so that the logits are not tied), exported at 64 x 64 and grafted with no hint; the maps
(p 0.5 and 2, labels uni and oh) are compared with float64 autograd at sampled pixels (exact
form) and with the closed form over all pixels (paper form) to 1e-4 relative
(:mod:`tests.support.head_checks`). The exporter is the one each family needs (README,
"Architectures verified").
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pgn_deploy.contract import PGNSpec, UnsupportedModelError, read_metadata
from pgn_deploy.export.onnx_export import export_onnx
from pgn_deploy.graft.attach import find_head, graft
from tests.support.graft_checks import run
from tests.support.head_checks import check_graft_family, conv_oracle, linear_oracle

NUM_CLASSES = 5
SIZE = 64


def _spread(layer: nn.Module, std: float = 0.5) -> None:
    """Re-initialise a classifier so that its logits are spread (no near-ties)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * std)
        if layer.bias is not None:
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator))


def _images(batch: int = 2, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)


def _export(module: nn.Module, exporter: str = "torchscript", dynamic: bool = True, size: int = SIZE):
    return export_onnx(module.eval(), torch.randn(1, 3, size, size), exporter=exporter, dynamic=dynamic)


class _Stem(nn.Module):
    """3 -> ``width`` channels at stride 2, ReLU: the features of the small test heads."""

    def __init__(self, width: int = 12) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


class DilatedHead(nn.Module):
    """A 3x3 classifier with bias (padding = dilation unless given, default 2), logits upsampled x2."""

    def __init__(self, dilation: int = 2, padding: int | None = None) -> None:
        super().__init__()
        self.stem = _Stem()
        padding = dilation if padding is None else padding
        self.classifier = nn.Conv2d(12, NUM_CLASSES, 3, padding=padding, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.classifier(self.stem(x)), scale_factor=2, mode="bilinear")


class AffineHead(nn.Module):
    """A 1x1 classifier, then a per-class affine ``* a + b`` and a temperature ``/ T``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _Stem()
        self.classifier = nn.Conv2d(12, NUM_CLASSES, 1)
        self.register_buffer("a", torch.linspace(0.5, 2.0, NUM_CLASSES).reshape(1, -1, 1, 1))
        self.register_buffer("b", torch.linspace(-1.0, 1.0, NUM_CLASSES).reshape(1, -1, 1, 1))
        self.temperature = 2.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.classifier(self.stem(x)) * self.a + self.b
        return F.interpolate(z, scale_factor=2, mode="bilinear") / self.temperature


class ReshapedHead(nn.Module):
    """A 1x1 classifier on features that went through ``flatten`` and ``reshape(n, -1, h, w)``
    (as token features do): ONNX shape inference cannot tell their channel count."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _Stem()
        self.classifier = nn.Conv2d(12, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stem(x)
        n, _, h, w = features.shape
        features = features.flatten(2).reshape(n, -1, h, w)
        return self.classifier(features).reshape(n, -1, h, w)


class TokenHead(nn.Module):
    """A ViT (timm) with a per-token Linear head; class/register tokens sliced away, tokens laid
    out as N x C x h x w and upsampled to the input."""

    def __init__(self, class_token: bool, reg_tokens: int = 0) -> None:
        super().__init__()
        timm = pytest.importorskip("timm")
        self.vit = timm.models.vision_transformer.VisionTransformer(
            img_size=SIZE, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=0,
            class_token=class_token, reg_tokens=reg_tokens, global_pool="token" if class_token else "avg",
            no_embed_class=reg_tokens > 0,
        )
        self.prefix = int(class_token) + reg_tokens
        self.head = nn.Linear(32, NUM_CLASSES)

    def layout(self, tokens: torch.Tensor) -> torch.Tensor:
        """N x T x K (with the prefix tokens) -> N x K x h x w."""
        tokens = tokens[:, self.prefix:]
        side = SIZE // 8
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.layout(self.head(self.vit.forward_features(x)))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear")


def _smp(name: str, **kwargs) -> nn.Module:
    smp = pytest.importorskip("segmentation_models_pytorch")
    return getattr(smp, name)("resnet18", encoder_weights=None, classes=NUM_CLASSES, **kwargs)


SMP_FAMILIES = {  # name -> (builder, exporter)
    "smp-unet": (lambda: _smp("Unet", encoder_depth=3, decoder_channels=(32, 16, 8)), "torchscript"),
    "smp-manet": (lambda: _smp("MAnet", encoder_depth=3, decoder_channels=(32, 16, 8)), "torchscript"),
    "smp-pspnet": (lambda: _smp("PSPNet", encoder_depth=3, psp_out_channels=32), "dynamo"),
    "smp-upernet": (lambda: _smp("UPerNet", decoder_channels=32), "dynamo"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SMP_FAMILIES))
def test_smp_families(name):
    builder, exporter = SMP_FAMILIES[name]
    torch.manual_seed(0)
    model = builder().eval()
    conv = model.segmentation_head[0]
    _spread(conv, 0.2)
    check_graft_family(_export(model, exporter), conv_oracle(conv), _images(1))


def _hf_upernet() -> tuple[nn.Module, nn.Conv2d]:
    transformers = pytest.importorskip("transformers")
    backbone = transformers.ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                                           out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.UperNetConfig(backbone_config=backbone, num_labels=NUM_CLASSES, hidden_size=16,
                                        use_auxiliary_head=False)
    model = transformers.UperNetForSemanticSegmentation(config)
    return model, model.decode_head.classifier


def _hf_mobilevitv2() -> tuple[nn.Module, nn.Conv2d]:
    transformers = pytest.importorskip("transformers")
    config = transformers.MobileViTV2Config(num_labels=NUM_CLASSES, image_size=2 * SIZE, width_multiplier=0.5,
                                            aspp_out_channels=32)
    model = transformers.MobileViTV2ForSemanticSegmentation(config)
    return model, model.segmentation_head.classifier.convolution


@pytest.mark.slow
@pytest.mark.parametrize(("builder", "dynamic", "size"),
                         [(_hf_upernet, True, SIZE), (_hf_mobilevitv2, False, 2 * SIZE)],
                         ids=["hf-upernet", "hf-mobilevitv2-static"])
def test_transformers_families(builder, dynamic, size):
    """MobileViTV2 exports only with dynamo and a static shape (torch.export cannot solve its
    patch arithmetic with a symbolic size; TorchScript lacks col2im below opset 18); at 128 x 128
    its classifier map (stride 32) has 4 x 4 pixels."""
    torch.manual_seed(0)
    model, conv = builder()
    _spread(conv, 0.5)
    check_graft_family(_export(model.eval(), "dynamo", dynamic, size), conv_oracle(conv), _images(1, size))


@pytest.mark.parametrize("dilation,padding", [(1, 1), (2, 2), (1, 0)])
def test_a_3x3_head_with_bias(dilation, padding):
    """Dilation 1: the window sum is an AveragePool; 2 at opset 17: a ones-kernel Conv. Without
    padding the classifier's output is smaller than its input: the window sum is taken at the
    input's size."""
    torch.manual_seed(0)
    model = DilatedHead(dilation, padding)
    _spread(model.classifier)
    plain = _export(model)
    head = find_head(plain)
    assert head.kernel == [[3, 3]] and head.pads == [[padding] * 4] and head.dilations == [[dilation] * 2]
    window_ops = {n.op_type for n in graft(plain, PGNSpec()).graph.node if n.name.startswith("pgn/")}
    assert ("AveragePool" in window_ops) == (dilation == 1) and ("Conv" in window_ops) == (dilation == 2)
    check_graft_family(plain, conv_oracle(model.classifier), _images(), bias=True)


def test_a_per_class_affine_and_a_temperature_scale_the_class_factor():
    torch.manual_seed(0)
    model = AffineHead()
    _spread(model.classifier)
    plain = _export(model)
    scale = model.a.flatten().double() / model.temperature
    head = find_head(plain)
    np.testing.assert_allclose(head.class_scale, scale.numpy(), rtol=1e-6)
    affine = lambda z: (z * model.a.double() + model.b.double()) / model.temperature  # noqa: E731
    oracle = conv_oracle(model.classifier, affine, scale)
    check_graft_family(plain, oracle, _images())


def test_reshape_with_unknown_channels_runs_and_is_right():
    torch.manual_seed(0)
    model = ReshapedHead()
    _spread(model.classifier)
    plain = _export(model)
    check_graft_family(plain, conv_oracle(model.classifier), _images())


@pytest.mark.parametrize(("class_token", "reg_tokens"), [(True, 0), (False, 0), (True, 2)],
                         ids=["class-token", "no-class-token", "class-and-register-tokens"])
def test_a_vit_with_a_per_token_linear_head(class_token, reg_tokens):
    torch.manual_seed(0)
    model = TokenHead(class_token, reg_tokens).eval()
    _spread(model.head)
    plain = _export(model)
    head = find_head(plain)
    assert head.kind == "linear" and head.layout
    check_graft_family(plain, linear_oracle(model.head, model.layout), _images())


def test_softmax_and_argmax_outputs_are_looked_through():
    """A model that returns softmax probabilities: the graft uses the logits before it."""

    class SoftmaxOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = DilatedHead()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.inner(x), dim=1)

    torch.manual_seed(0)
    model = SoftmaxOut()
    _spread(model.inner.classifier)
    plain = _export(model)
    grafted = graft(plain, PGNSpec(p=(2.0,), labels=("uni",), pred=True))
    meta = read_metadata(grafted)
    assert len(meta.head.passed) == 1
    outputs = run(grafted, {"input": _images()})
    np.testing.assert_array_equal(outputs["pred"], outputs["out"].argmax(axis=1))
    check_graft_family(plain, conv_oracle(model.inner.classifier), _images(), p=(2.0,))


def test_strided_and_grouped_classifiers_are_refused_with_the_reason():
    class Odd(nn.Module):
        def __init__(self, **conv) -> None:
            super().__init__()
            self.stem = _Stem()
            self.classifier = nn.Conv2d(12, 6, 3, padding=1, **conv)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.stem(x))

    with pytest.raises(UnsupportedModelError, match=r"has strides \[2, 2\].*only stride 1"):
        find_head(_export(Odd(stride=2)))
    with pytest.raises(UnsupportedModelError, match=r"grouped \(group=3\)"):
        find_head(_export(Odd(groups=3)))


def test_resolution_output_needs_a_1x1_classifier_when_the_logits_are_resized():
    plain = _export(DilatedHead())
    with pytest.raises(UnsupportedModelError, match="resolution 'output' needs a 1x1 classifier"):
        graft(plain, PGNSpec(resolution="output"))
