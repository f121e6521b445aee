"""Mixed precision and memory layout, on the CPU and (marked ``cuda``) on a GPU.

Every head under fp16 / bf16 autocast: the trainer runs the backbone under autocast and hands its low-precision
embeddings to the head, which computes in fp32 whatever the autocast state; its loss and gradients must be those of
the fp32 head on the same (rounded) embeddings. Every backbone family in channels-last memory: the same outputs and
gradients as contiguous NCHW.
"""

from __future__ import annotations

import copy

import pytest
import torch

from facesphere.backbones import build_backbone
from facesphere.heads import build_head, list_heads

from .conftest import DEVICES

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _head(name: str, device: str):
    torch.manual_seed(0)
    return build_head(name, embed_dim=32, num_classes=20).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("name", list_heads())
def test_head_under_autocast_matches_fp32(name, dtype, device):
    if device == "cpu" and dtype == "fp16":
        try:
            with torch.autocast("cpu", dtype=torch.float16):
                pass
        except (RuntimeError, ValueError):  # older PyTorch: CPU autocast is bf16 only
            pytest.skip("CPU autocast has no fp16 in this PyTorch")
    head = _head(name, device)
    reference = copy.deepcopy(head)
    generator = torch.Generator().manual_seed(1)
    low = torch.randn(16, 32, generator=generator).to(device=device, dtype=DTYPES[dtype])  # as the backbone returns
    labels = torch.randint(0, 20, (16,), generator=generator).to(device)

    x = low.clone().requires_grad_(True)
    with torch.autocast(device, dtype=DTYPES[dtype]):  # the head inside autocast too: it must not follow it
        out = head(x, labels)
    out.loss.backward()
    x32 = low.float().clone().requires_grad_(True)  # fp32 on the same rounded values
    out32 = reference(x32, labels)
    out32.loss.backward()

    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, out32.loss, rtol=1e-5, atol=1e-5)
    assert x.grad.dtype == low.dtype
    torch.testing.assert_close(x.grad.float(), x32.grad.to(low.dtype).float(), rtol=2e-2, atol=1e-4)
    for (key, p), p32 in zip(head.named_parameters(), reference.parameters()):
        if p32.grad is not None:
            torch.testing.assert_close(p.grad, p32.grad, rtol=1e-4, atol=1e-6, msg=f"{name}: {key}")


BACKBONES = [
    ("sfnet4", {"channels": (8, 16, 16, 32)}),
    ("sfnet4", {"channels": (8, 16, 16, 32), "batchnorm": True}),
    ("iresnet18", {}),
    ("mobilefacenet", {}),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, options", BACKBONES, ids=lambda v: v if isinstance(v, str) else "-".join(
    f"{k}" for k in v) or "default")
def test_backbone_channels_last_matches_contiguous(name, options, device):
    torch.manual_seed(0)
    model = build_backbone(name, embed_dim=32, **options).to(device)
    twin = copy.deepcopy(model).to(memory_format=torch.channels_last)
    images = torch.randn(4, 3, 112, 112, device=device)
    out = model(images)
    out_cl = twin(images.contiguous(memory_format=torch.channels_last))
    # cuDNN may pick other algorithms per layout (TF32 convolutions by default on Ampere and later): compare norms
    tolerance, grad_tolerance = (1e-4, 1e-2) if device == "cpu" else (1e-2, 5e-2)
    assert float((out_cl - out).detach().norm() / out.detach().norm()) < tolerance
    out.square().sum().backward()
    out_cl.square().sum().backward()
    total = torch.sqrt(sum(p.grad.square().sum() for p in model.parameters() if p.grad is not None))
    for (key, p), q in zip(model.named_parameters(), twin.parameters()):
        if p.grad is None:  # frozen (iResNet's feature BatchNorm weight)
            assert q.grad is None
            continue  # summation order differs: relative norm
        # (floored: a gradient that is zero in exact arithmetic, e.g. a bias before BatchNorm, is rounding noise)
        error = float((q.grad - p.grad).norm() / torch.maximum(p.grad.norm(), 1e-3 * total))
        assert error < grad_tolerance, f"{name}: {key}: relative gradient error {error:.2e}"  # a layout bug: O(1)
