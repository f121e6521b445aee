"""The fused autograd functions against plain autograd compositions."""

import pytest
import torch
import torch.nn.functional as F

from facesphere.heads.functional import binary_objective, normalized_linear


def test_normalized_linear_matches_graph_normalisation():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    w = (torch.randn(9, 7, dtype=torch.float64, generator=gen) * 3).requires_grad_(True)
    g = torch.randn(5, 9, dtype=torch.float64, generator=gen)
    out = normalized_linear(x, w)
    gx, gw = torch.autograd.grad(out, (x, w), g)
    ref = x @ F.normalize(w, dim=1).t()
    rx, rw = torch.autograd.grad(ref, (x, w), g)
    assert torch.allclose(out, ref, atol=1e-12)
    assert torch.allclose(gx, rx, atol=1e-12) and torch.allclose(gw, rw, atol=1e-12)


def test_normalized_linear_gradcheck():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(normalized_linear, (x, w))


def test_binary_objective_matches_autograd():
    gen = torch.Generator().manual_seed(2)
    z = (torch.randn(4, 6, dtype=torch.float64, generator=gen) * 5).requires_grad_(True)
    y = torch.tensor([0, 5, 2, 2])
    alpha = 0.7
    out = binary_objective(z, y, alpha)
    onehot = F.one_hot(y, 6).bool()
    ref = torch.where(onehot, alpha * F.softplus(-z), (1 - alpha) * F.softplus(z)).sum()
    assert torch.allclose(out, ref)
    assert torch.autograd.gradcheck(lambda t: binary_objective(t, y, alpha), (z,))


@pytest.mark.parametrize("rows", [0, 1, 7, 1023, 1024, 1025, 3000])
def test_rowwise_dot_matches_fp64_across_block_edges(rows, monkeypatch):
    from facesphere.heads import functional

    monkeypatch.setattr(functional, "DOT_CHUNK_ELEMENTS", 1024 * 16)  # blocks of 1024 rows at D = 16
    generator = torch.Generator().manual_seed(rows)
    a, b = torch.randn(rows, 16, generator=generator), torch.randn(rows, 16, generator=generator)
    out = functional.rowwise_dot(a, b)
    assert out.shape == (rows,) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), (a.double() * b.double()).sum(1), rtol=1e-6, atol=1e-5)
