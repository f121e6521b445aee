"""The one shared head: class centres, weight / feature normalisation, cosines, detachment (docs/methods.md §10).

Every method is this module plus a margin from :mod:`facesphere.heads.margins`, an objective from
:mod:`facesphere.heads.objectives` and its published defaults (the ``HEADS`` registry in :mod:`facesphere.heads`).
Steps of a forward pass:

1. weights: ``graph`` normalisation (Ŵ = W/‖W‖ in the autograd graph), ``inplace`` projection (W ← W/‖W‖ under
   no-grad at the start of every forward, then used as is: docs/methods.md §1.2) or ``none`` (plain softmax);
2. logits ``S·c = (S·x̂) @ Ŵᵀ`` in fp32 (fp64 if the embeddings are fp64), the scale folded into the (B, D)
   embedding: S = s (hard feature normalisation) or ‖x‖ (none / soft); K sub-centres are max-pooled;
3. margin on the target column only (B values), and on the full (B, C) matrix only for methods whose η ≠ cos;
   with ``gradient="detached"`` the margin enters as a constant delta, ``z = S·(c + sg(φ − c))`` (CGD, §1.4),
   with ``gradient="true"`` through autograd (objectives that use no margin skip this step);
4. the objective: softmax cross-entropy (× loss weight, / s, + penalties) or the non-softmax SFace / SphereFace2
   objectives (:mod:`facesphere.heads.objectives`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidOptionError
from .functional import normalized_linear
from .margins import Margin
from .objectives import Objective, SoftmaxCE
from .output import HeadOutput

WEIGHT_NORMS = ("graph", "inplace", "none")
FEATURE_NORMS = ("hard", "none", "soft")
GRADIENTS = ("detached", "true")
INITS = ("normal", "xavier", "sface")


def _check(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise InvalidOptionError(f"invalid {name}={value!r}; valid values: {', '.join(valid)}")


class MarginHead(nn.Module):
    """A classification head on the hypersphere with a pluggable margin.

    Args:
        embed_dim: D, the embedding size.
        num_classes: C.
        margin: a :class:`~facesphere.heads.margins.Margin` (``target`` / ``nontarget`` functions of the cosines).
        objective: an :class:`~facesphere.heads.objectives.Objective` (default: plain softmax cross-entropy); every
            method-specific weight or penalty is one of its options.
        s: the hard-normalisation scale (also the ``/s`` of SphereFace-R and the SFN target norm).
        feature_norm: ``hard`` (x̂·s), ``none`` (‖x‖ scales the logits) or ``soft`` (‖x‖, plus the objective's norm
            penalty).
        weight_norm: ``graph``, ``inplace`` or ``none`` (see module docstring).
        gradient: ``detached`` (CGD) or ``true``.
        subcenters: K sub-centres per class (weight rows j·K + k), max-pooled.
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
        margin: Margin,
        *,
        objective: Objective | None = None,
        s: float = 64.0,
        feature_norm: str = "hard",
        weight_norm: str = "graph",
        gradient: str = "detached",
        subcenters: int = 1,
        init: str = "normal",
        step: int = 0,
    ) -> None:
        super().__init__()
        _check("feature_norm", feature_norm, FEATURE_NORMS)
        _check("weight_norm", weight_norm, WEIGHT_NORMS)
        _check("gradient", gradient, GRADIENTS)
        _check("init", init, INITS)
        if not isinstance(margin, Margin):
            raise InvalidOptionError(f"margin must be a facesphere.heads.margins.Margin, got {type(margin).__name__}")
        objective = SoftmaxCE() if objective is None else objective
        if not isinstance(objective, Objective):
            raise InvalidOptionError(
                f"objective must be a facesphere.heads.objectives.Objective, got {type(objective).__name__}")
        for name, value in (("embed_dim", embed_dim), ("num_classes", num_classes), ("subcenters", subcenters)):
            if not isinstance(value, int) or value < 1:
                raise InvalidOptionError(f"invalid {name}={value!r}: must be a positive integer")
        if not (isinstance(s, (int, float)) and 0 < s < float("inf")):
            raise InvalidOptionError(f"invalid s={s!r}: must be a finite positive number")
        self.embed_dim, self.num_classes, self.subcenters = embed_dim, num_classes, subcenters
        self.margin, self.objective = margin, objective
        self.s, self.feature_norm, self.weight_norm = float(s), feature_norm, weight_norm
        self.gradient = gradient
        objective.check(self)
        self.weight = nn.Parameter(torch.empty(num_classes * subcenters, embed_dim))
        self.register_buffer("step", torch.tensor(int(step), dtype=torch.long))
        if objective.needs_bias:
            self.bias = nn.Parameter(torch.tensor(objective.initial_bias(self)))
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
            f"margin={self.margin}, objective={self.objective}, s={self.s}, feature_norm={self.feature_norm}, "
            f"weight_norm={self.weight_norm}, gradient={self.gradient}"
        )

    # ------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _project_weight_(self) -> None:
        """WN-inplace: W ← W/‖W‖ row-wise in the parameter itself (docs/methods.md §1.2)."""
        self.weight.div_(self.weight.norm(dim=1, keepdim=True).clamp_min_(1e-12))

    def current_step(self) -> int:
        """The counter value the scheduled margins use (≥ 1); 1 for unscheduled margins, read without a device sync."""
        return max(int(self.step), 1) if self.margin.scheduled else 1

    def _advance_step(self) -> int:
        """Count a training forward (the Caffe layer increments before use) and return the step to apply."""
        if self.training:
            self.step += 1
        return self.current_step()

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
            return self.objective.loss(self, logits, labels, torch.arange(len(labels), device=logits.device),
                                       x.norm(dim=1, keepdim=True), step)
        logits, scale, norms = self._scaled_cosines(embeddings)
        rows = torch.arange(logits.shape[0], device=logits.device)
        if self.objective.uses_margin:
            logits = self._apply_margin(logits, labels, rows, scale, step)
        return self.objective.loss(self, logits, labels, rows, norms, step)

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
        if not self.objective.softmax:
            raise InvalidOptionError(
                f"margin_logits needs a softmax head; this head's objective is {type(self.objective).__name__}")
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
