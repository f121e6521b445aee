"""The HEADS registry: every method = a margin + an objective + its published defaults on the shared ``MarginHead``.

Defaults follow docs/methods.md §11. Where the sources disagree the choice is stated next to the entry. Option names
are unique across heads in meaning; a paper's or a toolbox's own name for an option, where it differs, is listed in
``aliases`` (e.g. SphereFace-R's soft-normalisation weight, which opensphere calls ``t``, is ``norm_penalty``, as
SphereFace2's ``t`` is its similarity exponent).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import UnknownNameError
from ..registry import Registry, check_options
from .base import MarginHead
from .margins import (
    ArcFaceMargin,
    CombinedMargin,
    CosFaceMargin,
    Margin,
    NoMargin,
    SphereFace2Margin,
    SphereFaceMargin,
    SphereFaceRMargin,
)
from .objectives import Objective, SFaceLoss, SoftmaxCE, SphereFace2Loss
from .output import HeadOutput


@dataclass(frozen=True)
class HeadSpec:
    """A registry entry.

    margin:    the :class:`Margin` dataclass; option names that are its fields go to it.
    options:   the options a user may set, with their published defaults.
    objective: the :class:`Objective` dataclass (default softmax cross-entropy); option names that are its fields go
               to it, the rest to ``MarginHead``.
    fixed:     settings of the method that are not options (normalisation the method is defined by, ...).
    rename:    option name -> ``MarginHead`` argument (SphereFace2 calls its scale ``r``; ``iteration``, the Caffe
               name of the forward counter of scheduled margins, is the head's ``step``).
    aliases:   another name users may know an option by -> its name here (accepted, e.g. in older run configs).
    resolve:   optional hook adjusting defaults that depend on other options (given the user's explicit options).
    """

    margin: type[Margin]
    options: dict[str, Any]
    objective: type[Objective] = SoftmaxCE
    fixed: dict[str, Any] = field(default_factory=dict)
    rename: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    resolve: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None
    summary: str = ""


def _sphereface_r_resolve(merged: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    # lw·CE/s for hard and soft normalisation, lw·CE without (docs/methods.md §4.3); the official NFN head uses lw = 1.
    merged["divide_by_s"] = merged["feature_norm"] != "none"
    if merged["feature_norm"] == "none" and "loss_weight" not in given:
        merged["loss_weight"] = 1.0
    return merged


_GRAPH = {"weight_norm": "graph", "gradient": "detached"}
_INPLACE = {"weight_norm": "inplace", "gradient": "detached"}

HEADS: Registry[HeadSpec] = Registry(
    "head",
    {
        "softmax": HeadSpec(
            NoMargin, {}, fixed={"weight_norm": "none", "feature_norm": "none", "init": "xavier"},
            summary="plain linear layer + softmax cross-entropy (no normalisation)",
        ),
        # NormFace's s is learnt or set per dataset in its paper; 64 matches the margin heads it is compared with.
        "normface": HeadSpec(
            NoMargin, {"s": 64.0, "weight_norm": "graph"}, fixed={"feature_norm": "hard"},
            summary="normalised softmax s·cos θ (NormFace)",
        ),
        # CosFace paper m = 0.35 (arcface_torch uses 0.4).
        "cosface": HeadSpec(CosFaceMargin, {"s": 64.0, "m": 0.35, **_GRAPH}, summary="s·(cos θ_y − m)"),
        "arcface": HeadSpec(
            ArcFaceMargin, {"s": 64.0, "m": 0.5, "variant": "clamped", **_GRAPH},
            summary="s·cos(θ_y + m); variants clamped (default) / plain / fallback / easy; gradient detached or true",
        ),
        "combined": HeadSpec(
            CombinedMargin, {"s": 64.0, "m1": 1.0, "m2": 0.3, "m3": 0.2, **_GRAPH},
            summary="s·(cos(m1·θ_y + m2) − m3), all three margins honoured",
        ),
        "subcenter_arcface": HeadSpec(
            ArcFaceMargin, {"s": 64.0, "m": 0.5, "variant": "clamped", "subcenters": 3, **_GRAPH},
            summary="ArcFace over K max-pooled sub-centres per class",
        ),
        # The 2017 recipe: no feature normalisation, integer m = 4, λ annealing, true gradient, in-place WN.
        # ``s`` is only used with feature_norm="hard" (opensphere's HFN SphereFace uses s = 30, m = 1.5 and no λ:
        # lambda_base=0, lambda_min=0).
        "sphereface": HeadSpec(
            SphereFaceMargin,
            {
                "m": 4.0, "s": 30.0, "feature_norm": "none", "weight_norm": "inplace", "gradient": "true",
                "lambda_base": 1000.0, "lambda_gamma": 0.12, "lambda_power": 1.0, "lambda_min": 5.0,
                "iteration": 0,
            },
            fixed={"init": "xavier"},
            rename={"iteration": "step"},
            summary="A-Softmax with the original λ-annealed target and true gradient",
        ),
        # Published configuration (HFN, v2, s 60, m 1.4, lw 50), CGD, in-place WN.
        "sphereface_r": HeadSpec(
            SphereFaceRMargin,
            {
                "margin": "v2", "m": 1.4, "s": 60.0, "feature_norm": "hard", "loss_weight": 50.0,
                "norm_penalty": 0.01, "dm": 0.1, "margin_steps": (), "iteration": 0, **_INPLACE,
            },
            fixed={"init": "xavier"},
            rename={"iteration": "step"},
            aliases={"t": "norm_penalty"},  # opensphere's SphereFaceR_S name (the paper's λ for soft FN)
            resolve=_sphereface_r_resolve,
            summary="SphereFace-R: margin v0/v1/v2, feature norm none/hard/soft, CGD, loss weight, margin schedule",
        ),
        # VGGFace2 configuration of the official toolbox: C-type, λ 0.7, r 40, m 0.4, t 3, lw 10.
        "sphereface2": HeadSpec(
            SphereFace2Margin,
            {"margin": "C", "r": 40.0, "m": 0.4, "t": 3.0, "alpha": 0.7, "loss_weight": 10.0, "weight_norm": "inplace"},
            objective=SphereFace2Loss,
            fixed={"feature_norm": "hard", "gradient": "detached", "init": "xavier"},
            rename={"r": "s"},
            summary="one-vs-all binary objective with similarity adjustment and a learnable bias",
        ),
        # SphereFace (v0, HFN, CGD, s 30, m 1.5) + MHE; λ_MHE = 0.1 as in the VGGFace2 config.
        "sphereface_plus": HeadSpec(
            SphereFaceMargin,
            {"s": 30.0, "m": 1.5, "mhe_weight": 0.1, **_INPLACE},
            fixed={"feature_norm": "hard", "init": "xavier", "lambda_base": 0.0, "lambda_min": 0.0},
            summary="SphereFace + mini-batch minimum hyperspherical energy on the class centres",
        ),
        "sface": HeadSpec(
            NoMargin, {"s": 64.0, "k": 80.0, "a": 0.8, "b": 1.23, "weight_norm": "graph"},
            objective=SFaceLoss,
            fixed={"feature_norm": "hard", "init": "sface"},
            summary="sigmoid-constrained intra / inter objective with detached weights (no softmax)",
        ),
    },
)


def list_heads() -> list[str]:
    """Sorted names of every registered head."""
    return HEADS.names()


def head_options(name: str) -> dict[str, Any]:
    """The options ``name`` accepts, with their published defaults."""
    return dict(HEADS[name].options)


def resolve_aliases(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with every alias of head ``name`` replaced by the option's own name (both given: an error)."""
    aliases = HEADS[name].aliases
    out = dict(options)
    for alias, target in aliases.items():
        if alias in out:
            if target in out:
                raise UnknownNameError(f"head {name!r}: {alias!r} is another name for {target!r}; give one of them")
            out[target] = out.pop(alias)
    return out


def _merged(name: str, options: dict[str, Any]) -> dict[str, Any]:
    spec = HEADS[name]
    options = resolve_aliases(name, options)
    check_options("head", name, options, spec.options)
    merged: dict[str, Any] = {**spec.fixed, **spec.options, **options}
    return spec.resolve(merged, options) if spec.resolve is not None else merged


def resolved_options(name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every option of head ``name`` with the value a head built with ``options`` uses (published defaults and the
    defaults that depend on other options filled in): what a run's config records, so that it rebuilds the same
    head even after a default changes."""
    merged = _merged(name, dict(options or {}))
    return {key: merged[key] for key in HEADS[name].options}


def build_head(name: str, embed_dim: int = 512, num_classes: int = 1000, **options: Any) -> MarginHead:
    """Build head ``name`` with its published defaults overridden by ``options``.

    >>> head = build_head("arcface", embed_dim=512, num_classes=10, s=64.0, m=0.5)

    Unknown names or options raise :class:`facesphere.UnknownNameError` listing the valid ones.
    """
    spec = HEADS[name]
    merged = _merged(name, options)
    margin_fields = {f.name for f in dataclasses.fields(spec.margin)}
    objective_fields = {f.name for f in dataclasses.fields(spec.objective)}
    margin_kwargs = {k: v for k, v in merged.items() if k in margin_fields}
    objective_kwargs = {k: v for k, v in merged.items() if k in objective_fields}
    head_kwargs = {spec.rename.get(k, k): v for k, v in merged.items()
                   if k not in margin_fields and k not in objective_fields}
    return MarginHead(embed_dim, num_classes, spec.margin(**margin_kwargs), objective=spec.objective(**objective_kwargs),
                      **head_kwargs)


__all__ = ["HEADS", "HeadSpec", "HeadOutput", "MarginHead", "Margin", "Objective", "build_head", "list_heads",
           "head_options", "resolve_aliases", "resolved_options"]
