"""Fused autograd functions for the head's hot path (the B x C logits and the C x D weights).

``normalized_linear(x, W) = x @ (W / ‖W‖_row)ᵀ`` with the in-graph (WN-graph) gradient, without materialising the
normalised C x D weight or its gradient graph: the row norms scale the B x C output columns instead (B < D in the
usual settings, so this is the cheaper side), and the backward projects the plain weight gradient onto the tangent
of each row, ``∂L/∂W_j = (M_j − (Ŵ_j·M_j)·Ŵ_j)/‖W_j‖`` with ``M = (∂L/∂z)ᵀ x`` (docs/methods.md §1.7).
"""

from __future__ import annotations

import torch


class _NormalizedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        inv_norm = weight.norm(dim=1).clamp_min_(1e-12).reciprocal_()  # (C,)
        out = x @ weight.t()
        out.mul_(inv_norm)
        ctx.save_for_backward(x, weight, inv_norm)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight, inv_norm = ctx.saved_tensors
        grad_scaled = grad_out * inv_norm  # (B, C): ∂L/∂(x·W_j) for the raw product
        grad_x = grad_scaled @ weight if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = grad_scaled.t() @ x  # (C, D): plain weight gradient / ‖W_j‖
            # tangent projection: subtract (W_j·G_j)/‖W_j‖² · W_j
            # row-wise dot products W_j·G_j as a batched (1 x D)(D x 1) product: no C x D temporary
            radial = torch.bmm(grad_weight.unsqueeze(1), weight.unsqueeze(2)).view(-1).mul_(inv_norm).mul_(inv_norm)
            grad_weight.addcmul_(weight, radial.unsqueeze(1), value=-1.0)
        return grad_x, grad_weight


def normalized_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B, D) x (C, D) -> (B, C): ``x @ normalize(weight)ᵀ`` with the exact in-graph normalisation gradient."""
    return _NormalizedLinear.apply(x, weight)


class _BinaryObjective(torch.autograd.Function):
    """Σ_i[α·softplus(−z_iy) + (1−α)·Σ_{j≠y} softplus(z_ij)] (SphereFace2), with a one-pass fused backward."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, labels: torch.Tensor, alpha: float) -> torch.Tensor:
        rows = torch.arange(z.shape[0], device=z.device)
        z_target = z[rows, labels]
        total = (1.0 - alpha) * (torch.nn.functional.softplus(z).sum() - torch.nn.functional.softplus(z_target).sum())
        total = total + alpha * torch.nn.functional.softplus(-z_target).sum()
        ctx.save_for_backward(z, labels)
        ctx.alpha = alpha
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        z, labels = ctx.saved_tensors
        alpha = ctx.alpha
        rows = torch.arange(z.shape[0], device=z.device)
        grad = torch.sigmoid(z).mul_(grad_total * (1.0 - alpha))
        grad[rows, labels] = -alpha * torch.sigmoid(-z[rows, labels]) * grad_total
        return grad, None, None


def binary_objective(z: torch.Tensor, labels: torch.Tensor, alpha: float) -> torch.Tensor:
    """Sum over the batch of SphereFace2's weighted one-vs-all binary cross-entropy; z (B, C), labels (B,)."""
    return _BinaryObjective.apply(z, labels, alpha)
