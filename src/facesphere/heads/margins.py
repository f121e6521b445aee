"""Margin functions: small pure functions of the cosines, one per method (docs/methods.md §2–§6).

Each margin is a frozen dataclass subclassing :class:`Margin`, whose fields are the method's options (published
defaults) and whose methods map cosines to the *forward values* the shared head feeds to its objective:

* ``target(cos, step) -> phi``: the characteristic function ψ applied to the target cosines, shape (B,); ``None``
  when ψ(θ) = cos θ.
* ``nontarget(cos, step, inplace=False) -> phi``: η applied to a full (B, C) cosine matrix; ``None`` when
  η(θ) = cos θ, so the head can leave every non-target logit untouched (the fast path). With ``inplace=True`` (used
  by the head on a scratch copy under no-grad) the function may overwrite ``cos`` and return it: no B x C temporaries.
* ``schedule(step) -> {name: value}``: the values of a scheduled margin at ``step`` (logged as diagnostics);
  ``scheduled`` says whether ``target`` / ``nontarget`` depend on the step at all.

The functions are written with ordinary differentiable torch ops. The head calls them under ``torch.no_grad()`` and
adds the result as a detached delta (characteristic gradient detachment, docs/methods.md §1.4) or, for
``gradient="true"``, with autograd enabled (true gradient). ``step`` is the head's training-forward counter (starting
at 1), used by the scheduled margins (SphereFace's λ annealing, SphereFace-R's m_t); the others ignore it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import InvalidOptionError

#: clamp used before arccos (opensphere): ``arccos(1 - 1e-5) = 0.0044721`` rad.
ACOS_EPS = 1e-5
#: upper clamp of a margin-augmented angle (opensphere uses 3.14159, just below π).
PI_CLAMP = 3.14159
#: the finer clamp of SFace's angles (the SFace code's 1e-7).
ACOS_EPS_FINE = 1e-7


def angle(cos: torch.Tensor, eps: float = ACOS_EPS) -> torch.Tensor:
    """θ = arccos(clamp(cos, −1+eps, 1−eps)); the clamp keeps arccos and its derivative finite."""
    return torch.acos(cos.clamp(-1.0 + eps, 1.0 - eps))


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise InvalidOptionError(f"invalid {name}={value!r}; valid values: {', '.join(valid)}")


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and value > 0):
        raise InvalidOptionError(f"invalid {name}={value!r}: must be a positive number")


# ----------------------------------------------------------------------------------------------------------------
# Shared piecewise / scheduled helpers


def chebyshev(cos: torch.Tensor, m: int) -> torch.Tensor:
    """T_m(cos) = cos(m·θ) for integer m, by the three-term recurrence (polynomial: exact gradients, no arccos)."""
    prev, cur = torch.ones_like(cos), cos
    if m == 0:
        return prev
    for _ in range(m - 1):
        prev, cur = cur, 2 * cos * cur - prev
    return cur


def sphereface_psi(cos: torch.Tensor, m: float) -> torch.Tensor:
    """SphereFace's monotone piecewise ψ(θ) = (−1)^k cos(mθ) − 2k, k = ⌊mθ/π⌋ (docs/methods.md §3.1, §1.6).

    Integer m uses the Chebyshev form with k = Σ_q 1[cos < cos(qπ/m)] (no arccos, exact polynomial gradient);
    non-integer m (opensphere's 1.5 / 1.7) uses the clamped angle. ψ is continuous at the segment boundaries, so the
    rounding of k there does not matter.
    """
    if float(m).is_integer():
        m_int = int(m)
        k = torch.zeros_like(cos)
        for q in range(1, m_int):
            k = k + (cos < math.cos(q * math.pi / m_int)).to(cos.dtype)
        sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
        return sign * chebyshev(cos, m_int) - 2.0 * k
    theta = angle(cos)
    m_theta = m * theta
    k = torch.floor(m_theta.detach() / math.pi)
    sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
    return sign * torch.cos(m_theta) - 2.0 * k


def sphereface_lambda(step: int, base: float, gamma: float, power: float, lambda_min: float) -> float:
    """λ_t = max(λ_min, base·(1 + γ·t)^(−power)) of the original Caffe layer (docs/methods.md §3.2); t starts at 1."""
    return max(lambda_min, base * (1.0 + gamma * step) ** (-power))


def scheduled_m(step: int, m: float, dm: float, margin_steps: tuple[int, ...]) -> float:
    """SphereFace-R's margin schedule m_t = 1 + dm·|{τ ∈ steps : τ < t}| (docs/methods.md §4.3); fixed ``m`` without steps."""
    if not margin_steps:
        return m
    return 1.0 + dm * sum(1 for tau in margin_steps if tau < step)


# ----------------------------------------------------------------------------------------------------------------
# Margins


class Margin:
    """The contract of a margin (see the module docstring); the base leaves every cosine as it is."""

    #: whether ``target`` / ``nontarget`` depend on the step (the head then reads its step counter)
    scheduled: ClassVar[bool] = False

    def target(self, cos: torch.Tensor, step: int = 1) -> torch.Tensor | None:
        return None

    def nontarget(self, cos: torch.Tensor, step: int = 1, inplace: bool = False) -> torch.Tensor | None:
        return None

    def schedule(self, step: int) -> dict[str, float]:
        return {}


@dataclass(frozen=True)
class NoMargin(Margin):
    """ψ = η = cos θ: plain and normalised softmax (NormFace, Wang et al., ACM MM 2017)."""


@dataclass(frozen=True)
class CosFaceMargin(Margin):
    """CosFace / LMCL (Wang et al., CVPR 2018): ψ = cos θ − m (docs/methods.md §5)."""

    m: float = 0.35

    def target(self, cos: torch.Tensor, step: int = 1) -> torch.Tensor:
        return cos - self.m


ARCFACE_VARIANTS = ("clamped", "plain", "fallback", "easy")


@dataclass(frozen=True)
class ArcFaceMargin(Margin):
    """ArcFace (Deng et al., CVPR 2019): ψ = cos(θ + m) in four variants (docs/methods.md §6.2).

    * ``clamped`` (default, opensphere): cos(min(θ + m, π)) — monotone, saturates at −1 for θ ≥ π − m.
    * ``plain`` (paper / MXNet / current arcface_torch forward): cos(θ + m) for all θ, non-monotone past π − m.
    * ``fallback`` (legacy insightface 2018–2022): cos(θ+m) if cos θ > −cos m, else cos θ − m·sin m.
    * ``easy`` (easy-margin option): cos(θ+m) if cos θ > 0, else cos θ.
    """

    m: float = 0.5
    variant: str = "clamped"

    def __post_init__(self) -> None:
        _choice("variant", self.variant, ARCFACE_VARIANTS)

    def target(self, cos: torch.Tensor, step: int = 1) -> torch.Tensor:
        m = self.m
        if self.variant == "fallback":
            c = cos.clamp(-1.0 + ACOS_EPS, 1.0 - ACOS_EPS)
            shifted = c * math.cos(m) - torch.sqrt(1.0 - c * c) * math.sin(m)
            return torch.where(cos > -math.cos(m), shifted, cos - m * math.sin(m))
        theta_m = angle(cos) + m
        if self.variant == "clamped":
            return torch.cos(theta_m.clamp(ACOS_EPS, PI_CLAMP))
        if self.variant == "easy":
            return torch.where(cos > 0, torch.cos(theta_m), cos)
        return torch.cos(theta_m)


@dataclass(frozen=True)
class CombinedMargin(Margin):
    """InsightFace's combined margin ψ = cos(m1·θ + m2) − m3 (ArcFace paper §3; docs/methods.md §6.3).

    All three margins are honoured (unlike arcface_torch's ``CombinedMarginLoss``); the angle m1·θ + m2 is clamped
    to [0, π] so ψ stays monotone (our documented choice; the MXNet code does not clamp).
    """

    m1: float = 1.0
    m2: float = 0.3
    m3: float = 0.2

    def target(self, cos: torch.Tensor, step: int = 1) -> torch.Tensor:
        t = (self.m1 * angle(cos) + self.m2).clamp(0.0, math.pi)
        return torch.cos(t) - self.m3


@dataclass(frozen=True)
class SphereFaceMargin(Margin):
    """SphereFace / A-Softmax (Liu et al., CVPR 2017): ψ = (−1)^k cos(mθ) − 2k with the λ-annealed mix (§3.2).

    The target value trained is ``cos θ + (ψ(θ) − cos θ)/(1 + λ_t)`` with
    ``λ_t = max(lambda_min, lambda_base·(1 + lambda_gamma·t)^(−lambda_power))`` (the Caffe layer's constants);
    ``lambda_base=0`` turns the annealing off (pure ψ, as opensphere's SphereFace).
    """

    m: float = 4.0
    lambda_base: float = 1000.0
    lambda_gamma: float = 0.12
    lambda_power: float = 1.0
    lambda_min: float = 5.0

    scheduled: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _positive("m", self.m)

    def schedule(self, step: int) -> dict[str, float]:
        return {"lambda": self.lam(step)}

    def lam(self, step: int) -> float:
        if self.lambda_base == 0 and self.lambda_min == 0:
            return 0.0
        return sphereface_lambda(step, self.lambda_base, self.lambda_gamma, self.lambda_power, self.lambda_min)

    def target(self, cos: torch.Tensor, step: int = 1) -> torch.Tensor:
        psi = sphereface_psi(cos, self.m)
        lam = self.lam(step)
        return psi if lam == 0 else cos + (psi - cos) / (1.0 + lam)


SPHEREFACE_R_MARGINS = ("v0", "v1", "v2")


@dataclass(frozen=True)
class SphereFaceRMargin(Margin):
    """SphereFace-R (Liu et al., "SphereFace Revived", TPAMI 2022): multiplicative margin v0 / v1 / v2 (§4.1).

    * ``v0``: target ψ = (−1)^k cos(mθ) − 2k (the original SphereFace margin, non-integer m allowed);
    * ``v1``: target cos(min(mθ, π)) (saturating; CGD supplies the gradient);
    * ``v2``: non-targets η = cos(θ/m), the target is left at cos θ (same decision boundary θ_j = mθ_y as v1).

    With ``margin_steps`` the margin follows the schedule m_t = 1 + dm·#{steps passed} (the official NFN / SFN
    heads); with none the fixed ``m`` is used.
    """

    margin: str = "v2"
    m: float = 1.4
    dm: float = 0.1
    margin_steps: tuple = ()

    def __post_init__(self) -> None:
        _choice("margin", self.margin, SPHEREFACE_R_MARGINS)
        _positive("m", self.m)
        object.__setattr__(self, "margin_steps", tuple(int(s) for s in self.margin_steps))

    @property
    def scheduled(self) -> bool:  # type: ignore[override]
        return bool(self.margin_steps)

    def schedule(self, step: int) -> dict[str, float]:
        return {"m": self.m_at(step)}

    def m_at(self, step: int) -> float:
        return scheduled_m(step, self.m, self.dm, self.margin_steps)

    def target(self, cos: torch.Tensor, step: int = 1) -> torch.Tensor | None:
        m = self.m_at(step)
        if self.margin == "v0":
            return sphereface_psi(cos, m)
        if self.margin == "v1":
            return torch.cos((m * angle(cos)).clamp(ACOS_EPS, PI_CLAMP))
        return None

    def nontarget(self, cos: torch.Tensor, step: int = 1, inplace: bool = False) -> torch.Tensor | None:
        if self.margin != "v2":
            return None
        if inplace:
            return cos.clamp_(-1.0 + ACOS_EPS, 1.0 - ACOS_EPS).acos_().mul_(1.0 / self.m_at(step)).cos_()
        return torch.cos(angle(cos) / self.m_at(step))


SPHEREFACE2_MARGINS = ("A", "C", "M")


@dataclass(frozen=True)
class SphereFace2Margin(Margin):
    """SphereFace2 (Wen et al., ICLR 2022) similarity adjustment g(c) = 2((c+1)/2)^t − 1 and margin types (§4.6).

    'C': target g(c) − m, non-target g(c) + m; 'A': target g(cos(min(θ+m, π))); 'M': target g(cos(min(mθ, π)));
    non-targets g(c) for A and M.
    """

    margin: str = "C"
    m: float = 0.4
    t: float = 3.0

    def __post_init__(self) -> None:
        _choice("margin", self.margin, SPHEREFACE2_MARGINS)

    def g(self, cos: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        if inplace:
            return cos.add_(1.0).mul_(0.5).clamp_min_(0.0).pow_(self.t).mul_(2.0).sub_(1.0)
        return 2.0 * ((cos + 1.0) / 2.0).clamp_min(0.0) ** self.t - 1.0

    def target(self, cos: torch.Tensor, step: int = 1) -> torch.Tensor:
        if self.margin == "C":
            return self.g(cos) - self.m
        if self.margin == "A":
            return self.g(torch.cos((angle(cos) + self.m).clamp(ACOS_EPS, PI_CLAMP)))
        return self.g(torch.cos((self.m * angle(cos)).clamp(ACOS_EPS, PI_CLAMP)))

    def nontarget(self, cos: torch.Tensor, step: int = 1, inplace: bool = False) -> torch.Tensor:
        shift = self.m if self.margin == "C" else 0.0
        if inplace:
            return self.g(cos, inplace=True).add_(shift)
        return self.g(cos) + shift

    def initial_bias(self, num_classes: int, scale: float, alpha: float) -> float:
        """Closed-form bias initialisation of the official code (docs/methods.md §4.6)."""
        z0 = alpha / ((1.0 - alpha) * (num_classes - 1))
        half = 2.0 * 0.5**self.t - 1.0
        if self.margin == "C":
            a_y, a_i = scale * (half - self.m), scale * (half + self.m)
        else:
            theta_star = min(math.pi, math.pi / 2 + self.m) if self.margin == "A" else min(math.pi, self.m * math.pi / 2)
            a_y = scale * (2.0 * ((math.cos(theta_star) + 1.0) / 2.0) ** self.t - 1.0)
            a_i = scale * half
        root = math.sqrt((1.0 - z0) ** 2 + 4.0 * z0 * math.exp(a_y - a_i))
        return math.log(2.0 * z0) - a_i - math.log(1.0 - z0 + root)
