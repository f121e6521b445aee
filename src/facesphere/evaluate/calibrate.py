"""Calibrating a decision threshold on the pairs a model validated on, when the FAR asked for is not recorded.

    from facesphere.evaluate.calibrate import decision_threshold
    info = decision_threshold("runs/my_run", embedder, far=1e-3)     # re-scores the run's validation set
    print(info.describe())

A run records its accuracy-optimal validation threshold but not the per-pair scores a FAR needs
(:mod:`facesphere.infer.thresholds`); here the run's (or a facesphere export's) first validation set is scored again
with the settings it was validated with (the synthetic set is regenerated from its seed), and the threshold at the
FAR is read off its impostor scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.pairs import open_pair_set
from ..errors import InvalidOptionError
from ..infer.thresholds import (
    ModelThreshold,
    choose_threshold,
    far_key,
    model_threshold,
    rates_at,
    threshold_at_far,
    validation_settings,
)
from .verification import FARS, verify_pairs

__all__ = ["calibrate_threshold", "decision_threshold"]


def calibrate_threshold(embedder: Any, source: Any, *, far: float | None = None, flip: str = "sum",
                        batch_size: int = 64, progress: Any = None) -> ModelThreshold:
    """Score the first validation set ``source`` records (:func:`~facesphere.infer.thresholds.validation_settings`)
    with ``embedder`` and return its accuracy-optimal threshold (with its FAR and TAR), or with ``far`` the threshold
    at that FAR; ``at_far`` holds the thresholds at :data:`~.verification.FARS` the set has impostors for."""
    settings = validation_settings(source)
    if not settings or not settings.get("val"):
        raise InvalidOptionError(f"{source}: no validation set is recorded with this model to calibrate a FAR on; "
                                 "pass --threshold (e.g. from facesphere eval on your own pairs)")
    spec = settings["val"][0]
    synthetic = dict(settings.get("synthetic") or {})
    pairs = open_pair_set(spec, image_size=embedder.input_size, **synthetic)
    metrics, scores = verify_pairs(embedder, pairs, batch_size=batch_size, flip=flip, progress=progress)
    issame = np.asarray(pairs.issame, dtype=bool)
    impostors = scores[~issame]
    at_far = {far_key(rate): threshold_at_far(impostors, rate) for rate in FARS if impostors.size * rate >= 1}
    where = f"validation set {pairs.name!r} of the model, re-scored ({issame.size:,} pairs)"
    optimal = float(metrics["threshold"])
    if far is None:
        rate, tar = rates_at(scores, issame, optimal)
        return ModelThreshold(value=optimal, rule="accuracy", source=f"calibrated on {spec}", measured_on=where,
                              far=rate, tar=tar, accuracy=float(metrics["accuracy"]), at_far=at_far)
    if impostors.size * float(far) < 1:
        raise InvalidOptionError(f"FAR {far_key(far)} needs at least {int(np.ceil(1 / float(far))):,} impostor "
                                 f"pairs; {spec} has {impostors.size:,}")
    value = threshold_at_far(impostors, float(far))
    _, tar = rates_at(scores, issame, value)
    return ModelThreshold(value=value, rule="far", source=f"calibrated on {spec}", measured_on=where, far=float(far),
                          tar=tar, at_far=at_far)


def decision_threshold(source: Any, embedder: Any, *, threshold: float | None = None, far: float | None = None,
                       flip: str = "sum", batch_size: int = 64, progress: Any = None) -> ModelThreshold:
    """The threshold to decide with: ``threshold`` when given; the one the model records at ``far``, else calibrated
    on the model's validation set (:func:`calibrate_threshold`); else the model's own
    (:func:`~facesphere.infer.thresholds.model_threshold`)."""
    carried = model_threshold(source)
    try:
        return choose_threshold(carried, threshold=threshold, far=far)
    except InvalidOptionError:
        if far is None or threshold is not None or not validation_settings(source):
            raise
    return calibrate_threshold(embedder, source, far=far, flip=flip, batch_size=batch_size, progress=progress)
