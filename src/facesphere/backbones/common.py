"""Small helpers shared by the backbones: option validation and parameter counting."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from ..errors import InvalidOptionError


def check_embed_dim(name: str, embed_dim: object) -> int:
    """Return ``embed_dim`` as an ``int`` or raise :class:`InvalidOptionError` naming the backbone."""
    if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 1:
        raise InvalidOptionError(
            f"backbone {name!r}: embed_dim must be a positive integer, got {embed_dim!r}"
        )
    return embed_dim


def check_input_size(
    name: str, input_size: object, allowed: Sequence[tuple[int, int]]
) -> tuple[int, int]:
    """Normalise ``input_size`` (an int or an (H, W) pair) and check that it is one of ``allowed``."""
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        size = (input_size, input_size)
    else:
        try:
            size = tuple(int(v) for v in input_size)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            size = ()
    if size not in [tuple(a) for a in allowed]:
        valid = ", ".join(f"({h}, {w})" for h, w in allowed)
        raise InvalidOptionError(
            f"backbone {name!r}: input_size must be one of {valid} (height, width), got {input_size!r}"
        )
    return size  # type: ignore[return-value]


def check_probability(name: str, option: str, value: object) -> float:
    """Return ``value`` as a float in [0, 1) or raise :class:`InvalidOptionError`."""
    try:
        p = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        p = -1.0
    if not 0.0 <= p < 1.0:
        raise InvalidOptionError(f"backbone {name!r}: {option} must be in [0, 1), got {value!r}")
    return p


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (frozen ones included unless ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["check_embed_dim", "check_input_size", "check_probability", "count_parameters"]
