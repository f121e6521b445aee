"""Face-verification and face-identification metrics, in pure numpy.

Every function documents which published evaluation protocol it reproduces (docs/methods.md §8):

* Reference A — SphereFace ``evaluation.m`` (LFW 10-fold accuracy, ``method="sphereface"``);
* Reference B — insightface ``verification.py`` (LFW-style 10-fold accuracy ``method="insightface"``, and
  :func:`val_at_far`);
* Reference C — opensphere (no folds: :func:`best_threshold_accuracy`, :func:`eer`, :func:`auc`,
  :func:`tar_at_far` with ``method="interpolate"``);
* insightface / arcface_torch IJB 1:1 evaluation (:func:`pool_templates`, :func:`verification_scores`,
  :func:`tar_at_far` with ``method="nearest"``);
* IJB 1:N identification (:func:`identification_metrics`): the NIST open-set definition and the
  insightface / opensphere "toolbox" definition.

Conventions used throughout:

* ``scores`` are similarities: **higher means more alike** (cosine of L2-normalised features).
* ``issame`` marks genuine (same-identity) pairs; it is the positive class of every ROC.
* Thresholds are reported in the space of the method that chose them: the score (cosine) space for
  ``"exact"`` and ``"sphereface"``, the squared-Euclidean-distance space ``d = 2 - 2·score`` for
  ``"insightface"`` and :func:`val_at_far`.

Errors a user can cause (mismatched lengths, empty inputs, non-binary labels, NaN scores, bad options) raise
:class:`facesphere.errors.InvalidOptionError`.  These modules import numpy only (no torch, no scipy, no sklearn).
"""

from __future__ import annotations

from .identification import (
    IdentificationResult,
    identification_from_summaries,
    identification_metrics,
    pool_templates,
    verification_scores,
)
from .pairs import (
    KFOLD_METHODS,
    KFoldResult,
    RocCurve,
    ValResult,
    auc,
    best_threshold_accuracy,
    eer,
    kfold_accuracy,
    roc,
    tar_at_far,
    val_at_far,
)

__all__ = [
    "KFoldResult",
    "RocCurve",
    "ValResult",
    "IdentificationResult",
    "KFOLD_METHODS",
    "kfold_accuracy",
    "best_threshold_accuracy",
    "roc",
    "auc",
    "eer",
    "tar_at_far",
    "val_at_far",
    "pool_templates",
    "verification_scores",
    "identification_metrics",
    "identification_from_summaries",
]
