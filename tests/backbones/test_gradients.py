"""A training step reaches every trainable parameter (and no frozen one)."""

from __future__ import annotations

import pytest
import torch

from facesphere.backbones import build_backbone

CASES = [
    ("sfnet4", {}),
    ("sfnet4", {"batchnorm": True}),
    ("sfnet10", {"activation": "prelu"}),
    ("iresnet18", {"dropout": 0.2}),
    ("mobilefacenet", {}),
]


def _backward(model, x):
    model.zero_grad(set_to_none=True)
    out = model(x)
    # a loss that depends on every output coordinate in a non-symmetric way
    loss = (out * torch.linspace(-1.0, 1.0, out.numel()).view_as(out)).sum() + out.pow(2).sum()
    loss.backward()


@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}-{o}" for n, o in CASES])
def test_gradient_reaches_every_trainable_parameter(name, options):
    torch.manual_seed(0)
    model = build_backbone(name, embed_dim=16, **options)
    x = torch.randn(2, 3, 112, 112)

    # train mode: every trainable parameter is in the graph; frozen ones get nothing
    _backward(model.train(), x)
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing}"
    for n, p in model.named_parameters():
        assert p.requires_grad or p.grad is None, n
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), n

    # In train mode a bias right before the embedding BatchNorm1d (e.g. MobileFaceNet's GDC BN bias) shifts every
    # sample equally and the batch statistics cancel it, so its gradient is legitimately ~0. With BN in eval mode
    # (running statistics) every trainable parameter must get a non-zero gradient.
    _backward(model.eval(), x)
    zero = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not zero, f"no non-zero gradient for {zero}"
