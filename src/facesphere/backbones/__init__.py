"""The backbone registry: every network maps ``(B, 3, H, W)`` float images to ``(B, embed_dim)`` embeddings.

    from facesphere.backbones import build_backbone, list_backbones
    net = build_backbone("sfnet20", embed_dim=512, batchnorm=True, input_size=(112, 96))

Options per family (unknown names or options raise :class:`facesphere.errors.UnknownNameError` listing the valid
ones; bad values raise :class:`facesphere.errors.InvalidOptionError`):

- ``sfnet4/10/20/36/64``: ``batchnorm`` (False), ``input_size`` ((112, 112) or (112, 96)), ``activation``
  ("relu" or "prelu"), ``channels`` ((64, 128, 256, 512); narrower stages for quick runs).
- ``iresnet18/34/50/100/200``: ``dropout`` (0.0); input 112x112.
- ``mobilefacenet``: ``blocks`` ((1, 4, 6, 2)), ``scale`` (2); input 112x112.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from ..registry import Registry, check_options
from .iresnet import IResNet, build_iresnet, load_arcface_torch_state_dict
from .mobilefacenet import MobileFaceNet, build_mobilefacenet
from .sfnet import SFNet, build_sfnet, opensphere_sfnet_state_dict


class BackboneEntry:
    """A registry entry: the factory ``(embed_dim, **options) -> nn.Module`` and its accepted options."""

    def __init__(self, factory: Callable[..., nn.Module], options: tuple[str, ...], summary: str) -> None:
        self.factory = factory
        self.options = options
        self.summary = summary

    def __call__(self, embed_dim: int = 512, **options: object) -> nn.Module:
        return self.factory(embed_dim=embed_dim, **options)


_SFNET_OPTIONS = ("batchnorm", "input_size", "activation", "channels", "residual")
_IRESNET_OPTIONS = ("dropout",)

BACKBONES: Registry[BackboneEntry] = Registry(
    "backbone",
    {
        "sfnet4": BackboneEntry(partial(build_sfnet, 4), _SFNET_OPTIONS, "SphereFace SFNet-4, units (0,0,0,0)"),
        "sfnet10": BackboneEntry(partial(build_sfnet, 10), _SFNET_OPTIONS, "SphereFace SFNet-10, units (0,1,2,0)"),
        "sfnet20": BackboneEntry(partial(build_sfnet, 20), _SFNET_OPTIONS, "SphereFace SFNet-20, units (1,2,4,1)"),
        "sfnet36": BackboneEntry(partial(build_sfnet, 36), _SFNET_OPTIONS, "SphereFace SFNet-36, units (2,4,8,2)"),
        "sfnet64": BackboneEntry(partial(build_sfnet, 64), _SFNET_OPTIONS, "SphereFace SFNet-64, units (3,8,16,3)"),
        "iresnet18": BackboneEntry(partial(build_iresnet, 18), _IRESNET_OPTIONS, "IResNet-18, blocks (2,2,2,2)"),
        "iresnet34": BackboneEntry(partial(build_iresnet, 34), _IRESNET_OPTIONS, "IResNet-34, blocks (3,4,6,3)"),
        "iresnet50": BackboneEntry(partial(build_iresnet, 50), _IRESNET_OPTIONS, "IResNet-50, blocks (3,4,14,3)"),
        "iresnet100": BackboneEntry(
            partial(build_iresnet, 100), _IRESNET_OPTIONS, "IResNet-100, blocks (3,13,30,3)"
        ),
        "iresnet200": BackboneEntry(
            partial(build_iresnet, 200), _IRESNET_OPTIONS, "IResNet-200, blocks (6,26,60,6)"
        ),
        "mobilefacenet": BackboneEntry(
            build_mobilefacenet, ("blocks", "scale"), "MobileFaceNet (arcface_torch), blocks (1,4,6,2), scale 2"
        ),
    },
)


def build_backbone(name: str, embed_dim: int = 512, **options: object) -> nn.Module:
    """Build backbone ``name`` producing ``embed_dim``-d embeddings; ``options`` are family-specific."""
    entry = BACKBONES[name]
    check_options("backbone", name, options, entry.options)
    return entry(embed_dim=embed_dim, **options)


def backbone_options(name: str) -> dict[str, object]:
    """The options backbone ``name`` accepts, with their defaults."""
    import inspect

    entry = BACKBONES[name]
    factory = entry.factory
    params = inspect.signature(factory).parameters
    return {option: params[option].default for option in entry.options}


def list_backbones() -> list[str]:
    """Sorted names of every registered backbone."""
    return BACKBONES.names()


__all__ = [
    "BACKBONES",
    "backbone_options",
    "BackboneEntry",
    "build_backbone",
    "list_backbones",
    "SFNet",
    "opensphere_sfnet_state_dict",
    "IResNet",
    "MobileFaceNet",
    "load_arcface_torch_state_dict",
]
