"""The real-time polyp segmenters: a small U-Net and torchvision's LRASPP-MobileNetV3-Large.

Both take ImageNet-normalised float NCHW images and return ``{"mask": logits N x 1 x H x W}`` at
the input's size (STYLE.md 11: a trunk plus named heads). Both start from random weights (no
pretrained weights exist here); :class:`SegWithPreprocessing` puts the uint8 RGB NHWC input's
cast, normalisation and transpose, and the sigmoid, inside the exported graph.

``unet`` is built for a 2-core CPU: a stride-2 stem (no convolution at full resolution), two
3x3 conv + BatchNorm + ReLU per level, five levels, bilinear upsampling in the decoder, the
logits computed at half resolution and upsampled. ``width`` scales every level.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TrainError
from ..models import IMAGENET_MEAN, IMAGENET_STD

from .config import ARCHS

HEAD = "mask"


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Block(nn.Module):
    """Two 3x3 conv-BN-ReLU, with a residual connection (1x1 projection when the width changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.a = conv_bn(cin, cout, stride)
        self.b = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = (nn.Identity() if cin == cout and stride == 1 else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.b(self.a(x)) + self.skip(x), inplace=True)


class UNet(nn.Module):
    """Encoder at 1/2 .. 1/32 of the input, decoder back to 1/2, logits upsampled to the input."""

    def __init__(self, width: int = 16, levels: int = 5) -> None:
        super().__init__()
        ch = [width * 2**i for i in range(levels)]  # 1/2, 1/4, ..., 1/2**levels
        self.stem = conv_bn(3, ch[0], stride=2)
        self.enc = nn.ModuleList([Block(ch[0], ch[0])] +
                                 [Block(ch[i - 1], ch[i], stride=2) for i in range(1, levels)])
        self.dec = nn.ModuleList([Block(ch[i + 1] + ch[i], ch[i]) for i in reversed(range(levels - 1))])
        self.head = nn.Conv2d(ch[0], 1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        skips = []
        y = self.stem(x)
        for enc in self.enc:
            y = enc(y)
            skips.append(y)
        y = skips.pop()
        for dec in self.dec:
            s = skips.pop()
            y = F.interpolate(y, size=s.shape[-2:], mode="bilinear", align_corners=False)
            y = dec(torch.cat([y, s], 1))
        logits = F.interpolate(self.head(y), size=size, mode="bilinear", align_corners=False)
        return {HEAD: logits}


class LRASPP(nn.Module):
    """torchvision's LRASPP-MobileNetV3-Large, random weights, one output channel."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models.segmentation import lraspp_mobilenet_v3_large

        self.net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {HEAD: self.net(x)["out"]}


def build_segmenter(arch: str, width: int = 16) -> nn.Module:
    if arch == "unet":
        return UNet(width=width)
    if arch == "lraspp":
        return LRASPP()
    raise TrainError(f"unknown segmentation architecture {arch!r}; choose one of {', '.join(ARCHS)}")


class SegWithPreprocessing(nn.Module):
    """uint8 RGB NHWC in, polyp probability N x 1 x H x W out (cast, normalise, sigmoid in-graph)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image.float().permute(0, 3, 1, 2) - self.mean) / self.std  # Cast before any other op
        return torch.sigmoid(self.model(x)[HEAD])
