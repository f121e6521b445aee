"""Process-group setup and the autograd-aware collectives (single process, and 2 Gloo processes on CPU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from facesphere.errors import InvalidOptionError
from facesphere.train.distributed import (
    DistInfo,
    all_gather_nograd,
    all_gather_with_grad,
    cleanup_distributed,
    find_free_port,
    gather_sizes,
    get_dist_info,
    init_distributed,
    reduce_mean,
    scale_grad,
    spawn_gloo,
)

WORLD = 2
B, D_IN, D, C = 3, 5, 4, 6  # per-rank batch, backbone input, embedding, model-parallel output columns


def _data():
    g = torch.Generator().manual_seed(11)
    inputs = torch.randn(WORLD * B, D_IN, generator=g)
    proj = torch.randn(D, C, generator=g)  # the "classifier": rank r owns columns [r·C/W, (r+1)·C/W)
    coeff = [torch.randn(WORLD * B, D, generator=g) for _ in range(WORLD)]
    return inputs, proj, coeff


def _backbone() -> nn.Module:
    torch.manual_seed(5)
    return nn.Linear(D_IN, D)


def _model_parallel_loss(emb_global: torch.Tensor, proj: torch.Tensor, rank: int | None) -> torch.Tensor:
    """mean over the global batch of Σ_j sin(z_ij); with ``rank`` only the columns that rank owns."""
    cols = proj if rank is None else proj[:, rank * C // WORLD : (rank + 1) * C // WORLD]
    return torch.sin(emb_global @ cols).sum() / emb_global.shape[0]


def _worker(info: DistInfo) -> dict:
    rank = info.rank
    assert (info.world_size, info.backend, info.local_rank) == (WORLD, "gloo", rank)
    assert info.is_distributed and info.is_main == (rank == 0) and info.device == torch.device("cpu")
    assert init_distributed("cpu") == info  # idempotent
    assert get_dist_info() == info
    inputs, proj, coeff = _data()
    mine = slice(rank * B, (rank + 1) * B)

    # forward = concatenation in rank order; backward = all-reduce SUM, own rows, × grad_scale
    x = (torch.arange(B * D, dtype=torch.float32).view(B, D) + 100 * rank).requires_grad_()
    gathered = all_gather_with_grad(x)
    expected = torch.cat([torch.arange(B * D, dtype=torch.float32).view(B, D) + 100 * r for r in range(WORLD)])
    assert torch.equal(gathered, expected)
    (gathered * coeff[rank]).sum().backward()
    assert torch.allclose(x.grad, sum(coeff)[mine])
    x.grad = None
    (all_gather_with_grad(x, grad_scale=WORLD) * coeff[rank]).sum().backward()
    assert torch.allclose(x.grad, WORLD * sum(coeff)[mine])

    # unequal row counts: 2 rows on rank 0, 3 on rank 1
    sizes = gather_sizes(2 + rank)
    assert sizes == [2, 3]
    y = torch.full((2 + rank, 2), float(rank + 1), requires_grad=True)
    gathered = all_gather_with_grad(y, grad_scale=3.0, sizes=sizes)
    assert torch.equal(gathered, torch.tensor([[1.0, 1.0]] * 2 + [[2.0, 2.0]] * 3))
    weights = torch.arange(10, dtype=torch.float32).view(5, 2) * (rank + 1)  # rank-dependent loss
    (gathered * weights).sum().backward()
    total = torch.arange(10, dtype=torch.float32).view(5, 2) * 3  # Σ_r (r + 1) = 3
    assert torch.equal(y.grad, 3.0 * total[[0, 1]] if rank == 0 else 3.0 * total[2:])
    assert torch.equal(all_gather_nograd(torch.arange(2 + rank), sizes=sizes), torch.tensor([0, 1, 0, 1, 2]))

    labels = torch.arange(B) + 10 * rank
    assert torch.equal(all_gather_nograd(labels), torch.cat([torch.arange(B) + 10 * r for r in range(WORLD)]))
    assert reduce_mean(float(rank)) == pytest.approx(0.5)
    assert reduce_mean(torch.tensor(2.0 * rank)) == pytest.approx(1.0)

    # DDP backbone + model-parallel loss on the all-gathered embeddings (world-size scaling of the embedding grad)
    model = DistributedDataParallel(_backbone())
    emb = model(inputs[mine])
    emb.retain_grad()
    _model_parallel_loss(all_gather_with_grad(emb, grad_scale=WORLD), proj, rank).backward()
    return {
        "emb_grad": emb.grad.detach().clone(),
        "weight_grad": model.module.weight.grad.clone(),
        "bias_grad": model.module.bias.grad.clone(),
    }


def _failing_worker(info: DistInfo) -> None:
    if info.rank == 1:
        raise ValueError("boom from rank 1")


# ----------------------------------------------------------------------------------------------------------------
def test_single_process_info(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed("cpu")
    assert info == DistInfo(0, 1, 0, torch.device("cpu"), None)
    assert not info.is_distributed and info.is_main
    assert init_distributed("cpu") == info
    assert get_dist_info("cpu") == info
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_distributed("cpu") == info
    cleanup_distributed()  # no group: a no-op
    assert not torch.distributed.is_initialized()


def test_bad_device_and_environment(monkeypatch):
    with pytest.raises(InvalidOptionError, match="device"):
        init_distributed("tpu:0")
    with pytest.raises(InvalidOptionError, match="device"):
        init_distributed("not a device")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidOptionError, match="CUDA is not available"):
            init_distributed("cuda")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(InvalidOptionError, match="torchrun"):
        init_distributed("cpu")
    assert not torch.distributed.is_initialized()


def test_collectives_are_identities_in_one_process():
    x = torch.randn(3, 4, requires_grad=True)
    assert all_gather_with_grad(x, grad_scale=8.0) is x
    labels = torch.tensor([1, 2, 3])
    assert all_gather_nograd(labels) is labels
    assert reduce_mean(torch.tensor(2.5)) == 2.5 and reduce_mean(4) == 4.0
    assert gather_sizes(5) == [5]


def test_scale_grad():
    x = torch.randn(4, requires_grad=True)
    y = scale_grad(x, 0.25)
    assert torch.equal(y, x)
    (3 * y).sum().backward()
    assert torch.allclose(x.grad, torch.full((4,), 0.75))
    assert scale_grad(x, 1.0) is x


def test_find_free_port():
    port = find_free_port()
    assert isinstance(port, int) and 0 < port < 65536


@pytest.mark.slow
def test_two_processes_gradients_match_single_process():
    results = spawn_gloo(_worker, WORLD)
    inputs, proj, _ = _data()
    model = _backbone()
    emb = model(inputs)
    emb.retain_grad()
    _model_parallel_loss(emb, proj, None).backward()
    for rank, res in enumerate(results):
        # the embedding gradient is world × the single-process one ...
        assert torch.allclose(res["emb_grad"] / WORLD, emb.grad[rank * B : (rank + 1) * B], atol=1e-6)
        # ... so that DDP's averaging gives the backbone exactly the single-process gradient of the global batch
        assert torch.allclose(res["weight_grad"], model.weight.grad, atol=1e-6)
        assert torch.allclose(res["bias_grad"], model.bias.grad, atol=1e-6)


@pytest.mark.slow
def test_spawn_gloo_reraises_worker_errors():
    with pytest.raises(Exception, match="boom from rank 1"):
        spawn_gloo(_failing_worker, WORLD)


def test_spawn_gloo_rejects_bad_world_size():
    with pytest.raises(InvalidOptionError):
        spawn_gloo(_failing_worker, 0)
