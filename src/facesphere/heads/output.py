"""What every head returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class HeadOutput:
    """What a head returns.

    loss:   scalar fp32 (fp64 for fp64 inputs) tensor — exactly the method's objective, weights and penalties included.
    logits: (B, C) the logits the softmax cross-entropy saw, or ``None`` for objectives without a softmax.
    extras: scalar diagnostics (detached), e.g. mean target / non-target cosine, current λ or m.
    """

    loss: torch.Tensor
    logits: torch.Tensor | None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
