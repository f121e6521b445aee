"""Partial FC: a model-parallel softmax head with class sampling (docs/methods.md §6.6), on top of any softmax MarginHead.

Every rank owns a contiguous shard of the classes (:func:`shard_range`) as an ordinary head built by
``build_head(name, embed_dim, n_local, ...)``. A forward pass:

1. all-gather the embeddings (differentiable, :func:`~facesphere.train.distributed.all_gather_with_grad`) and the
   labels of the global batch (B_g = Σ_r B_r rows; the ranks may hold different batch sizes); labels of other
   shards become −1, local ones are shifted by −start;
2. in training with ``sample_rate`` ρ < 1: keep every local class that is a positive of the global batch plus
   uniformly random negatives up to ⌊ρ·n_local⌋ classes (:func:`sample_classes`), labels remapped into the sample;
3. ``head.margin_logits`` on the gathered embeddings against the (sampled) local classes;
4. softmax cross-entropy over the classes of *all* ranks (:func:`distributed_cross_entropy`: global row max and
   row sum by all-reduce, fp32), backward ``(p − onehot)/B_g`` on every rank (one process: the plain head's
   ``F.cross_entropy``, so that ρ = 1 in one process is bitwise the plain head);
5. the head's ``objective.finish`` (× loss weight, / s, + SFN penalty, + MHE).

Semantics: **v2** (arcface_torch ``partial_fc_v2``). The shard is one ``nn.Parameter``; classes that were not
sampled get no loss gradient in a step, but the optimiser still applies momentum and weight decay to their rows.
(v1 swapped the sampled rows and their momentum in and out of the optimiser so that non-sampled rows stayed frozen
exactly; it is not implemented.) With ρ = 1 this is plain model parallelism and, in one process, the plain head.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidOptionError
from ..heads import HEADS, HeadOutput, MarginHead, build_head
from .distributed import (
    DistInfo,
    all_gather_nograd,
    all_gather_with_grad,
    gather_sizes,
    get_dist_info,
    scale_grad,
)

__all__ = [
    "PartialFC",
    "shard_range",
    "num_sampled",
    "sample_classes",
    "remap_labels",
    "distributed_cross_entropy",
]

_MASK64 = (1 << 64) - 1


def shard_range(num_classes: int, world_size: int, rank: int) -> tuple[int, int]:
    """(start, n) of the classes rank ``rank`` owns: n = ⌊C/W⌋ + [r < C mod W], start = ⌊C/W⌋·r + min(r, C mod W)."""
    for name, value in (("num_classes", num_classes), ("world_size", world_size)):
        if not isinstance(value, int) or value < 1:
            raise InvalidOptionError(f"invalid {name}={value!r}: must be a positive integer")
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise InvalidOptionError(f"invalid rank={rank!r}: must be in [0, {world_size})")
    if num_classes < world_size:
        raise InvalidOptionError(
            f"num_classes={num_classes} is smaller than the world size {world_size}: "
            "every rank needs at least one class"
        )
    base, extra = divmod(num_classes, world_size)
    return base * rank + min(rank, extra), base + (1 if rank < extra else 0)


def num_sampled(n_local: int, rate: float) -> int:
    """⌊ρ·n_local⌋, the number of classes a rank keeps per step (before the all-positives rule)."""
    return int(math.floor(rate * n_local))


def sample_classes(
    local_positive_labels: torch.Tensor, n_local: int, n_sample: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The sorted local class ids used this step (docs/methods.md §6.6 step 3).

    ``local_positive_labels``: the local labels of the global batch (values < 0 = not on this rank, ignored).
    Every positive class P is kept; if ``n_sample >= |P|`` the rest are uniformly random negatives drawn without
    replacement (u ~ U(0, 1) per class, u = 2 for positives, top-``n_sample``), else exactly P. Returns an int64
    tensor on the labels' device (the generator must live on that device).
    """
    labels = local_positive_labels.reshape(-1)
    positives = torch.unique(labels[labels >= 0])  # sorted
    if positives.numel() and int(positives[-1]) >= n_local:
        raise InvalidOptionError(f"local label {int(positives[-1])} out of range for a shard of {n_local} classes")
    n_sample = min(int(n_sample), n_local)
    if n_sample < positives.numel():
        return positives
    u = torch.rand(n_local, generator=generator, device=labels.device)
    u[positives] = 2.0
    return torch.topk(u, k=n_sample, sorted=False).indices.sort().values


def remap_labels(local_labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Positions of ``local_labels`` in the sorted ``index`` (searchsorted); −1 where the label is not in it."""
    if index.numel() == 0:
        return torch.full_like(local_labels, -1)
    pos = torch.searchsorted(index, local_labels.clamp_min(0)).clamp_max_(index.numel() - 1)
    found = (local_labels >= 0) & (index[pos] == local_labels)
    return torch.where(found, pos, torch.full_like(pos, -1))


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 steps), for per-(seed, rank, step) generators."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _MASK64)) + 0x9E3779B97F4A7C15 & _MASK64
        h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK64
        h ^= h >> 31
    return h & ((1 << 63) - 1)


# ----------------------------------------------------------------------------------------------------------------
class _DistributedCE(torch.autograd.Function):
    """−mean_i log softmax(z_i)[y_i] with the classes (columns) split over the ranks; labels < 0 = not local."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, distributed: bool) -> torch.Tensor:
        with torch.autocast(logits.device.type, enabled=False):
            z = logits.to(torch.promote_types(logits.dtype, torch.float32))
            batch = z.shape[0]
            if z.shape[1]:
                row_max = z.detach().amax(dim=1)
            else:
                row_max = z.new_full((batch,), float("-inf"))
            if distributed:
                tdist.all_reduce(row_max, op=tdist.ReduceOp.MAX)
            p = (z - row_max.unsqueeze(1)).exp_()  # the only (B, C') buffer: exp, then probabilities
            denom = p.sum(dim=1)
            if distributed:
                tdist.all_reduce(denom, op=tdist.ReduceOp.SUM)
            rows = torch.nonzero(labels >= 0).squeeze(1)
            cols = labels[rows]
            target_logp = z.new_zeros(batch)
            # log p_y = z_y − max − log Σ exp(z − max): the log-sum-exp form (no clamp of p needed)
            target_logp[rows] = z[rows, cols] - row_max[rows] - denom[rows].log()
            if distributed:
                tdist.all_reduce(target_logp, op=tdist.ReduceOp.SUM)
            p.div_(denom.unsqueeze(1))
            ctx.save_for_backward(p, rows, cols)
            ctx.in_dtype = logits.dtype
            return -target_logp.mean()

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        p, rows, cols = ctx.saved_tensors
        grad = p  # reused in place (a second backward through this graph raises autograd's in-place error)
        grad.index_put_((rows, cols), torch.tensor(-1.0, dtype=grad.dtype, device=grad.device), accumulate=True)
        grad.mul_(grad_loss.to(grad.dtype) / max(grad.shape[0], 1))
        return grad.to(ctx.in_dtype), None, None


def distributed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, distributed: bool | None = None):
    """Mean softmax cross-entropy of (B_g, C') logits whose classes are spread over the ranks.

    ``labels`` index the local columns, −1 for rows whose target is on another rank (each row's target must be on
    exactly one rank). Computed in fp32 (fp64 for fp64 logits): global row max (all-reduce MAX), exp, global row
    sum (all-reduce SUM), target log-probabilities all-reduced (SUM). Returns the same scalar on every rank; the
    backward gives ``(p − onehot)/B_g`` on this rank's columns. ``distributed=None``: use the collectives when a
    multi-process group is active.
    """
    if distributed is None:
        distributed = tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1
    return _DistributedCE.apply(logits, labels.long(), bool(distributed))


# ----------------------------------------------------------------------------------------------------------------
class PartialFC(nn.Module):
    """Model-parallel softmax head with class sampling (Partial FC, v2 semantics).

    Args:
        head_name: a registered head with a softmax objective (``arcface``, ``cosface``, ``sphereface_r``,
            ``subcenter_arcface``, ...); ``sface`` and ``sphereface2`` are refused.
        embed_dim: D.
        num_classes: C, the total number of classes over all ranks.
        sample_rate: ρ ∈ (0, 1]; each rank uses max(⌊ρ·n_local⌋, 1) classes per training step (more if the global
            batch has more local positives). ρ = 1: no sampling. Evaluation mode never samples.
        dist: the :class:`DistInfo` of this process; ``None`` = the current default process group if one is
            initialised (:func:`init_distributed`), else a single process.
        seed: seeds the class sampling (a generator seeded from (seed, rank, step), so runs are reproducible) and,
            with more than one rank, the shard initialisation (from (seed, rank), so shards differ even when every
            rank sets the same global seed). In a single process the shard is initialised exactly like
            ``build_head`` under the global RNG.
        scale_embedding_grad: multiply the embedding gradient by the world size so that, after DDP averages the
            backbone gradients, they equal single-process training on the global batch (module docstring of
            :mod:`facesphere.train.distributed`). Set False if the backbone gradients are summed, not averaged.
        **head_options: the head's options (``s``, ``m``, ``subcenters``, ...), as for ``build_head``.

    ``self.head`` is this rank's shard (``self.head.weight`` is (n_local·K, D)); ``state_dict`` holds the shard and
    the head's step counter (plus the shard layout, checked on load). Use :meth:`gather_full_weight` /
    :meth:`full_head` to get the whole classifier on rank 0 and :meth:`load_full_weight` to load one.
    """

    def __init__(
        self,
        head_name: str,
        embed_dim: int,
        num_classes: int,
        sample_rate: float = 1.0,
        *,
        dist: DistInfo | None = None,
        seed: int = 0,
        scale_embedding_grad: bool = True,
        **head_options: Any,
    ) -> None:
        super().__init__()
        spec = HEADS[head_name]  # unknown names: UnknownNameError listing the valid ones
        if not spec.objective.softmax:
            raise InvalidOptionError(
                f"Partial FC needs a softmax cross-entropy head, but {head_name!r} uses the {spec.objective.__name__} "
                "objective (not a softmax over classes); train it with the plain head (facesphere.build_head) and DDP "
                "instead"
            )
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or not 0 < sample_rate <= 1:
            raise InvalidOptionError(f"invalid sample_rate={sample_rate!r}: must be in (0, 1]")
        if not isinstance(seed, int):
            raise InvalidOptionError(f"invalid seed={seed!r}: must be an integer")
        self.dist = dist if dist is not None else get_dist_info()
        world, rank = self.dist.world_size, self.dist.rank
        self.start, self.n_local = shard_range(num_classes, world, rank)
        self.head_name, self.embed_dim, self.num_classes = head_name, embed_dim, num_classes
        self.head_options = dict(head_options)
        self.sample_rate, self.seed = float(sample_rate), seed
        self.scale_embedding_grad = bool(scale_embedding_grad)
        if world == 1:
            head = build_head(head_name, embed_dim, self.n_local, **head_options)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_mix(seed, rank))
                head = build_head(head_name, embed_dim, self.n_local, **head_options)
                if head.init == "xavier":  # xavier's std depends on the fan-out: use the full C·K, not the shard's
                    with torch.no_grad():
                        head.weight.normal_(0.0, math.sqrt(2.0 / (embed_dim + num_classes * head.subcenters)))
                        if head.weight_norm == "inplace":
                            head.weight.div_(head.weight.norm(dim=1, keepdim=True).clamp_min(1e-12))
        self.head: MarginHead = head
        self.last_index: torch.Tensor | None = None  # the sampled local classes of the last training forward
        self._generator: torch.Generator | None = None

    def extra_repr(self) -> str:
        return (
            f"head={self.head_name!r}, num_classes={self.num_classes}, shard=[{self.start}, "
            f"{self.start + self.n_local}), rank={self.dist.rank}/{self.dist.world_size}, "
            f"sample_rate={self.sample_rate}"
        )

    # ------------------------------------------------------------------------------------------------------------
    def _sampling_generator(self, device: torch.device, step: int) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
        self._generator.manual_seed(_mix(self.seed, self.dist.rank, step))
        return self._generator

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, *, return_logits: bool = False) -> HeadOutput:
        """(B, D) embeddings and (B,) global labels of this rank's part of the batch -> HeadOutput.

        ``loss`` is the loss of the whole global batch (the same value on every rank); ``logits`` are this rank's
        (B_g, C') margin logits when ``return_logits`` else ``None`` (not keeping them saves a B_g × C' buffer);
        ``extras`` adds ``classes_used`` (C' this step) to the head's diagnostics.
        """
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embed_dim:
            raise InvalidOptionError(f"embeddings must be (B, {self.embed_dim}), got {tuple(embeddings.shape)}")
        if labels.shape != embeddings.shape[:1]:
            raise InvalidOptionError(f"labels must be (B,) = ({embeddings.shape[0]},), got {tuple(labels.shape)}")
        world = self.dist.world_size
        labels = labels.long()
        if world > 1:
            if not (tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() == world):
                raise InvalidOptionError(
                    f"this Partial FC was built for {world} processes but no process group of that size is "
                    "initialised; call facesphere.train.distributed.init_distributed() under torchrun first"
                )
            grad_scale = float(world) if self.scale_embedding_grad else 1.0
            sizes = gather_sizes(embeddings.shape[0], labels.device)  # ranks may hold different batch sizes
            x = all_gather_with_grad(embeddings, grad_scale=grad_scale, sizes=sizes)
            global_labels = all_gather_nograd(labels, sizes=sizes)
        else:
            x, global_labels = embeddings, labels
        local = global_labels - self.start
        in_range = (local >= 0) & (local < self.n_local)
        local_labels = torch.where(in_range, local, torch.full_like(local, -1))

        index, head_labels = None, local_labels
        if self.training and self.sample_rate < 1.0:
            n_sample = max(num_sampled(self.n_local, self.sample_rate), 1)
            generator = self._sampling_generator(local_labels.device, int(self.head.step.item()) + 1)
            index = sample_classes(local_labels, self.n_local, n_sample, generator)
            head_labels = remap_labels(local_labels, index)
            self.last_index = index.detach()

        logits, norms = self.head.margin_logits(x, head_labels, index)
        if world > 1:
            ce = distributed_cross_entropy(logits, head_labels, distributed=True)
            # every rank computes the norm penalty from all B_g rows: count its gradient once, not world times
            norms = scale_grad(norms, 1.0 / world)
        else:
            # one process: every row's target is among the (sampled) classes, and the plain head's own CE makes
            # PartialFC(ρ = 1) bitwise equal to the plain head (distributed_cross_entropy agrees to rounding)
            ce = F.cross_entropy(logits, head_labels)
        loss, extras = self.head.objective.finish(self.head, ce, norms, local_labels)
        extras["classes_used"] = torch.tensor(logits.shape[1])
        return HeadOutput(loss, logits if return_logits else None, extras)

    # ------------------------------------------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "head": self.head_name, "num_classes": self.num_classes, "world_size": self.dist.world_size,
            "rank": self.dist.rank, "start": self.start, "n_local": self.n_local,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict):
            return
        mine = self.get_extra_state()
        if any(state.get(k) != mine[k] for k in ("num_classes", "start", "n_local")):
            raise InvalidOptionError(
                f"this Partial FC shard was saved by rank {state.get('rank')} of {state.get('world_size')} "
                f"(classes [{state.get('start')}, {state.get('start', 0) + state.get('n_local', 0)}) of "
                f"{state.get('num_classes')}), but this process is rank {mine['rank']} of {mine['world_size']} "
                f"(classes [{self.start}, {self.start + self.n_local}) of {self.num_classes}); to change the world "
                "size save gather_full_weight() on rank 0 and call load_full_weight() on every rank"
            )

    def gather_full_weight(self, dst: int = 0) -> torch.Tensor | None:
        """The whole (C·K, D) class-centre matrix on rank ``dst`` (a detached copy); ``None`` on the other ranks.

        A collective: every rank must call it.
        """
        weight = self.head.weight.detach()
        world = self.dist.world_size
        if world == 1:
            return weight.clone()
        k = self.head.subcenters
        max_rows = -(-self.num_classes // world) * k
        padded = weight.new_zeros(max_rows, weight.shape[1])
        padded[: weight.shape[0]] = weight
        parts = [torch.empty_like(padded) for _ in range(world)] if self.dist.rank == dst else None
        tdist.gather(padded, gather_list=parts, dst=dst)
        if parts is None:
            return None
        rows = [shard_range(self.num_classes, world, r)[1] * k for r in range(world)]
        return torch.cat([part[:n] for part, n in zip(parts, rows)], dim=0)

    def load_full_weight(self, weight: torch.Tensor) -> None:
        """Copy this rank's rows of a full (C·K, D) class-centre matrix into the shard (call it on every rank)."""
        k = self.head.subcenters
        expected = (self.num_classes * k, self.embed_dim)
        if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != expected:
            shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
            raise InvalidOptionError(f"the full weight must be {expected} (C·K, D), got {shape}")
        with torch.no_grad():
            self.head.weight.copy_(weight[self.start * k : (self.start + self.n_local) * k])

    def full_head(self, dst: int = 0) -> MarginHead | None:
        """A plain head over all C classes with the gathered weight and step counter, on rank ``dst`` (else None),
        e.g. for evaluation or a world-size-independent checkpoint. A collective: every rank must call it."""
        weight = self.gather_full_weight(dst)
        if weight is None:
            return None
        head = build_head(self.head_name, self.embed_dim, self.num_classes, **self.head_options)
        head = head.to(device=weight.device)
        with torch.no_grad():
            head.weight.copy_(weight)
            head.step.copy_(self.head.step)
        return head.train(self.training)
