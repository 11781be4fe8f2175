"""The demo network: a small DeepLabV3+ trained from scratch on SynthRoad.

Shape of DeepLabV3+ (Chen et al., 2018) at a size a CPU trains in minutes:

* backbone: a ResNet-like CNN of basic residual blocks (3x3 conv-BN-ReLU), output stride 16;
  the stride-2 and stride-4 features are kept as low-level skips;
* ASPP: 1x1 conv, three dilated 3x3 convs and image pooling, concatenated and projected;
* decoder: the ASPP output upsampled to stride 4 and concatenated with the projected stride-4
  features, 3x3 conv-BN-ReLU, dropout, 3x3 conv-BN-ReLU; then upsampled to stride 2 and
  concatenated with the projected stride-2 features, 3x3 conv-BN-ReLU and dropout (both
  ``nn.Dropout``, so MC dropout applies); the 1x1 classifier conv with bias gives the logits
  at stride 2, bilinearly upsampled to the input size. The stride-2 step keeps poles and
  pedestrians, a few pixels wide, apart from their background.

``forward`` takes N x 3 x H x W float32 (normalised RGB, H and W multiples of 16 are best)
and returns the logits, N x ``num_classes`` x H x W float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> ReLU, 'same' padding."""
    pad = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """Residual block: two 3x3 conv-BN (ReLU between and after), 1x1 projection if needed."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn_relu(cin, cout, 3, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = (
            nn.Identity() if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x ``cin`` x H x W -> N x ``cout`` x ceil(H / stride) x ceil(W / stride): ReLU(block(x) + skip(x))."""
        return F.relu(self.conv2(self.conv1(x)) + self.skip(x))


class Backbone(nn.Module):
    """Stem (stride 2) and three stages (strides 4, 8, 16); returns the stride-2, stride-4 and
    stride-16 maps."""

    def __init__(self, widths: tuple[int, int, int, int]):
        super().__init__()
        w0, w1, w2, w3 = widths
        self.stem = nn.Sequential(conv_bn_relu(3, w0, 3, 2), conv_bn_relu(w0, w0))
        self.stage1 = nn.Sequential(BasicBlock(w0, w1, 2), BasicBlock(w1, w1))
        self.stage2 = nn.Sequential(BasicBlock(w1, w2, 2), BasicBlock(w2, w2))
        self.stage3 = nn.Sequential(BasicBlock(w2, w3, 2), BasicBlock(w3, w3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """N x 3 x H x W -> (stride-2 stem, stride-4 stage-1, stride-16 stage-3) feature maps,
        with ``widths[0]``, ``widths[1]`` and ``widths[3]`` channels."""
        stem = self.stem(x)
        low = self.stage1(stem)
        return stem, low, self.stage3(self.stage2(low))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, dilated 3x3 at ``rates``, image pooling."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(cin, cout, 1)] + [conv_bn_relu(cin, cout, 3, dilation=r) for r in rates]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU(inplace=True))
        self.project = conv_bn_relu(cout * (len(rates) + 2), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x ``cin`` x h x w -> N x ``cout`` x h x w: every branch and the pooled image feature,
        concatenated and projected by a 1x1 conv."""
        pooled = _resize(self.pool(x), x)
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


class DemoDeepLabV3Plus(nn.Module):
    """Small DeepLabV3+ for 19 Cityscapes classes (see the module docstring).

    ``widths``: channels of the stem and the three backbone stages; ``aspp``: ASPP channels;
    ``low`` / ``fine``: channels of the projected stride-4 / stride-2 skips; ``decoder``:
    channels of the stride-4 decoder; ``head``: channels of the features the classifier reads;
    ``rates``: ASPP dilation rates; ``dropout``: probability of both decoder dropouts.
    """

    def __init__(self, num_classes: int = 19, widths: tuple[int, int, int, int] = (16, 24, 48, 96),
                 aspp: int = 64, low: int = 16, fine: int = 8, decoder: int = 48, head: int = 24,
                 rates: tuple[int, ...] = (2, 4, 6), dropout: float = 0.1):
        super().__init__()
        self.backbone = Backbone(tuple(widths))
        self.aspp = ASPP(widths[3], aspp, tuple(rates))
        self.low = conv_bn_relu(widths[1], low, 1)
        self.fine = conv_bn_relu(widths[0], fine, 1)
        self.decoder = nn.Sequential(
            conv_bn_relu(aspp + low, decoder),
            nn.Dropout(dropout),
            conv_bn_relu(decoder, head),
        )
        self.refine = nn.Sequential(conv_bn_relu(head + fine, head), nn.Dropout(dropout))
        self.classifier = nn.Conv2d(head, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W float32 (normalised RGB) -> logits, N x ``num_classes`` x H x W float32."""
        stem, low, high = self.backbone(x)
        high = _resize(self.aspp(high), low)
        mid = _resize(self.decoder(torch.cat([high, self.low(low)], dim=1)), stem)
        logits = self.classifier(self.refine(torch.cat([mid, self.fine(stem)], dim=1)))
        return _resize(logits, x)


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of ``x`` to the spatial size of ``like``."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)
