"""MobileFaceNet, the lightweight face embedder (InsightFace ``arcface_torch`` layout, width scale 2).

Chen et al., "MobileFaceNets: Efficient CNNs for Accurate Real-Time Face Verification on Mobile Devices",
CCBR 2018 (arXiv 1804.07573).

Layout for 112x112 input with ``blocks=(1, 4, 6, 2)``, ``scale=2`` (all convs bias-free, each followed by BN;
"+PReLU" marks the non-linear ones; "dw" = depthwise/grouped):

    stem        conv3x3/2 3->128 +PReLU                                   -> 56x56
    stem_dw     conv3x3 128->128, groups 64 +PReLU (blocks[0] == 1)       -> 56x56
    down1       bottleneck 128 -> (1x1 128 +PReLU, dw3x3/2 128 +PReLU, 1x1 -> 128)            -> 28x28
    stage1      4 residual bottlenecks, expansion width 128                -> 28x28
    down2       bottleneck 128 -> (1x1 256, dw3x3/2 256, 1x1 -> 256)       -> 14x14
    stage2      6 residual bottlenecks on 256 channels, expansion 256
    down3       bottleneck 256 -> (1x1 512, dw3x3/2 512, 1x1 -> 256)       -> 7x7
    stage3      2 residual bottlenecks on 256 channels, expansion 256
    conv_sep    conv1x1 256->512 +PReLU
    gdc         global depthwise conv7x7 512 (+BN, linear) -> flatten -> Linear(512, embed_dim, no bias)
                -> BatchNorm1d (``features``)

Total: 2,059,520 parameters at embed_dim=512.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from ..errors import InvalidOptionError
from .common import check_embed_dim


class ConvBN(nn.Sequential):
    """conv (no bias) + BN (+ PReLU when ``act``): (B, in_ch, H, W) -> (B, out_ch, H', W')."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act:
            layers.append(nn.PReLU(out_ch))
        super().__init__(*layers)


class Bottleneck(nn.Module):
    """Inverted bottleneck: 1x1 expand to ``width`` +PReLU, depthwise 3x3 (stride) +PReLU, linear 1x1 to ``out_ch``.

    ``residual=True`` adds the input (requires stride 1 and in_ch == out_ch). Shapes:
    (B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride).
    """

    def __init__(self, in_ch: int, out_ch: int, width: int, stride: int = 1, residual: bool = False) -> None:
        super().__init__()
        if residual and (stride != 1 or in_ch != out_ch):
            raise ValueError("a residual bottleneck needs stride 1 and in_ch == out_ch")
        self.residual = residual
        self.body = nn.Sequential(
            ConvBN(in_ch, width, 1),
            ConvBN(width, width, 3, stride=stride, padding=1, groups=width),
            ConvBN(width, out_ch, 1, act=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class MobileFaceNet(nn.Module):
    """MobileFaceNet: ``(B, 3, 112, 112)`` float -> ``(B, embed_dim)``.

    Initialisation: convs Kaiming-normal (``fan_out``), BatchNorm weight 1 / bias 0, PReLU slopes 0.25, the
    embedding Linear PyTorch's default.
    """

    def __init__(self, embed_dim: int = 512, blocks: Sequence[int] = (1, 4, 6, 2), scale: int = 2) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        c1, c2 = 64 * scale, 128 * scale
        self.stem = ConvBN(3, c1, 3, stride=2, padding=1)
        if blocks[0] == 1:
            self.stem_dw: nn.Module = ConvBN(c1, c1, 3, padding=1, groups=64)
        else:
            self.stem_dw = self._stage(c1, c1, blocks[0])
        self.down1 = Bottleneck(c1, c1, width=c1, stride=2)
        self.stage1 = self._stage(c1, c1, blocks[1])
        self.down2 = Bottleneck(c1, c2, width=c2, stride=2)
        self.stage2 = self._stage(c2, c2, blocks[2])
        self.down3 = Bottleneck(c2, c2, width=2 * c2, stride=2)
        self.stage3 = self._stage(c2, c2, blocks[3])
        self.conv_sep = ConvBN(c2, 512, 1)
        self.gdc = ConvBN(512, 512, 7, groups=512, act=False)  # 7x7 -> 1x1
        self.fc = nn.Linear(512, embed_dim, bias=False)
        self.features = nn.BatchNorm1d(embed_dim)
        self._init_weights()

    @staticmethod
    def _stage(channels: int, width: int, count: int) -> nn.Sequential:
        return nn.Sequential(*[Bottleneck(channels, channels, width, residual=True) for _ in range(count)])

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, 112, 112)`` -> ``(B, embed_dim)``."""
        x = self.stem_dw(self.stem(x))  # (B, 128, 56, 56)
        x = self.stage1(self.down1(x))  # (B, 128, 28, 28)
        x = self.stage2(self.down2(x))  # (B, 256, 14, 14)
        x = self.stage3(self.down3(x))  # (B, 256, 7, 7)
        x = self.gdc(self.conv_sep(x))  # (B, 512, 1, 1)
        return self.features(self.fc(x.flatten(1)))


def build_mobilefacenet(embed_dim: int = 512, blocks: Sequence[int] = (1, 4, 6, 2), scale: int = 2) -> MobileFaceNet:
    """MobileFaceNet for 112x112 input; ``blocks`` = residual bottlenecks per stage, ``scale`` = width multiplier."""
    name = "mobilefacenet"
    try:
        blocks = tuple(int(b) for b in blocks)
    except (TypeError, ValueError):
        blocks = ()
    if len(blocks) != 4 or any(b < 0 for b in blocks) or blocks[0] < 1:
        raise InvalidOptionError(
            f"backbone {name!r}: blocks must be 4 counts (the first >= 1), got {blocks!r}"
        )
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise InvalidOptionError(f"backbone {name!r}: scale must be a positive integer, got {scale!r}")
    return MobileFaceNet(embed_dim=check_embed_dim(name, embed_dim), blocks=blocks, scale=scale)


__all__ = ["Bottleneck", "ConvBN", "MobileFaceNet", "build_mobilefacenet"]
