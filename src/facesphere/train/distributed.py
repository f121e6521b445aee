"""Process-group setup and the few autograd-aware collectives the trainer and Partial FC need.

Launch with ``torchrun --nproc_per_node=N ...``: torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and initialises the default process group
(NCCL when the run uses CUDA, Gloo on CPU). Without ``WORLD_SIZE > 1`` everything here degrades to a single process:
the collectives are identities and no process group is created.

Gradient scaling convention (docs/methods.md §6.6 step 4)
--------------------------------------------------
The backbone is data parallel (DDP), the classification head is model parallel (Partial FC): every rank all-gathers
the embeddings of the global batch (B_g = Σ_r B_r rows, world·B with equal per-rank batches), computes the logits of
*its* class shard for all B_g rows and the global-batch mean loss L. The gradient each rank obtains w.r.t. the
gathered (B_g, D) embeddings is the part of ∂L/∂X_g that flows through its own classes; summing these over the ranks
gives the full ∂L/∂X_g. :func:`all_gather_with_grad` therefore all-reduces (SUM) the incoming gradient and keeps
this rank's B rows, which is exactly ∂L/∂x_r — the single-process gradient of those rows on the concatenated batch.
DDP then *averages* the backbone gradients over the ranks, (1/W)·Σ_r J_rᵀ g_r, whereas single-process training on
the global batch would give Σ_r J_rᵀ ∂L/∂x_r. To make the two equal, the embedding gradient is multiplied by the
world size W (``grad_scale=world_size``, what arcface_torch's all-gather does and what
:class:`~facesphere.train.partial_fc.PartialFC` passes by default): after DDP's averaging the backbone receives
exactly the gradient of single-process training on the global batch, so learning rates carry over unchanged between
1 and W processes (for the same global batch).
This holds for unequal per-rank batch sizes too (pass ``sizes``), since DDP divides by W whatever the batch sizes.

Terms of the loss that every rank computes in full from the gathered embeddings (rather than through its own class
shard) must contribute their gradient once, not W times; :func:`scale_grad` (identity forward, gradient × factor)
is the tool for that (Partial FC uses it for SphereFace-R's soft feature-normalisation penalty).
"""

from __future__ import annotations

import gc
import os
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..errors import InvalidOptionError

__all__ = [
    "DistInfo",
    "init_distributed",
    "cleanup_distributed",
    "get_dist_info",
    "all_gather_with_grad",
    "all_gather_nograd",
    "gather_sizes",
    "reduce_mean",
    "scale_grad",
    "barrier",
    "find_free_port",
    "spawn_gloo",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, ``local_rank`` on its node, its ``device`` and the
    process-group ``backend`` (``None`` for a single process)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_distributed(self) -> bool:
        """A process group exists (more than one process, or one forced by ``FACESPHERE_DISTRIBUTED=1``)."""
        return self.world_size > 1 or self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_INFO: DistInfo | None = None

#: ``FACESPHERE_DISTRIBUTED=1`` with ``WORLD_SIZE=1`` (``torchrun --nproc_per_node 1``) still creates the process
#: group, so that one process runs the distributed path (DDP backbone, Partial FC head, NCCL on a GPU): how the
#: distributed code is tested on a machine with one GPU. Without it a world of one is a plain single process.
FORCE_ENV = "FACESPHERE_DISTRIBUTED"


def _resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        dev = device
    else:
        if not isinstance(device, str):
            raise InvalidOptionError(f"invalid device={device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError):
            raise InvalidOptionError(f"invalid device={device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type not in ("cpu", "cuda"):
        raise InvalidOptionError(f"invalid device={str(dev)!r}: distributed training supports 'cpu' and 'cuda'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidOptionError(f"device={str(dev)!r} was asked for but CUDA is not available; use device='cpu'")
    return dev


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidOptionError(f"environment variable {name}={value!r} is not an integer") from None


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _info_from_group(device: torch.device) -> DistInfo:
    """DistInfo of a default process group initialised elsewhere."""
    rank, world = dist.get_rank(), dist.get_world_size()
    backend = str(dist.get_backend())
    local_rank = _env_int("LOCAL_RANK", rank)
    if backend == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    return DistInfo(rank, world, local_rank, device, backend)


def init_distributed(device: str | torch.device = "auto") -> DistInfo:
    """Initialise the default process group when launched by torchrun with ``WORLD_SIZE > 1`` (or ``WORLD_SIZE=1``
    and ``FACESPHERE_DISTRIBUTED=1``); idempotent.

    ``device``: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``. With CUDA every process uses the GPU
    ``LOCAL_RANK`` (``torch.cuda.set_device``) and the NCCL backend; on CPU the Gloo backend. Without ``WORLD_SIZE``
    (or with ``WORLD_SIZE=1``) no process group is created and a single-process ``DistInfo`` is returned. If a
    default process group already exists (a second call, or one created elsewhere) it is reused.
    """
    global _INFO
    dev = _resolve_device(device)
    if dist.is_available() and dist.is_initialized():
        if _INFO is None:
            _INFO = _info_from_group(dev)
        return _INFO
    world = _env_int("WORLD_SIZE", 1)
    if world < 1 or (world == 1 and os.environ.get(FORCE_ENV) != "1"):
        return DistInfo(0, 1, 0, dev, None)
    if not dist.is_available():
        raise InvalidOptionError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed support")
    rank = _env_int("RANK", -1)
    local_rank = _env_int("LOCAL_RANK", 0)
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing or not 0 <= rank < world:
        raise InvalidOptionError(
            f"WORLD_SIZE={world} but {', '.join(missing) or 'RANK'} is missing or invalid; launch distributed runs "
            "with `torchrun --nproc_per_node=N -m facesphere.cli train ...`"
        )
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise InvalidOptionError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) are visible; "
                "use at most one process per GPU (--nproc_per_node)"
            )
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    _INFO = DistInfo(rank, world, local_rank, dev, backend)
    return _INFO


def cleanup_distributed() -> None:
    """Destroy the default process group if there is one (safe to call in single-process runs)."""
    global _INFO
    if dist.is_available() and dist.is_initialized():
        # Free unreachable DDP reducers / pending works first: a Gloo work destroyed on the group's worker thread
        # while the interpreter finalises tries to take the GIL and aborts the process ("terminate called without
        # an active exception", seen at exit of 2-process runs).
        gc.collect()
        dist.destroy_process_group()
    _INFO = None


def get_dist_info(device: str | torch.device = "auto") -> DistInfo:
    """The current DistInfo without initialising anything: the default process group's, or a single process."""
    if dist.is_available() and dist.is_initialized():
        return _INFO if _INFO is not None else _info_from_group(_resolve_device(device))
    return DistInfo(0, 1, 0, _resolve_device(device), None)


def barrier() -> None:
    """``dist.barrier()`` when a multi-process group is active, else nothing."""
    if _active():
        dist.barrier()


# ----------------------------------------------------------------------------------------------------------------
def _gather(x: torch.Tensor, sizes: list[int] | None) -> torch.Tensor:
    """all_gather + cat in rank order; with ``sizes`` (rows per rank) the ranks may hold different row counts."""
    world = dist.get_world_size()
    x = x.contiguous()
    if sizes is None or all(n == x.shape[0] for n in sizes):
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x)
        return torch.cat(parts, dim=0)
    if len(sizes) != world or sizes[dist.get_rank()] != x.shape[0]:
        raise InvalidOptionError(f"sizes={sizes} do not match the world size {world} / this rank's {x.shape[0]} rows")
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)], dim=0)


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, grad_scale: float, sizes: list[int] | None) -> torch.Tensor:
        rank = dist.get_rank()
        ctx.offset = rank * x.shape[0] if sizes is None else sum(sizes[:rank])
        ctx.rows, ctx.grad_scale = x.shape[0], float(grad_scale)
        return _gather(x, sizes)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()  # the incoming buffer may be shared; all_reduce works in place
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        mine = grad.narrow(0, ctx.offset, ctx.rows)
        mine = mine * ctx.grad_scale if ctx.grad_scale != 1.0 else mine.clone()
        return mine, None, None


def gather_sizes(rows: int, device: torch.device | str = "cpu") -> list[int]:
    """The row counts of every rank (a tiny all-gather and a host sync); ``[rows]`` in a single process.

    ``device`` must be a device the backend can communicate on (the CUDA device with NCCL).
    """
    if not _active():
        return [int(rows)]
    return [int(n) for n in _gather(torch.tensor([int(rows)], device=device), None).tolist()]


def all_gather_with_grad(x: torch.Tensor, grad_scale: float = 1.0, sizes: list[int] | None = None) -> torch.Tensor:
    """(B, ...) on every rank -> (Σ B, ...) in rank order, differentiable.

    Backward: the gathered gradient is all-reduced (SUM) over the ranks and this rank's B rows are returned,
    multiplied by ``grad_scale``. With ``grad_scale=1`` the result is the exact gradient of Σ_ranks(loss_rank) w.r.t.
    this rank's rows; ``grad_scale=world_size`` compensates DDP's averaging of the backbone gradients (module
    docstring). Without ``sizes`` every rank must pass the same shape; with ``sizes`` (:func:`gather_sizes`) the row
    counts may differ. Without an active multi-process group ``x`` is returned as is.
    """
    if not _active():
        return x
    return _AllGather.apply(x, grad_scale, None if sizes is None else [int(n) for n in sizes])


def all_gather_nograd(x: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """(B, ...) on every rank -> (Σ B, ...) in rank order, without autograd (labels, indices); ``sizes`` as above."""
    if not _active():
        return x
    return _gather(x.detach(), sizes)


def reduce_mean(value: torch.Tensor | float) -> float:
    """The mean of a scalar over the ranks, as a Python float (for logging; a sync point)."""
    value = float(value.detach().item() if isinstance(value, torch.Tensor) else value)
    if not _active():
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(value, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / dist.get_world_size()


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.factor, None


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``factor`` in the backward pass."""
    if factor == 1.0:
        return x
    return _ScaleGrad.apply(x, float(factor))


# ----------------------------------------------------------------------------------------------------------------
def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0 and read the port the OS chose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _gloo_worker(rank: int, fn: Callable[..., Any], world_size: int, port: int, out_dir: str, args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size),
    )
    if sys.platform.startswith("linux") and Path("/sys/class/net/lo").exists():
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    try:
        result = fn(info, *args)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        cleanup_distributed()


def spawn_gloo(fn: Callable[..., Any], world_size: int = 2, *args: Any) -> list[Any]:
    """Run ``fn(info: DistInfo, *args)`` in ``world_size`` fresh CPU processes joined by a Gloo group; for tests.

    ``fn`` must be picklable (a module-level function). The processes talk over 127.0.0.1 on a free port and use one
    thread each. Returns the values ``fn`` returned, in rank order (tensors, numbers, strings, ``None`` and lists /
    tuples / dicts of them; they travel through ``torch.save``). An exception in any process is re-raised here.
    """
    if not isinstance(world_size, int) or world_size < 1:
        raise InvalidOptionError(f"invalid world_size={world_size!r}: must be a positive integer")
    with tempfile.TemporaryDirectory(prefix="facesphere-gloo-") as out_dir:
        port = find_free_port()
        mp.start_processes(
            _gloo_worker, args=(fn, world_size, port, out_dir, args), nprocs=world_size, join=True,
            start_method="spawn",
        )
        return [torch.load(Path(out_dir) / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
