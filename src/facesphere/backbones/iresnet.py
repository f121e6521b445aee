"""IResNet, the residual network family of InsightFace's ``arcface_torch``.

Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019, built on the
pre-activation block ordering of Duta et al., "Improved Residual Networks for Image and Video Recognition",
ICPR 2020 (arXiv 2004.04989).

Module names follow ``arcface_torch`` exactly (docs/backbones.md), so its ``backbone.pth`` loads with
``strict=True``; :func:`load_arcface_torch_state_dict` additionally strips ``module.`` (DDP) prefixes and
explains mismatches.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Mapping

import torch
from torch import Tensor, nn

from ..errors import FaceSphereError, describe_load_error
from .common import check_embed_dim, check_probability

BN_EPS = 1e-5

#: Residual units per stage for each published depth.
IRESNET_LAYERS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Improved residual unit: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus the shortcut.

    Shapes: (B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride). The shortcut is the identity, or a strided
    1x1 conv + BN (``downsample.0`` / ``downsample.1``) when the shape changes.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, eps=BN_EPS)
        self.conv1 = _conv3x3(in_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.prelu = nn.PReLU(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch, stride)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch, eps=BN_EPS),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """IResNet face embedder.

    Input ``(B, 3, 112, 112)`` float (normalised images) -> output ``(B, embed_dim)`` (not L2-normalised).

    Layout: ``conv1`` 3x3/64 + ``bn1`` + ``prelu`` at 112x112, then four stages ``layer1..layer4`` with 64, 128,
    256, 512 channels, each starting with a stride-2 :class:`IBasicBlock` (spatial 56, 28, 14, 7), then ``bn2``
    (BatchNorm2d), ``dropout``, ``fc`` (Linear 512*7*7 -> embed_dim) and ``features`` (BatchNorm1d whose
    weight is frozen at 1.0, as in ``arcface_torch``).

    Initialisation: convs Kaiming-normal (``fan_out``, gain sqrt(2), i.e. std = sqrt(2 / (out_ch * k * k)));
    BatchNorm weights 1 and biases 0 (``zero_init_residual`` zeroes each unit's ``bn3`` weight instead); PReLU
    slopes 0.25; ``fc`` keeps PyTorch's default Linear initialisation. (``arcface_torch`` draws conv weights from
    N(0, 0.1); since every conv is followed by BatchNorm the difference only affects the first steps.)
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        embed_dim: int = 512,
        dropout: float = 0.0,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.conv1 = _conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64, eps=BN_EPS)
        self.prelu = nn.PReLU(64)
        widths = (64, 128, 256, 512)
        in_ch = 64
        for index, (width, units) in enumerate(zip(widths, layers), start=1):
            blocks = [IBasicBlock(in_ch, width, stride=2)]
            blocks += [IBasicBlock(width, width) for _ in range(units - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*blocks))
            in_ch = width
        self.bn2 = nn.BatchNorm2d(512, eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(512 * 7 * 7, embed_dim)
        self.features = nn.BatchNorm1d(embed_dim, eps=BN_EPS)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, IBasicBlock):
                    nn.init.zeros_(m.bn3.weight)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, 112, 112)`` -> ``(B, embed_dim)``."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512, 7, 7)
        x = self.bn2(x)
        x = torch.flatten(x, 1)
        x = self.dropout(x)
        return self.features(self.fc(x))


def build_iresnet(depth: int, embed_dim: int = 512, dropout: float = 0.0) -> IResNet:
    """IResNet-``depth`` for 112x112 inputs; ``dropout`` is applied before ``fc`` (0 disables it)."""
    name = f"iresnet{depth}"
    return IResNet(
        IRESNET_LAYERS[depth],
        embed_dim=check_embed_dim(name, embed_dim),
        dropout=check_probability(name, "dropout", dropout),
    )


def _strip_module_prefix(state_dict: Mapping[str, Tensor]) -> "OrderedDict[str, Tensor]":
    out: OrderedDict[str, Tensor] = OrderedDict()
    for key, value in state_dict.items():
        while key.startswith("module."):
            key = key[len("module.") :]
        out[key] = value
    return out


def _describe_keys(keys: list[str], limit: int = 8) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_arcface_torch_state_dict(
    model: nn.Module, state_dict_or_path: Mapping[str, Tensor] | str | os.PathLike
) -> nn.Module:
    """Load an InsightFace ``arcface_torch`` iresnet ``backbone.pth`` into ``model`` (strictly).

    Key mapping: the identity (our module names are ``arcface_torch``'s: ``conv1``, ``bn1``, ``prelu``,
    ``layerN.i.{bn1,conv1,bn2,prelu,conv2,bn3,downsample.0,downsample.1}``, ``bn2``, ``fc``, ``features``), after
    stripping any ``module.`` prefixes left by ``DistributedDataParallel``.

    ``state_dict_or_path`` is a state dict or a path, read with ``torch.load(weights_only=True)`` on CPU. A file
    holding ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped. Raises :class:`FaceSphereError` naming the
    source, the missing and unexpected keys and any shape mismatches (e.g. a checkpoint of another depth).
    Returns ``model``.
    """
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        source = os.fspath(state_dict_or_path)
        if not os.path.isfile(source):
            raise FaceSphereError(f"{source}: no such checkpoint file (expected an arcface_torch backbone.pth)")
        try:
            loaded = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling / zip errors: report the file, not a traceback
            raise FaceSphereError(f"{source}: {describe_load_error(exc, 'PyTorch state dict')}") from None
    else:
        source = "<state dict>"
        loaded = state_dict_or_path
    if isinstance(loaded, Mapping) and not all(isinstance(v, Tensor) for v in loaded.values()):
        for wrapper in ("state_dict", "model"):  # a training checkpoint holding the backbone's state dict
            inner = loaded.get(wrapper)
            if isinstance(inner, Mapping):
                loaded = inner
                break
    if not isinstance(loaded, Mapping) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise FaceSphereError(f"{source}: not a state dict of tensors (got {type(loaded).__name__})")

    state = _strip_module_prefix(loaded)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} (checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)})"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        raise FaceSphereError(
            f"{source}: checkpoint does not match {type(model).__name__} "
            f"(is it from another model or depth?); missing keys: {_describe_keys(missing)}; "
            f"unexpected keys: {_describe_keys(unexpected)}; shape mismatches: {_describe_keys(mismatched)}"
        )
    model.load_state_dict(state, strict=True)
    if isinstance(model, IResNet):
        model.features.weight.requires_grad = False
    return model


__all__ = ["IBasicBlock", "IResNet", "IRESNET_LAYERS", "build_iresnet", "load_arcface_torch_state_dict"]
