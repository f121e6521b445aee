"""The one shared head: class centres, weight / feature normalisation, cosines, detachment, loss (METHODS §10).

Every method is this module plus a margin from :mod:`facesphere.heads.margins` and its published defaults
(the ``HEADS`` registry in :mod:`facesphere.heads`). Steps of a forward pass:

1. weights: ``graph`` normalisation (Ŵ = W/‖W‖ in the autograd graph), ``inplace`` projection (W ← W/‖W‖ under
   no-grad at the start of every forward, then used as is: METHODS §1.2) or ``none`` (plain softmax);
2. logits ``S·c = (S·x̂) @ Ŵᵀ`` in fp32 (fp64 if the embeddings are fp64), the scale folded into the (B, D)
   embedding: S = s (hard feature normalisation) or ‖x‖ (none / soft); K sub-centres are max-pooled;
3. margin on the target column only (B values), and on the full (B, C) matrix only for methods whose η ≠ cos;
   with ``gradient="detached"`` the margin enters as a constant delta, ``z = S·(c + sg(φ − c))`` (CGD, §1.4),
   with ``gradient="true"`` through autograd;
4. the objective: softmax cross-entropy (× loss weight, / s, + penalties) or the non-softmax SFace / SphereFace2
   objectives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidOptionError
from .functional import binary_objective, normalized_linear

WEIGHT_NORMS = ("graph", "inplace", "none")
FEATURE_NORMS = ("hard", "none", "soft")
GRADIENTS = ("detached", "true")
OBJECTIVES = ("ce", "sface", "sphereface2")
INITS = ("normal", "xavier", "sface")


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


def _check(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise InvalidOptionError(f"invalid {name}={value!r}; valid values: {', '.join(valid)}")


class MarginHead(nn.Module):
    """A classification head on the hypersphere with a pluggable margin.

    Args:
        embed_dim: D, the embedding size.
        num_classes: C.
        margin: a margin object (``target`` / ``nontarget`` functions of the cosines, see ``margins``).
        s: the hard-normalisation scale (also the ``/s`` of SphereFace-R and the SFN target norm).
        feature_norm: ``hard`` (x̂·s), ``none`` (‖x‖ scales the logits) or ``soft`` (‖x‖, plus t·|‖x‖ − s|).
        weight_norm: ``graph``, ``inplace`` or ``none`` (see module docstring).
        gradient: ``detached`` (CGD) or ``true``.
        objective: ``ce``, ``sface`` or ``sphereface2``.
        subcenters: K sub-centres per class (weight rows j·K + k), max-pooled.
        loss_weight: multiplies the objective (SphereFace-R ``lw``, SphereFace2 ``lw``).
        divide_by_s: divide the CE by s (SphereFace-R with hard / soft normalisation).
        t: soft-normalisation penalty weight.
        alpha: SphereFace2's positive / negative balance λ.
        mhe_weight: weight of SphereFace+'s mini-batch hyperspherical energy on the class centres (0 = off).
        init: weight initialisation, ``normal`` (N(0, 0.01²), arcface_torch), ``xavier`` (xavier-normal,
            opensphere / Caffe), ``sface`` (N(0, (2·√(2/C))²), the SFace code).
        step: initial value of the training-forward counter used by scheduled margins (set it when resuming from a
            foreign checkpoint; facesphere checkpoints store it as a buffer).

    Shapes: ``forward(embeddings (B, D) any float dtype, labels (B,) int64) -> HeadOutput``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        margin: Any,
        *,
        s: float = 64.0,
        feature_norm: str = "hard",
        weight_norm: str = "graph",
        gradient: str = "detached",
        objective: str = "ce",
        subcenters: int = 1,
        loss_weight: float = 1.0,
        divide_by_s: bool = False,
        t: float = 0.0,
        alpha: float = 0.7,
        mhe_weight: float = 0.0,
        init: str = "normal",
        step: int = 0,
    ) -> None:
        super().__init__()
        _check("feature_norm", feature_norm, FEATURE_NORMS)
        _check("weight_norm", weight_norm, WEIGHT_NORMS)
        _check("gradient", gradient, GRADIENTS)
        _check("objective", objective, OBJECTIVES)
        _check("init", init, INITS)
        for name, value in (("embed_dim", embed_dim), ("num_classes", num_classes), ("subcenters", subcenters)):
            if not isinstance(value, int) or value < 1:
                raise InvalidOptionError(f"invalid {name}={value!r}: must be a positive integer")
        if not s > 0:
            raise InvalidOptionError(f"invalid s={s!r}: must be positive")
        if objective == "sface" and feature_norm != "hard":
            raise InvalidOptionError("the sface objective needs feature_norm='hard'")
        self.embed_dim, self.num_classes, self.subcenters = embed_dim, num_classes, subcenters
        self.margin = margin
        self.s, self.feature_norm, self.weight_norm = float(s), feature_norm, weight_norm
        self.gradient, self.objective = gradient, objective
        self.loss_weight, self.divide_by_s, self.t = float(loss_weight), bool(divide_by_s), float(t)
        self.alpha, self.mhe_weight = float(alpha), float(mhe_weight)
        self.weight = nn.Parameter(torch.empty(num_classes * subcenters, embed_dim))
        self.register_buffer("step", torch.tensor(int(step), dtype=torch.long))
        if objective == "sphereface2":
            self.bias = nn.Parameter(torch.tensor(margin.initial_bias(num_classes, self.s, self.alpha)))
        else:
            self.register_parameter("bias", None)
        self.init = init
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.init == "normal":
                self.weight.normal_(0.0, 0.01)
            elif self.init == "xavier":
                nn.init.xavier_normal_(self.weight)
            else:
                self.weight.normal_(0.0, 2.0 * math.sqrt(2.0 / self.num_classes))
            if self.weight_norm == "inplace":
                self._project_weight_()

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_classes={self.num_classes}, subcenters={self.subcenters}, "
            f"margin={self.margin}, s={self.s}, feature_norm={self.feature_norm}, weight_norm={self.weight_norm}, "
            f"gradient={self.gradient}, objective={self.objective}"
        )

    # ------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _project_weight_(self) -> None:
        """WN-inplace: W ← W/‖W‖ row-wise in the parameter itself (METHODS §1.2)."""
        self.weight.div_(self.weight.norm(dim=1, keepdim=True).clamp_min_(1e-12))

    def _scheduled(self) -> bool:
        return hasattr(self.margin, "lam") or hasattr(self.margin, "m_at")

    def _current_step(self) -> int:
        """The counter value the scheduled margins use (≥ 1); 1 for unscheduled margins, read without a device sync."""
        return max(int(self.step), 1) if self._scheduled() else 1

    def _advance_step(self) -> int:
        """Count a training forward (the Caffe layer increments before use) and return the step to apply."""
        if self.training:
            self.step += 1
        return self._current_step()

    def _class_logits(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, D) -> x @ Ŵᵀ (B, C·K) with the weight normalisation style of the head (all rows or ``weight``)."""
        if weight is None:
            if self.weight_norm == "inplace":
                self._project_weight_()
            weight = self.weight
        weight = weight if weight.dtype == x.dtype else weight.to(x.dtype)
        if self.weight_norm == "graph":
            return normalized_linear(x, weight)
        return x @ weight.t()

    def cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Class cosines (B, C) of unit embeddings and unit class centres (sub-centres max-pooled), no margin."""
        with torch.autocast(embeddings.device.type, enabled=False):
            dtype = torch.promote_types(embeddings.dtype, torch.float32)
            x = F.normalize(embeddings.to(dtype), dim=1)
            weight = self.weight.to(dtype)
            weight = weight if self.weight_norm == "inplace" else F.normalize(weight, dim=1)
            return self._pool(x @ weight.t())

    def _pool(self, logits: torch.Tensor) -> torch.Tensor:
        if self.subcenters == 1:
            return logits
        return logits.view(logits.shape[0], -1, self.subcenters).max(dim=2).values

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embed_dim:
            raise InvalidOptionError(f"embeddings must be (B, {self.embed_dim}), got {tuple(embeddings.shape)}")
        if labels.shape != embeddings.shape[:1]:
            raise InvalidOptionError(f"labels must be (B,) = ({embeddings.shape[0]},), got {tuple(labels.shape)}")
        step = self._advance_step()
        with torch.autocast(embeddings.device.type, enabled=False):
            return self._forward(embeddings, labels.long(), step)

    def _forward(self, embeddings: torch.Tensor, labels: torch.Tensor, step: int) -> HeadOutput:
        if self.weight_norm == "none":  # plain softmax: z = x·W
            x = embeddings.to(torch.promote_types(embeddings.dtype, torch.float32))
            logits = self._class_logits(x)
            return HeadOutput(self.loss_weight * F.cross_entropy(logits, labels), logits, {})
        logits, scale, norms = self._scaled_cosines(embeddings)
        rows = torch.arange(logits.shape[0], device=logits.device)
        if self.objective == "sface":
            return self._sface(logits, labels, rows)
        logits = self._apply_margin(logits, labels, rows, scale, step)
        if self.objective == "sphereface2":
            loss = self._sphereface2_loss(logits, labels, rows)
            return HeadOutput(loss, None, {"bias": self.bias.detach()})
        loss, extras = self.finish_ce_loss(F.cross_entropy(logits, labels), norms, labels, step)
        return HeadOutput(loss, logits, extras)

    def _scaled_cosines(self, embeddings: torch.Tensor, weight: torch.Tensor | None = None):
        """(S·c (B, C'), S (float or (B, 1) tensor), ‖x‖ (B, 1)) for all class centres or the given rows of them."""
        x = embeddings.to(torch.promote_types(embeddings.dtype, torch.float32))
        norms = x.norm(dim=1, keepdim=True)  # (B, 1), in graph
        hard = self.feature_norm == "hard"
        scale = self.s if hard else norms  # S: float or (B, 1) tensor in graph
        x_scaled = x * (self.s / norms.clamp_min(1e-12)) if hard else x
        return self._pool(self._class_logits(x_scaled, weight)), scale, norms

    def margin_logits(
        self, embeddings: torch.Tensor, labels: torch.Tensor, index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The margin logits S·φ (B, C') against all classes or the subset ``index`` (C',), for model-parallel heads.

        With ``index`` (sorted class ids, e.g. the classes Partial FC sampled) only those class centres take part
        and only they receive gradients; ``labels`` then index into the C' selected classes, with −1 for rows whose
        class is not among them (no margin is applied to such rows). Returns (logits, ‖x‖ (B, 1)). Only heads
        with a softmax objective can be used this way.
        """
        if self.objective != "ce":
            raise InvalidOptionError(f"margin_logits needs a softmax head; this head's objective is {self.objective!r}")
        step = self._advance_step()
        weight = None
        if index is not None:
            if self.weight_norm == "inplace":
                self._project_weight_()
            k = self.subcenters
            rows_of = index if k == 1 else (index.unsqueeze(1) * k + torch.arange(k, device=index.device)).reshape(-1)
            weight = self.weight[rows_of]
        with torch.autocast(embeddings.device.type, enabled=False):
            logits, scale, norms = self._scaled_cosines(embeddings, weight)
            valid = labels >= 0
            rows = torch.arange(logits.shape[0], device=logits.device)[valid]
            row_scale = scale if isinstance(scale, float) else scale[valid]
            if self.weight_norm != "none":
                logits = self._apply_margin(logits, labels[valid], rows, scale, step, row_scale=row_scale)
        return logits, norms

    def finish_ce_loss(
        self, ce: torch.Tensor, norms: torch.Tensor, labels: torch.Tensor, step: int | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """From the mean softmax cross-entropy to the method's loss: × loss weight, / s, + SFN penalty, + MHE."""
        extras: dict[str, torch.Tensor] = {}
        step = self._current_step() if step is None else step
        if hasattr(self.margin, "lam"):
            extras["lambda"] = torch.tensor(self.margin.lam(step), dtype=torch.float64)
        if hasattr(self.margin, "m_at"):
            extras["m"] = torch.tensor(self.margin.m_at(step), dtype=torch.float64)
        loss = ce / self.s if self.divide_by_s else ce
        loss = self.loss_weight * loss
        if self.feature_norm == "soft" and self.t > 0:
            penalty = self.t * (norms.squeeze(1) - self.s).abs().mean()
            loss = loss + penalty
            extras["norm_penalty"] = penalty.detach()
        if self.mhe_weight > 0:
            mhe = self.hyperspherical_energy(labels[labels >= 0])
            loss = loss + self.mhe_weight * mhe
            extras["mhe"] = mhe.detach()
        return loss, extras

    def _apply_margin(
        self, logits: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor, scale: Any, step: int,
        row_scale: Any = None,
    ) -> torch.Tensor:
        """Turn S·c into the margin logits S·φ at (rows, labels) (and the full matrix where η ≠ cos)."""
        margin = self.margin
        if row_scale is None:
            row_scale = scale if isinstance(scale, float) else scale.squeeze(1)  # float or (B,)
        elif not isinstance(row_scale, float):
            row_scale = row_scale.squeeze(1)
        target_logit = logits[rows, labels]  # (B,), in graph
        if self.gradient == "true":
            full = margin.nontarget(logits / scale, step)
            if full is not None:
                logits = full * scale
            target = margin.target(target_logit / row_scale, step)
            if target is not None or full is not None:
                if target is None:
                    target = target_logit / row_scale
                logits = logits.index_put((rows, labels), target * row_scale)
            return logits
        with torch.no_grad():
            cos_t = (target_logit / row_scale).clamp(-1.0, 1.0)
            target = margin.target(cos_t, step)
            target_delta = None if target is None else target - cos_t
            full = margin.nontarget(logits.detach() / scale, step, inplace=True)  # a scratch (B, C) copy
            if full is not None:
                if isinstance(scale, float):
                    full.sub_(logits.detach(), alpha=1.0 / scale)  # Δ = φ − c for every entry
                else:
                    full.sub_(logits.detach() / scale)
                full[rows, labels] = 0.0 if target_delta is None else target_delta
        if full is not None:
            if isinstance(scale, float):
                return logits.add_(full, alpha=scale)
            return logits.addcmul_(full, scale)
        if target_delta is not None:
            # in place on the matmul output (not saved by autograd): z_y = S·c_y + S·sg(φ_y − c_y)
            logits.index_put_((rows, labels), target_delta * row_scale, accumulate=True)
        return logits

    # ------------------------------------------------------------------------------------------------------------
    def _sface(self, logits: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor) -> HeadOutput:
        """SFace objective (METHODS §7.1): mean_i[−sg(w_intra)·s·c_iy + Σ_{j≠y} sg(w_inter)·s·c_ij]."""
        batch = logits.shape[0]
        weights_fn = self.margin
        with torch.no_grad():
            cos = logits.detach() / self.s
            cos_target = cos[rows, labels]
            cos_nontarget_mean = (cos.sum() - cos_target.sum()) / (batch * max(self.num_classes - 1, 1))
            weights = weights_fn.inter(cos, inplace=True)  # (B, C), overwrites the scratch cosines
            intra = weights_fn.intra(cos_target)
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

    def _sphereface2_loss(self, logits: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(lw/r)·(1/B)·Σ_i[λ·softplus(−z_iy) + (1−λ)·Σ_{j≠y} softplus(z_ij)], z = r·φ + b (METHODS §4.6)."""
        z = logits.add_(self.bias.to(logits.dtype))
        total = binary_objective(z, labels, self.alpha)
        return self.loss_weight / self.s * total / z.shape[0]

    def hyperspherical_energy(self, labels: torch.Tensor) -> torch.Tensor:
        """SphereFace+ mini-batch MHE: mean over pairs a<b of the classes in the batch of arccos(Ŵ_a·Ŵ_b)^−2.

        Zero when the batch holds fewer than two classes (the official code divides 0 by 0 there).
        """
        classes = torch.unique(labels)
        if classes.numel() < 2:
            return self.weight.new_zeros(())
        centres = F.normalize(self.weight[classes], dim=1)
        gram = (centres @ centres.t()).clamp(-1.0 + 1e-5, 1.0 - 1e-5)
        upper = torch.triu_indices(classes.numel(), classes.numel(), offset=1, device=labels.device)
        angles = torch.acos(gram[upper[0], upper[1]])
        return angles.pow(-2).mean()
