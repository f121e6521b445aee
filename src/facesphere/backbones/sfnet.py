"""SFNet ("SphereNet"), the residual CNNs of SphereFace.

Liu et al., "SphereFace: Deep Hypersphere Embedding for Face Recognition", CVPR 2017. The depths and the
BN-free / BN variants follow the SphereFace paper and the authors' OpenSphere toolkit ("SFNet", "SFNet-BN").

Layout (all depths): four stages with 64, 128, 256, 512 channels. Each stage opens with a 3x3 stride-2 conv and
its activation (halving the spatial size), followed by ``units[i]`` residual units
``x + act(conv3x3(act(conv3x3(x))))``. The 512-channel map (7x7 for 112x112 input, 7x6 for 112x96) is flattened
into a Linear layer giving the embedding. Depth = 4 stage convs + 2 convs per unit:

    sfnet4 (0, 0, 0, 0)   sfnet10 (0, 1, 2, 0)   sfnet20 (1, 2, 4, 1)   sfnet36 (2, 4, 8, 2)   sfnet64 (3, 8, 16, 3)

``batchnorm=False`` (SFNet): convs carry biases, no normalisation. ``batchnorm=True`` (SFNet-BN): convs have no
bias, each conv is followed by BatchNorm2d, and the embedding by BatchNorm1d (``features``).

``activation="relu"`` (default) is the parameter-free activation of OpenSphere's SFNet, whose parameter counts this
matches (sfnet20: 24,500,992 / 24,506,688 with BN); ``activation="prelu"`` is the per-channel PReLU of the original
Caffe SphereFace networks (one extra parameter per conv output channel).

``residual`` places the unit's last activation. ``"branch"`` (default): ``x + act(conv(act(conv(x))))``, the
SphereFace layout and OpenSphere's ``sfnet*_deprecated`` (the backbone of its SphereFace-R config; bit-identical
with the same weights). ``"post"``: ``act(x + conv(act(conv(x))))`` (BN after each conv with ``batchnorm``), the
ResNet-style unit of OpenSphere's newer ``sfnet.py`` ``sfnet*``. The parameters are the same in both (with PReLU the
second activation's slopes move from ``body.1.2`` to ``act``); :func:`opensphere_sfnet_state_dict` renames an
OpenSphere SFNet state dict (either file) to these modules.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InvalidOptionError
from .common import check_embed_dim, check_input_size

#: Residual units per stage for each published depth.
SFNET_LAYERS: dict[int, tuple[int, int, int, int]] = {
    4: (0, 0, 0, 0),
    10: (0, 1, 2, 0),
    20: (1, 2, 4, 1),
    36: (2, 4, 8, 2),
    64: (3, 8, 16, 3),
}

#: Supported (height, width) inputs and the final feature map each gives.
SFNET_INPUT_SIZES: dict[tuple[int, int], tuple[int, int]] = {(112, 112): (7, 7), (112, 96): (7, 6)}

ACTIVATIONS = ("relu", "prelu")
RESIDUALS = ("branch", "post")


def _make_act(kind: str, channels: int) -> nn.Module:
    return nn.PReLU(channels) if kind == "prelu" else nn.ReLU(inplace=True)


class _ConvAct(nn.Sequential):
    """conv3x3 (+ BN) + activation: (B, in_ch, H, W) -> (B, out_ch, ceil(H/stride), ceil(W/stride))."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, batchnorm: bool, activation: str,
                 act: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=not batchnorm)
        ]
        if batchnorm:
            layers.append(nn.BatchNorm2d(out_ch))
        if act:
            layers.append(_make_act(activation, out_ch))
        super().__init__(*layers)


class SFUnit(nn.Module):
    """Residual unit, shape preserved (B, C, H, W): ``residual="branch"`` ``x + f(x)`` with ``f`` = two (conv3x3
    [+BN] + act) layers; ``"post"`` ``act(x + f(x))`` with the second layer's activation moved after the sum."""

    def __init__(self, channels: int, batchnorm: bool, activation: str, residual: str = "branch") -> None:
        super().__init__()
        self.post = residual == "post"
        self.body = nn.Sequential(
            _ConvAct(channels, channels, 1, batchnorm, activation),
            _ConvAct(channels, channels, 1, batchnorm, activation, act=not self.post),
        )
        self.act = _make_act(activation, channels) if self.post else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.body(x)) if self.post else x + self.body(x)


def _caffe_xavier_(tensor: Tensor) -> None:
    """Caffe's ``xavier`` filler: U(-a, a) with a = sqrt(3 / fan_in)."""
    fan_in = tensor[0].numel()
    bound = math.sqrt(3.0 / fan_in)
    nn.init.uniform_(tensor, -bound, bound)


class SFNet(nn.Module):
    """SphereFace residual network.

    Input ``(B, 3, H, W)`` float with (H, W) = ``input_size`` (112x112 or 112x96) -> ``(B, embed_dim)``.

    Initialisation follows the SphereFace Caffe models: stage convs and the FC layer use Caffe's ``xavier``
    filler (uniform, fan-in), convs inside residual units N(0, 0.01), biases 0, BatchNorm weight 1 / bias 0,
    PReLU slopes 0.25.
    """

    def __init__(
        self,
        units: tuple[int, int, int, int],
        embed_dim: int = 512,
        batchnorm: bool = False,
        input_size: tuple[int, int] = (112, 112),
        activation: str = "relu",
        channels: tuple[int, int, int, int] = (64, 128, 256, 512),
        residual: str = "branch",
    ) -> None:
        super().__init__()
        self.residual = residual
        self.embed_dim = embed_dim
        self.batchnorm = batchnorm
        self.input_size = tuple(input_size)
        fh, fw = SFNET_INPUT_SIZES[self.input_size]
        in_ch = 3
        for index, (width, count) in enumerate(zip(channels, units), start=1):
            stage = [_ConvAct(in_ch, width, 2, batchnorm, activation)]
            stage += [SFUnit(width, batchnorm, activation, residual) for _ in range(count)]
            setattr(self, f"layer{index}", nn.Sequential(*stage))
            in_ch = width
        self.fc = nn.Linear(channels[-1] * fh * fw, embed_dim)
        self.features: nn.Module = nn.BatchNorm1d(embed_dim) if batchnorm else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        unit_convs = {id(m) for u in self.modules() if isinstance(u, SFUnit) for m in u.modules()}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if id(m) in unit_convs:
                    nn.init.normal_(m.weight, 0.0, 0.01)
                else:
                    _caffe_xavier_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                _caffe_xavier_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> ``(B, embed_dim)``; the last stage gives (B, 512, 7, 7) or (B, 512, 7, 6)."""
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(torch.flatten(x, 1)))


def build_sfnet(
    depth: int,
    embed_dim: int = 512,
    batchnorm: bool = False,
    input_size: tuple[int, int] | list[int] | int = (112, 112),
    activation: str = "relu",
    channels: tuple[int, int, int, int] | list[int] = (64, 128, 256, 512),
    residual: str = "branch",
) -> SFNet:
    """SFNet-``depth`` (4, 10, 20, 36, 64); see the module docstring for the options.

    ``channels`` (the four stage widths, default the paper's 64/128/256/512) makes narrow variants for quick runs.
    ``residual``: ``"branch"`` (OpenSphere's ``sfnet*_deprecated``) or ``"post"`` (its ``sfnet.py``).
    """
    name = f"sfnet{depth}"
    if not isinstance(batchnorm, bool):
        raise InvalidOptionError(f"backbone {name!r}: batchnorm must be true or false, got {batchnorm!r}")
    if activation not in ACTIVATIONS:
        raise InvalidOptionError(
            f"backbone {name!r}: activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}"
        )
    if residual not in RESIDUALS:
        raise InvalidOptionError(
            f"backbone {name!r}: residual must be one of {', '.join(RESIDUALS)}, got {residual!r}"
        )
    size = check_input_size(name, input_size, list(SFNET_INPUT_SIZES))
    return SFNet(
        SFNET_LAYERS[depth],
        embed_dim=check_embed_dim(name, embed_dim),
        batchnorm=batchnorm,
        input_size=size,
        activation=activation,
        channels=_check_channels(name, channels),
        residual=residual,
    )


def _check_channels(name: str, channels: tuple[int, ...] | list[int]) -> tuple[int, int, int, int]:
    values = tuple(channels)
    if len(values) != 4 or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in values):
        raise InvalidOptionError(f"backbone {name!r}: channels must be four positive integers, got {channels!r}")
    return values  # type: ignore[return-value]


_OPENSPHERE_STAGE = re.compile(r"^(layer[1-4])\.0\.(conv1?|bn1)\.(.+)$")
_OPENSPHERE_UNIT = re.compile(r"^(layer[1-4])\.(\d+)\.(conv1|bn1|conv2|bn2)\.(.+)$")


def opensphere_sfnet_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """An OpenSphere SFNet state dict (``sfnet.py``'s ``SFNet`` or ``sfnet_deprecated.py``'s ``SFNet_deprecated``;
    a ``module.`` prefix is dropped) with facesphere's module names: ``layerI.0.conv`` / ``conv1`` / ``bn1`` -> the
    stage conv ``layerI.0.0`` / its BN ``layerI.0.1``; ``layerI.K.conv1`` / ``bn1`` / ``conv2`` / ``bn2`` ->
    ``layerI.K.body.0.0`` / ``body.0.1`` / ``body.1.0`` / ``body.1.1``; ``fc`` and ``features`` unchanged.

    Build the matching model first: ``sfnet.py`` weights need ``residual="post"`` (and ``batchnorm=True`` for its BN
    variant), ``sfnet_deprecated.py`` weights the default ``residual="branch"``; 112x112 input either way."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        stage = _OPENSPHERE_STAGE.match(key)
        unit = None if stage else _OPENSPHERE_UNIT.match(key)
        if stage:
            layer, part, rest = stage.groups()
            key = f"{layer}.0.{1 if part == 'bn1' else 0}.{rest}"
        elif unit:
            layer, index, part, rest = unit.groups()
            conv, sub = {"conv1": (0, 0), "bn1": (0, 1), "conv2": (1, 0), "bn2": (1, 1)}[part]
            key = f"{layer}.{index}.body.{conv}.{sub}.{rest}"
        out[key] = value
    return out


__all__ = ["SFNet", "SFUnit", "SFNET_LAYERS", "SFNET_INPUT_SIZES", "RESIDUALS", "build_sfnet",
           "opensphere_sfnet_state_dict"]
