"""Every registered backbone maps (B, 3, H, W) to (B, embed_dim); new registry entries are covered automatically."""

from __future__ import annotations

import pytest
import torch

from facesphere.backbones import build_backbone, list_backbones

# The largest networks run with batch 1 to keep the suite fast on CPU (BatchNorm is in eval mode, so B=1 is fine);
# everything else with batch 2. Train-mode forward/backward passes (B=2) are in test_gradients.py.
HEAVY = {"iresnet50", "iresnet100", "iresnet200", "sfnet36", "sfnet64"}


@pytest.mark.parametrize("name", list_backbones())
def test_output_shape_112x112(name):
    torch.manual_seed(0)
    embed_dim = 512 if name in HEAVY else 64
    model = build_backbone(name, embed_dim=embed_dim).eval()
    batch = 1 if name in HEAVY else 2
    with torch.no_grad():
        out = model(torch.randn(batch, 3, 112, 112))
    assert out.shape == (batch, embed_dim)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["sfnet4", "sfnet20"])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_sfnet_112x96(name, batchnorm):
    model = build_backbone(name, embed_dim=32, batchnorm=batchnorm, input_size=(112, 96)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 112, 96))
    assert out.shape == (2, 32)
    assert torch.isfinite(out).all()


def test_sfnet_prelu_forward():
    model = build_backbone("sfnet10", embed_dim=16, activation="prelu").eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 112, 112)).shape == (2, 16)


@pytest.mark.parametrize("name", [n for n in list_backbones() if n.startswith("sfnet")])
def test_sfnet_112x96_fc_size(name):
    model = build_backbone(name, embed_dim=8, input_size=(112, 96))
    assert model.fc.in_features == 512 * 7 * 6
    assert build_backbone(name, embed_dim=8).fc.in_features == 512 * 7 * 7
