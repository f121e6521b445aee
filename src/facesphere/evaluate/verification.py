"""Pair verification (LFW-style 10-fold, ROC, TAR@FAR): a :class:`~facesphere.data.pairs.PairSet` -> embeddings ->
cosine scores -> :func:`pair_metrics`.

One summary for every pair set, whoever asks: the training loop's validation and ``facesphere eval`` both call
:func:`verify_pairs` and get the same JSON-ready dict (accuracy ± std under the chosen k-fold definition, thresholds,
best-threshold accuracy, AUC, EER, TAR at FAR 1e-1 … 1e-6 where there are enough impostor pairs, and the
definitions used).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..data.pairs import PairSet
from ..infer.embedders import embed_images
from . import metrics as M

#: FARs at which TAR is reported (where ``#impostor pairs × FAR >= 1``).
FARS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
TAR_METHODS = ("interpolate", "nearest")
#: TAR@FAR definition used when none is asked for: nearest ROC point for IJB (the published tables), else interpolated.
DEFAULT_TAR_METHOD = {"pairs": "interpolate", "ijb": "nearest"}

ACCURACY_DEFINITIONS = {
    "exact": "10-fold; per fold the exact optimal threshold on the other 9 folds (sort-based, same iff score > τ; "
             "facesphere); threshold in cosine space",
    "insightface": "10-fold; thresholds np.arange(0, 4, 0.01) on the squared distance 2 − 2·cos, same iff d < τ, "
                   "first argmax on the 9 training folds (insightface verification.py); threshold in distance space",
    "sphereface": "10-fold; thresholds −1:1e−4:1 on the cosine, correct iff pos > τ / neg < τ, τ = mean of all "
                  "optimal grid values (SphereFace evaluation.m); threshold in cosine space",
}
TAR_DEFINITIONS = {
    "interpolate": "TPR linearly interpolated on the ROC at the target FPR (opensphere interp1d)",
    "nearest": "TPR of the ROC point (sklearn roc_curve, drop_intermediate) whose FPR is nearest to the target, ties "
               "-> larger TPR (insightface / arcface_torch IJB evaluation)",
}

__all__ = ["FARS", "TAR_METHODS", "DEFAULT_TAR_METHOD", "ACCURACY_DEFINITIONS", "TAR_DEFINITIONS", "far_key",
           "pair_metrics", "pair_scores", "verify_pairs"]


def far_key(rate: float) -> str:
    """The JSON key of a FAR / FPIR: ``1e-04``."""
    return f"{rate:.0e}"


def pair_metrics(scores: np.ndarray, issame: np.ndarray, folds: np.ndarray | None = None, *,
                 accuracy_method: str | None = "exact", tar_method: str = "interpolate",
                 fars: Sequence[float] = FARS) -> dict[str, Any]:
    """Verification metrics of scored pairs (JSON-ready).

    ``accuracy_method`` one of ``exact`` / ``insightface`` / ``sphereface`` (10-fold; ``folds`` gives each pair's
    fold, else — or when it names a single fold — 10 contiguous blocks), or None for no k-fold accuracy (IJB).
    TAR@FAR is reported for every FAR with ``#impostors × FAR >= 1``, with both definitions
    (``tar_at_far_by_method``); ``tar_at_far`` is the one named by ``tar_method``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    n_pos = int(issame.sum())
    n_neg = int(issame.size - n_pos)
    out: dict[str, Any] = {"pairs": int(issame.size), "genuine_pairs": n_pos, "impostor_pairs": n_neg}
    definitions: dict[str, str] = {}
    if folds is not None and np.unique(folds).size < 2:  # e.g. a one-fold View-1 list: 10 contiguous blocks instead
        folds = None
        definitions["folds"] = "the set defines a single fold: 10 contiguous blocks of pairs in file order used"
    if accuracy_method is not None:
        kfold = M.kfold_accuracy(scores, issame, 10, method=accuracy_method, folds=folds)
        out.update({
            "accuracy": kfold.mean,
            "accuracy_std": kfold.std,
            "threshold": float(np.mean(kfold.thresholds)),
            "fold_thresholds": [float(t) for t in kfold.thresholds],
            "fold_accuracies": [float(a) for a in kfold.accuracies],
            "threshold_space": kfold.threshold_space,
            "accuracy_method": accuracy_method,
            "best_threshold_accuracy": M.best_threshold_accuracy(scores, issame),
        })
        definitions["accuracy"] = ACCURACY_DEFINITIONS[accuracy_method]
        definitions["accuracy_std"] = "population std (ddof=0) over the 10 folds"
        definitions["best_threshold_accuracy"] = "no folds, best accuracy over all ROC thresholds (opensphere ACC)"
    curve = M.roc(scores, issame)
    out["auc"] = M.auc(curve.fpr, curve.tpr)
    out["eer"] = M.eer(scores, issame)
    defined = [f for f in fars if n_neg * f >= 1]
    by_method: dict[str, dict[str, float]] = {}
    for method in TAR_METHODS:
        values = M.tar_at_far(scores, issame, defined, method=method) if defined else []
        by_method[method] = {far_key(f): float(v) for f, v in zip(defined, values)}
    out["tar_method"] = tar_method
    out["tar_at_far"] = by_method[tar_method]
    out["tar_at_far_by_method"] = by_method
    definitions["tar_at_far"] = TAR_DEFINITIONS[tar_method] + "; reported where #impostor pairs × FAR >= 1"
    definitions["auc"] = "trapezoidal area under the full ROC (sklearn auc)"
    definitions["eer"] = "FPR where the piecewise-linear ROC crosses FPR = 1 − TPR"
    out["definitions"] = definitions
    return out


def pair_scores(model: Any, pairs: PairSet, *, batch_size: int = 128, flip: str = "sum", progress: Any = None,
                device: str | torch.device = "cpu", mean: float = 127.5, std: float = 127.5,
                color: str = "rgb") -> np.ndarray:
    """Cosine scores float64 ``(N,)`` of a pair set's pairs: every unique image embedded once
    (:func:`~facesphere.infer.embedders.embed_images`, whose arguments these are)."""
    features = embed_images(model, pairs.load, pairs.num_images, batch_size=batch_size, flip=flip, progress=progress,
                            device=device, mean=mean, std=std, color=color)
    return np.einsum("ij,ij->i", features[pairs.idx1], features[pairs.idx2]).astype(np.float64)


def verify_pairs(model: Any, pairs: PairSet, *, accuracy_method: str = "exact", tar_method: str = "interpolate",
                 fars: Sequence[float] = FARS, **embed_options: Any) -> tuple[dict[str, Any], np.ndarray]:
    """Embed a pair set, score its pairs and summarise: ``(metrics, scores)``.

    ``metrics`` is :func:`pair_metrics`' dict with ``"protocol": "pairs"`` and the number of ``images``;
    ``embed_options`` go to :func:`pair_scores` (``batch_size``, ``flip``, ``progress``, and for an ``nn.Module``
    backbone ``device``, ``mean``, ``std``, ``color``).
    """
    scores = pair_scores(model, pairs, **embed_options)
    metrics = pair_metrics(scores, pairs.issame, pairs.folds, accuracy_method=accuracy_method, tar_method=tar_method,
                           fars=fars)
    return {"protocol": "pairs", "images": int(pairs.num_images), **metrics}, scores
