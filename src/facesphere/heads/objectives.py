"""Objectives: what the shared head turns its logits into (docs/methods.md §1.3, §4.3, §4.6, §4.7, §7.1).

Every method-specific part of a head's loss lives here, as a frozen dataclass holding only the options that method
uses; :class:`~facesphere.heads.base.MarginHead` computes the scaled cosines (and applies the margin when the
objective's ``uses_margin``) and calls ``objective.loss(head, logits, labels, rows, norms, step)``.

* :class:`SoftmaxCE` — softmax cross-entropy of the margin logits, × ``loss_weight``, ÷ s (``divide_by_s``), plus
  SphereFace-R's soft-normalisation penalty (``norm_penalty``) and SphereFace+'s hyperspherical energy
  (``mhe_weight``); every softmax head uses it (and Partial FC, through :meth:`SoftmaxCE.finish`).
* :class:`SFaceLoss` — SFace's sigmoid-weighted intra / inter terms, weights detached, no margin, no softmax.
* :class:`SphereFace2Loss` — SphereFace2's weighted one-vs-all binary cross-entropy with a learnable bias.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F

from ..errors import InvalidOptionError
from .functional import binary_objective
from .margins import ACOS_EPS_FINE, Margin, angle
from .output import HeadOutput

__all__ = ["Objective", "SoftmaxCE", "SFaceLoss", "SphereFace2Loss", "hyperspherical_energy"]


class MarginHead(Protocol):
    """What an objective reads of the head that calls it (:class:`facesphere.heads.base.MarginHead`)."""

    num_classes: int
    s: float
    feature_norm: str
    margin: Margin
    weight: torch.Tensor
    bias: torch.Tensor | None

    def current_step(self) -> int: ...


class Objective:
    """Base of the objectives. Class attributes say what the head must provide:

    ``uses_margin``: the head applies its margin to the logits first; ``softmax``: the loss is a softmax
    cross-entropy over the classes (the head's logits are returned, Partial FC can shard it); ``needs_bias``: the head
    owns a learnable scalar ``bias`` (initialised by :meth:`initial_bias`).
    """

    uses_margin: ClassVar[bool] = True
    softmax: ClassVar[bool] = False
    needs_bias: ClassVar[bool] = False

    def check(self, head: MarginHead) -> None:
        """Raise :class:`InvalidOptionError` when the head's settings do not suit this objective."""

    def initial_bias(self, head: MarginHead) -> float:
        return 0.0

    def loss(self, head: MarginHead, logits: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor,
             norms: torch.Tensor, step: int) -> HeadOutput:
        """``logits`` (B, C) S·φ (S·c when not ``uses_margin``), ``labels`` (B,), ``rows`` = arange(B), ``norms``
        (B, 1) ‖x‖, ``step`` the head's forward counter -> the method's :class:`HeadOutput`."""
        raise NotImplementedError


def hyperspherical_energy(weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SphereFace+ mini-batch MHE: mean over pairs a<b of the classes in the batch of arccos(Ŵ_a·Ŵ_b)^−2.

    ``weight`` (C, D) class centres, ``labels`` (B,). Zero when the batch holds fewer than two classes (the official
    code divides 0 by 0 there).
    """
    classes = torch.unique(labels)
    if classes.numel() < 2:
        return weight.new_zeros(())
    centres = F.normalize(weight[classes], dim=1)
    gram = (centres @ centres.t()).clamp(-1.0 + 1e-5, 1.0 - 1e-5)
    upper = torch.triu_indices(classes.numel(), classes.numel(), offset=1, device=labels.device)
    angles = torch.acos(gram[upper[0], upper[1]])
    return angles.pow(-2).mean()


@dataclass(frozen=True)
class SoftmaxCE(Objective):
    """Softmax cross-entropy of the margin logits (docs/methods.md §1.3), with the methods' weights and penalties.

    ``loss_weight`` multiplies the CE (SphereFace-R's ``lw``); ``divide_by_s`` divides it by s (SphereFace-R with hard
    or soft normalisation, §4.3); ``norm_penalty`` adds λ·mean|‖x‖ − s| with soft feature normalisation (SFN, the
    official code's ``t``); ``mhe_weight`` adds SphereFace+'s hyperspherical energy of the batch's class centres (§4.7).
    """

    loss_weight: float = 1.0
    divide_by_s: bool = False
    norm_penalty: float = 0.0
    mhe_weight: float = 0.0

    softmax: ClassVar[bool] = True

    def check(self, head: MarginHead) -> None:
        for name in ("loss_weight", "norm_penalty", "mhe_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or value != value or value == float("inf"):
                raise InvalidOptionError(f"invalid {name}={value!r}: must be a finite number >= 0")

    def loss(self, head: MarginHead, logits: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor,
             norms: torch.Tensor, step: int) -> HeadOutput:
        loss, extras = self.finish(head, F.cross_entropy(logits, labels), norms, labels, step)
        return HeadOutput(loss, logits, extras)

    def finish(self, head: MarginHead, ce: torch.Tensor, norms: torch.Tensor, labels: torch.Tensor,
               step: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """From the mean softmax cross-entropy to the method's loss (× loss weight, / s, + SFN penalty, + MHE) and the
        diagnostics (the margin's schedule values); Partial FC calls it with its model-parallel CE."""
        step = head.current_step() if step is None else step
        extras = {key: torch.tensor(value, dtype=torch.float64) for key, value in head.margin.schedule(step).items()}
        loss = ce / head.s if self.divide_by_s else ce
        loss = self.loss_weight * loss
        if head.feature_norm == "soft" and self.norm_penalty > 0:
            penalty = self.norm_penalty * (norms.squeeze(1) - head.s).abs().mean()
            loss = loss + penalty
            extras["norm_penalty"] = penalty.detach()
        if self.mhe_weight > 0:
            mhe = hyperspherical_energy(head.weight, labels[labels >= 0])
            loss = loss + self.mhe_weight * mhe
            extras["mhe"] = mhe.detach()
        return loss, extras


@dataclass(frozen=True)
class SFaceLoss(Objective):
    """SFace (Zhong et al., TIP 2021; docs/methods.md §7.1): mean_i[−sg(w_intra)·s·c_iy + Σ_{j≠y} sg(w_inter)·s·c_ij].

    ``intra(θ_y) = sigmoid(k(θ_y − a))`` pulls a sample toward its centre only while θ_y ≳ a; ``inter(θ_j) =
    sigmoid(k(b − θ_j))`` pushes a non-target centre only while θ_j ≲ b. The weights are constants of the gradient.
    """

    k: float = 80.0
    a: float = 0.8
    b: float = 1.23

    uses_margin: ClassVar[bool] = False

    def check(self, head: MarginHead) -> None:
        if head.feature_norm != "hard":
            raise InvalidOptionError("the sface objective needs feature_norm='hard'")

    def intra(self, cos: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.k * (angle(cos, ACOS_EPS_FINE) - self.a))

    def inter(self, cos: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        if inplace:
            theta = cos.clamp_(-1.0 + ACOS_EPS_FINE, 1.0 - ACOS_EPS_FINE).acos_()
            return theta.mul_(-self.k).add_(self.k * self.b).sigmoid_()
        return torch.sigmoid(self.k * (self.b - angle(cos, ACOS_EPS_FINE)))

    def loss(self, head: MarginHead, logits: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor,
             norms: torch.Tensor, step: int) -> HeadOutput:
        batch = logits.shape[0]
        with torch.no_grad():
            cos = logits.detach() / head.s
            cos_target = cos[rows, labels]
            cos_nontarget_mean = (cos.sum() - cos_target.sum()) / (batch * max(head.num_classes - 1, 1))
            weights = self.inter(cos, inplace=True)  # (B, C), overwrites the scratch cosines
            intra = self.intra(cos_target)
            weights[rows, labels] = -intra
        loss = torch.dot(weights.reshape(-1), logits.reshape(-1)) / batch
        target_logits = logits[rows, labels].detach()
        intra_loss = -(intra * target_logits).sum() / batch
        extras = {
            "intra_loss": intra_loss,
            "inter_loss": loss.detach() - intra_loss,
            "cos_target": cos_target.mean(),
            "cos_nontarget": cos_nontarget_mean,
        }
        return HeadOutput(loss, None, extras)


@dataclass(frozen=True)
class SphereFace2Loss(Objective):
    """SphereFace2 (Wen et al., ICLR 2022; docs/methods.md §4.6): (lw/r)·(1/B)·Σ_i[λ·softplus(−z_iy) +
    (1−λ)·Σ_{j≠y} softplus(z_ij)], z = r·φ + b with a learnable bias b. ``alpha`` is the paper's λ."""

    alpha: float = 0.7
    loss_weight: float = 10.0

    needs_bias: ClassVar[bool] = True

    def check(self, head: MarginHead) -> None:
        if not 0.0 < float(self.alpha) < 1.0:
            raise InvalidOptionError(f"invalid alpha={self.alpha!r}: must be in (0, 1)")

    def initial_bias(self, head: MarginHead) -> float:
        return head.margin.initial_bias(head.num_classes, head.s, self.alpha)

    def loss(self, head: MarginHead, logits: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor,
             norms: torch.Tensor, step: int) -> HeadOutput:
        z = logits.add_(head.bias.to(logits.dtype))
        total = binary_objective(z, labels, self.alpha)
        return HeadOutput(self.loss_weight / head.s * total / z.shape[0], None, {"bias": head.bias.detach()})
