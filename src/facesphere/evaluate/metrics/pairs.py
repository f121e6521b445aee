"""1:1 verification metrics of scored pairs, in pure numpy: LFW-style k-fold accuracy (three threshold definitions),
ROC, AUC, EER, TAR@FAR (two definitions), best-threshold accuracy and insightface's VAL@FAR.

Reproduces (docs/methods.md §8.2): SphereFace ``evaluation.m`` (``method="sphereface"``), insightface
``verification.py`` (``method="insightface"``, :func:`val_at_far`), opensphere (:func:`best_threshold_accuracy`,
:func:`eer`, :func:`auc`, :func:`tar_at_far` with ``method="interpolate"``) and the insightface / arcface_torch IJB
evaluation (:func:`tar_at_far` with ``method="nearest"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import InvalidOptionError
from .checks import (
    as_float_array,
    as_labels,
    check_int,
    check_rate,
    need_both_classes,
    scores_labels,
)

KFOLD_METHODS = ("exact", "insightface", "sphereface")

# Reference B grids (insightface verification.py): accuracy on np.arange(0, 4, 0.01), VAL@FAR on
# np.arange(0, 4, 0.001), both in squared-distance space.  Built with the same expressions so the grid
# values are bit-identical to the reference.
_INSIGHTFACE_ACC_GRID = np.arange(0, 4, 0.01)
_INSIGHTFACE_VAL_GRID = np.arange(0, 4, 0.001)
# Reference A grid (SphereFace evaluation.m): thresholds = (-thrNum:thrNum) / thrNum with thrNum = 10000.
_SPHEREFACE_GRID = np.arange(-10000, 10001) / 10000.0



# ----------------------------------------------------------------------------------------------------------------
# result types


@dataclass(frozen=True)
class KFoldResult:
    """Result of :func:`kfold_accuracy`.

    Attributes:
        mean: mean of the per-fold test accuracies.
        std: **population** standard deviation of the per-fold accuracies (``np.std``, ``ddof=0``), as
            both insightface and SphereFace report it.
        accuracies: per-fold accuracy on the held-out fold, shape ``(n_folds,)``.
        thresholds: per-fold threshold chosen on the training folds, in the method's own space (see
            :attr:`threshold_space`).
        method: ``"exact"``, ``"insightface"`` or ``"sphereface"``.
        train_accuracies: per-fold accuracy of the chosen threshold on the training folds, measured with
            the method's own decision rule.
    """

    mean: float
    std: float
    accuracies: np.ndarray
    thresholds: np.ndarray
    method: str
    train_accuracies: np.ndarray

    @property
    def threshold_space(self) -> str:
        """``"distance"`` (``d = 2 - 2·score``, same iff ``d < τ``) for insightface, else ``"score"``."""
        return "distance" if self.method == "insightface" else "score"


@dataclass(frozen=True)
class RocCurve:
    """An ROC curve (sklearn ``roc_curve`` semantics).

    ``thresholds`` are decreasing; ``thresholds[0] = +inf`` (the point (0, 0)); point ``i`` predicts
    "same" iff ``score >= thresholds[i]``.  ``fpr`` and ``tpr`` are non-decreasing and end at 1.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


@dataclass(frozen=True)
class ValResult:
    """Result of :func:`val_at_far` (insightface VAL@FAR, Reference B step 3).

    Attributes:
        val: mean over folds of the test-fold VAL (true-accept rate).
        val_std: population std (``np.std``) of the per-fold VAL.
        far: mean over folds of the test-fold FAR actually obtained.
        vals, fars: per-fold VAL and FAR on the held-out fold.
        thresholds: per-fold squared-distance threshold (same iff ``d < τ``).
        target_far: the requested FAR.
    """

    val: float
    val_std: float
    far: float
    vals: np.ndarray
    fars: np.ndarray
    thresholds: np.ndarray
    target_far: float



def _fold_assignment(n: int, n_folds: Any, folds: Any) -> tuple[np.ndarray, int]:
    """Fold id (0..k-1) of every pair, and k.

    ``folds=None``: contiguous blocks in input order with ``np.array_split`` sizes (the first ``n % k``
    blocks are one longer); for LFW's 6,000 pairs and k = 10 these are the 600-pair blocks of the
    protocol (and of insightface's ``KFold(10, shuffle=False)``).  Otherwise ``folds`` gives the fold id
    of every pair (any sortable ids); folds are numbered in sorted id order and ``n_folds`` is ignored.
    """
    if folds is None:
        k = check_int(n_folds, "n_folds", 2)
        if k > n:
            raise InvalidOptionError(f"n_folds={k} is larger than the number of pairs ({n})")
        base, extra = divmod(n, k)
        sizes = np.full(k, base, dtype=np.int64)
        sizes[:extra] += 1
        return np.repeat(np.arange(k), sizes), k
    arr = np.asarray(folds)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InvalidOptionError(f"folds must be 1-D with one fold id per pair ({n}), got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InvalidOptionError("folds contains NaN or infinite fold ids")
    try:
        uniq, inverse = np.unique(arr, return_inverse=True)
    except TypeError as exc:
        raise InvalidOptionError(f"fold ids must be sortable values ({exc})") from None
    if uniq.size < 2:
        raise InvalidOptionError(f"folds must contain at least 2 distinct fold ids, got {uniq.size}")
    return inverse.reshape(-1), int(uniq.size)


# ----------------------------------------------------------------------------------------------------------------
# threshold selection (one training split)


def _exact_threshold(s: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Exact optimal threshold for the rule "same iff score > τ" (sort-based, O(m log m)).

    Sort the training scores and group equal values (equal scores can never be split by a threshold).  A
    cut ``j`` (0..J for J distinct values) predicts "different" for the j smallest distinct values and
    "same" for the rest; its number of correct decisions is
    ``#neg among the j lowest groups + #pos among the others``.  Every threshold is equivalent to one cut,
    so the best cut is the true optimum of training accuracy.

    Tie-break: among all optimal cuts take the (lower) median one — always an optimal cut, and central in the
    optimal region like SphereFace's "mean of all τ attaining the max".  τ is the midpoint between the two
    distinct scores around the cut; for the cut below the minimum (all "same") τ = min − h and for the
    cut above the maximum (all "different") τ = max + h, with h = half the training score range (0.5 if all
    training scores are equal).
    """
    order = np.argsort(s)
    return _exact_threshold_sorted(s[order], y[order])


def _exact_threshold_sorted(ss: np.ndarray, yy: np.ndarray) -> tuple[float, float]:
    """:func:`_exact_threshold` on scores already sorted ascending (``yy``: their labels, same order); O(m)."""
    m = ss.size
    new = np.empty(m, dtype=bool)
    new[0] = True
    np.not_equal(ss[1:], ss[:-1], out=new[1:])
    cum_pos = np.empty(m + 1, dtype=np.int64)
    cum_pos[0] = 0
    np.cumsum(yy, out=cum_pos[1:])
    if new.all():  # no tied scores (the common case): every element is its own group
        values = ss
        below = np.arange(m + 1)
        pos_below = cum_pos
    else:
        starts = np.flatnonzero(new)
        values = ss[starts]
        below = np.append(np.append(0, starts[1:]), m)  # the j lowest groups hold below[j] scores
        pos_below = cum_pos[below]  # positives among them
    n_pos = int(cum_pos[-1])
    # correct(j) = negatives below the cut + positives above it = (below - pos_below) + (n_pos - pos_below)
    correct = below - 2 * pos_below + n_pos
    best = correct.max()
    optimal = np.flatnonzero(correct == best)
    j = int(optimal[(optimal.size - 1) // 2])
    n_values = values.size
    half = 0.5 * float(values[-1] - values[0]) if n_values > 1 else 0.5
    if j == 0:
        tau = float(values[0]) - half
        if not tau < values[0]:
            tau = float(np.nextafter(values[0], -np.inf))
    elif j == n_values:
        tau = float(values[-1]) + half
    else:
        lo, hi = float(values[j - 1]), float(values[j])
        tau = 0.5 * lo + 0.5 * hi
        if not lo <= tau < hi:  # adjacent floats: the midpoint may round up to hi
            tau = lo
    return tau, float(best) / m


def _tie_runs(ss: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Runs of equal values (length >= 2) in sorted ``ss``: ``(positions, run_starts, run_last)`` — every element
    of such runs (ascending), where each run starts within ``positions``, and each run's last position in ``ss``.
    None when all values differ (the common case with real-valued scores)."""
    same_as_next = ss[1:] == ss[:-1]
    if not same_as_next.any():
        return None
    in_run = np.zeros(ss.size, dtype=bool)
    in_run[:-1] |= same_as_next
    in_run[1:] |= same_as_next
    positions = np.flatnonzero(in_run)
    starts = np.flatnonzero(np.concatenate(([True], ss[positions[1:]] != ss[positions[:-1]])))
    last = positions[np.append(starts[1:], positions.size) - 1]
    return positions, starts, last


def _exact_work(n: int) -> dict[str, np.ndarray]:
    """Buffers for :func:`_exact_threshold_masked` over ``n`` sorted scores (int32 counts while they fit)."""
    int_t = np.int32 if n < 2**31 - 1 else np.int64
    return {"correct": np.empty(n, int_t), "cum_pos": np.empty(n, int_t), "flags": np.empty(n, bool),
            "valid": np.empty(n, bool)}


def _exact_threshold_masked(ss: np.ndarray, yy: np.ndarray, train: np.ndarray,
                            ties: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                            work: dict[str, np.ndarray] | None = None) -> tuple[float, float]:
    """:func:`_exact_threshold_sorted` for the training elements ``train`` (bool mask) of the sorted scores ``ss``
    (labels ``yy``), without copying them out: the same cuts, counts, tie-break and τ, in a few linear passes.

    A cut after position e (everything up to e "different") is correct on ``below(e) − 2·pos_below(e) + n_pos``
    training pairs, where ``below`` / ``pos_below`` are cumulative counts of training scores / training positives
    over the whole sorted array; they do not change across test elements, so the cut after a test element repeats
    the previous one and only cuts after training elements are kept. Within a run of equal scores (``ties``, from
    :func:`_tie_runs`) only the cut after the whole run is possible; it is kept if the run holds a training score.
    ``work``: buffers from :func:`_exact_work`, reused between folds.
    """
    work = work if work is not None else _exact_work(ss.size)
    correct, cum_pos, flags, valid = work["correct"], work["cum_pos"], work["flags"], work["valid"]
    np.cumsum(train, out=correct)
    m = int(correct[-1])
    if m == 0:
        raise InvalidOptionError("a training split is empty")
    np.logical_and(yy, train, out=flags)
    np.cumsum(flags, out=cum_pos)
    n_pos = int(cum_pos[-1])
    np.subtract(correct, cum_pos, out=correct)
    np.subtract(correct, cum_pos, out=correct)  # below − 2·pos_below; the constant n_pos is added at the end
    np.copyto(valid, train)
    if ties is not None:
        positions, starts, last = ties
        has_train = np.logical_or.reduceat(train[positions], starts)
        valid[positions] = False
        valid[last] = has_train
        correct[positions] = np.where(valid[positions], correct[positions], np.iinfo(correct.dtype).min)
    # cut 0 (everything "same") scores 0; a cut after a test element repeats an earlier count (or 0), so the
    # plain maximum (invalid within-run cuts masked above) is the maximum over the possible cuts
    best = max(0, int(correct.max()))
    np.equal(correct, best, out=flags)
    np.logical_and(flags, valid, out=flags)
    cuts = np.flatnonzero(flags)  # optimal cuts after a training score (or a run holding one)
    n_optimal = cuts.size + (1 if best == 0 else 0)
    pick = (n_optimal - 1) // 2
    first = int(np.argmax(train))
    last_train = ss.size - 1 - int(np.argmax(train[::-1]))
    lo_value, hi_value = float(ss[first]), float(ss[last_train])
    half = 0.5 * (hi_value - lo_value) if hi_value > lo_value else 0.5
    if best == 0 and pick == 0:  # cut 0: below the lowest training score
        tau = lo_value - half
        if not tau < lo_value:
            tau = float(np.nextafter(lo_value, -np.inf))
        return tau, float(n_pos) / m
    e = int(cuts[pick - (1 if best == 0 else 0)])
    if ss[e] == hi_value:  # after the highest training score
        return hi_value + half, float(best + n_pos) / m
    nxt = e + 1 + int(np.argmax(train[e + 1:]))  # the next training score (larger: e ends its run)
    lo, hi = float(ss[e]), float(ss[nxt])
    tau = 0.5 * lo + 0.5 * hi
    if not lo <= tau < hi:  # adjacent floats: the midpoint may round up to hi
        tau = lo
    return tau, float(best + n_pos) / m


def _insightface_threshold(s: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Reference B: d = 2 − 2·score, τ ∈ np.arange(0, 4, 0.01), same iff d < τ, first argmax."""
    d = 2.0 - 2.0 * s
    d_pos = np.sort(d[y])
    d_neg = np.sort(d[~y])
    tp = np.searchsorted(d_pos, _INSIGHTFACE_ACC_GRID, side="left")  # #pos with d < τ
    tn = d_neg.size - np.searchsorted(d_neg, _INSIGHTFACE_ACC_GRID, side="left")  # #neg with d >= τ
    correct = tp + tn
    i = int(np.argmax(correct))
    return float(_INSIGHTFACE_ACC_GRID[i]), float(correct[i]) / s.size


def _sphereface_correct(s: np.ndarray, y: np.ndarray, tau: float) -> int:
    return int(np.count_nonzero(s[y] > tau) + np.count_nonzero(s[~y] < tau))


def _sphereface_threshold(s: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Reference A: τ ∈ {−1, −0.9999, …, 1}; acc = #{pos > τ} + #{neg < τ}; τ* = mean of all argmax τ."""
    s_pos = np.sort(s[y])
    s_neg = np.sort(s[~y])
    correct = (s_pos.size - np.searchsorted(s_pos, _SPHEREFACE_GRID, side="right")) + np.searchsorted(
        s_neg, _SPHEREFACE_GRID, side="left"
    )
    tau = float(np.mean(_SPHEREFACE_GRID[correct == correct.max()]))
    return tau, _sphereface_correct(s, y, tau) / s.size


def _test_accuracy(method: str, s: np.ndarray, y: np.ndarray, tau: float) -> float:
    if method == "exact":
        return float(np.mean((s > tau) == y))
    if method == "insightface":
        return float(np.mean(((2.0 - 2.0 * s) < tau) == y))
    return _sphereface_correct(s, y, tau) / s.size


_SELECTORS = {
    "exact": _exact_threshold,
    "insightface": _insightface_threshold,
    "sphereface": _sphereface_threshold,
}


# ----------------------------------------------------------------------------------------------------------------
# LFW-style k-fold accuracy


def kfold_accuracy(
    scores: Any,
    issame: Any,
    n_folds: int = 10,
    *,
    method: str = "exact",
    folds: Any = None,
) -> KFoldResult:
    """LFW-style k-fold verification accuracy (docs/methods.md §8.2).

    For each fold f the threshold is chosen on the other folds and the accuracy is measured on fold f.
    Folds are contiguous blocks in input order with ``np.array_split`` sizes (LFW: 10 blocks of 600 pairs,
    identical to insightface's ``KFold(10, shuffle=False)``), or given explicitly as one fold id per pair in
    ``folds`` (then ``n_folds`` is ignored and folds are ordered by sorted id).

    ``scores`` is ``(n,)``, or ``(n_folds, n)`` with row f holding the scores to use for fold f (training
    *and* test pairs) — this reproduces Reference A step 1, where the mean feature of the training folds is
    subtracted before scoring, so every fold has its own scores.

    Methods (the threshold is reported in the method's own space):

    * ``"exact"`` (facesphere's own): predict "same" iff ``score > τ``; τ is the exact optimum of training
      accuracy (sort-based sweep over every distinct cut, ties never split); among several optimal cuts
      the median one is taken, τ is the midpoint between the neighbouring distinct training scores (see
      ``_exact_threshold``).  Its training accuracy is >= that of any threshold grid.
    * ``"insightface"`` — Reference B (insightface ``verification.py``): d = 2 − 2·score (squared distance of
      unit vectors); thresholds ``np.arange(0, 4, 0.01)``; same iff ``d < τ``; first argmax of training
      accuracy.  Thresholds are in distance space.
    * ``"sphereface"`` — Reference A (SphereFace ``evaluation.m``): thresholds −1:1e−4:1 (20,001 values);
      accuracy ``(#{pos: score > τ} + #{neg: score < τ}) / n`` (strict on both sides: a score equal to τ is
      an error for either class); τ* = mean of all grid τ attaining the max.  Thresholds are in score space.

    Ties: with all training scores equal, "exact" predicts the majority class of the training folds (and
    "same" on an exact 50/50 split), so the test accuracy is that class's fraction in the held-out fold.
    A fold (training or test) may hold a single class.

    Returns a :class:`KFoldResult`; ``std`` is the population std over folds (``np.std``).
    """
    if method not in _SELECTORS:
        raise InvalidOptionError(f"unknown method {method!r}; choose one of {', '.join(KFOLD_METHODS)}")
    s_raw = np.asarray(scores)
    lab = np.asarray(issame)
    if lab.ndim != 1:
        raise InvalidOptionError(f"issame must be 1-D, got shape {lab.shape}")
    n = lab.shape[0]
    if s_raw.ndim in (1, 2) and s_raw.shape[-1] != n:
        raise InvalidOptionError(f"scores and issame have different lengths ({s_raw.shape[-1]} vs {n})")
    s = as_float_array(scores, "scores", ndims=(1, 2))
    y = as_labels(issame, n)
    fold_of, k = _fold_assignment(n, n_folds, folds)
    if s.ndim == 2 and s.shape[0] != k:
        raise InvalidOptionError(f"2-D scores need one row per fold ({k}), got {s.shape[0]} rows")
    select = _SELECTORS[method]
    accuracies = np.empty(k)
    thresholds = np.empty(k)
    train_acc = np.empty(k)
    if folds is None:  # contiguous blocks: each held-out fold is a slice
        bounds = np.concatenate(([0], np.cumsum(np.bincount(fold_of, minlength=k))))
        test_index: list[Any] = [slice(int(bounds[f]), int(bounds[f + 1])) for f in range(k)]
    else:
        by_fold = np.argsort(fold_of, kind="stable")
        test_index = np.split(by_fold, np.cumsum(np.bincount(fold_of, minlength=k))[:-1])
    presorted = method == "exact" and s.ndim == 1
    if presorted:  # one O(n log n) sort; every training split is then a few linear passes over the sorted scores
        order = np.argsort(s)
        s_sorted, y_sorted = s[order], y[order]
        f_sorted = fold_of[order].astype(np.int8 if k < 128 else (np.int16 if k < 32768 else np.int64))
        ties = _tie_runs(s_sorted)
        work = _exact_work(n)
        train = np.empty(n, dtype=bool)
    for f in range(k):
        row = s[f] if s.ndim == 2 else s
        test = test_index[f]
        if presorted:
            np.not_equal(f_sorted, f, out=train)
            tau, train_acc[f] = _exact_threshold_masked(s_sorted, y_sorted, train, ties, work)
        else:
            train_mask = np.ones(n, dtype=bool)
            train_mask[test] = False
            tau, train_acc[f] = select(row[train_mask], y[train_mask])
        thresholds[f] = tau
        accuracies[f] = _test_accuracy(method, row[test], y[test], tau)
    return KFoldResult(
        mean=float(np.mean(accuracies)),
        std=float(np.std(accuracies)),
        accuracies=accuracies,
        thresholds=thresholds,
        method=method,
        train_accuracies=train_acc,
    )


# ----------------------------------------------------------------------------------------------------------------
# ROC family


def _roc_counts(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative false / true positives at every distinct score, scores decreasing (predict same iff >=)."""
    order = np.argsort(s, kind="mergesort")[::-1]
    ss = s[order]
    yy = y[order]
    last = np.append(np.flatnonzero(ss[1:] != ss[:-1]), ss.size - 1)
    tps = np.cumsum(yy, dtype=np.int64)[last]
    fps = 1 + last - tps
    return fps, tps, ss[last]


def roc(scores: Any, issame: Any, drop_intermediate: bool = False) -> RocCurve:
    """ROC curve with the semantics of ``sklearn.metrics.roc_curve`` (positives = ``issame`` True).

    One point per distinct score, thresholds decreasing, point i predicts "same" iff
    ``score >= thresholds[i]``; a first point (0, 0) with threshold ``+inf`` is prepended (sklearn >= 1.3;
    older sklearn used ``max + 1``).  ``drop_intermediate=True`` drops the points sklearn drops (a point
    whose false- and true-positive counts both have zero second difference, i.e. the middle of equal
    steps); sklearn's default is True, this function's default is False (the full curve).  Both classes
    must be present.
    """
    s, y = scores_labels(scores, issame)
    need_both_classes(y, "roc")
    fps, tps, thr = _roc_counts(s, y)
    if drop_intermediate and fps.size > 2:
        keep = np.concatenate(([True], (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0), [True]))
        fps, tps, thr = fps[keep], tps[keep], thr[keep]
    fps = np.concatenate(([0], fps))
    tps = np.concatenate(([0], tps))
    thr = np.concatenate(([np.inf], thr))
    return RocCurve(fpr=fps / fps[-1], tpr=tps / tps[-1], thresholds=thr)


def auc(fpr: Any, tpr: Any) -> float:
    """Area under a curve by the trapezoidal rule (``sklearn.metrics.auc``); ``fpr`` must be monotonic."""
    x = as_float_array(fpr, "fpr")
    yv = as_float_array(tpr, "tpr")
    if x.shape != yv.shape:
        raise InvalidOptionError(f"fpr and tpr have different lengths ({x.size} vs {yv.size})")
    if x.size < 2:
        raise InvalidOptionError(f"auc needs at least 2 points, got {x.size}")
    dx = np.diff(x)
    if np.all(dx >= 0):
        direction = 1.0
    elif np.all(dx <= 0):
        direction = -1.0
    else:
        raise InvalidOptionError("fpr must be monotonic (increasing or decreasing)")
    return direction * float(np.sum(dx * (yv[1:] + yv[:-1]) * 0.5))


def eer(scores: Any, issame: Any) -> float:
    """Equal error rate: the FPR (= FNR) where the piecewise-linear ROC crosses the line FPR = 1 − TPR.

    Matches Reference C (opensphere: ``brentq(lambda x: 1 - x - interp1d(fpr, tpr)(x), 0, 1)``): the crossing
    is found on the segment where ``fpr + tpr − 1`` changes sign, by linear interpolation; on a vertical
    segment the crossing's FPR is that segment's FPR.
    """
    c = roc(scores, issame)
    g = c.fpr + c.tpr - 1.0  # strictly increasing along the curve, from -1 to +1
    i = int(np.argmax(g >= 0.0))
    if g[i] == 0.0:
        return float(c.fpr[i])
    t = -g[i - 1] / (g[i] - g[i - 1])
    return float(c.fpr[i - 1] + t * (c.fpr[i] - c.fpr[i - 1]))


def tar_at_far(scores: Any, issame: Any, far: Any, *, method: str = "interpolate") -> Any:
    """True-accept rate (TPR) at a false-accept rate (FPR) ``far``; scalar in → float out, sequence → array.

    * ``"interpolate"`` — Reference C (opensphere ``interp1d(fpr, tpr)(far)``): linear interpolation along
      the ROC.  Where ``far`` equals an FPR shared by several ROC points (a vertical step) the **highest**
      TPR at that FPR is returned — what ``interp1d`` returns for float64 data, since it delegates to
      ``np.interp`` (so ``far=0`` gives the TPR reached before the first false accept).  The full and the
      ``drop_intermediate`` curve give identical values.
    * ``"nearest"`` — insightface / arcface_torch IJB evaluation: on the ``drop_intermediate=True`` ROC
      (sklearn's default), the TPR of the point whose FPR is nearest to ``far``; on equal distances the point
      latest on the curve wins (the reference flips the curve, "select largest tpr at same fpr", then takes
      the first minimum), i.e. the larger TPR.
    """
    if method not in ("interpolate", "nearest"):
        raise InvalidOptionError(f"unknown method {method!r}; choose 'interpolate' or 'nearest'")
    scalar = np.ndim(far) == 0
    targets = np.atleast_1d(np.asarray(far, dtype=object))
    if targets.ndim != 1 or targets.size == 0:
        raise InvalidOptionError(f"far must be a number or a non-empty sequence of numbers, got {far!r}")
    targets = np.array([check_rate(v, "far", allow_zero=True) for v in targets])
    c = roc(scores, issame, drop_intermediate=(method == "nearest"))
    fpr, tpr = c.fpr, c.tpr
    out = np.empty(targets.size)
    for n_t, f in enumerate(targets):
        if method == "nearest":
            dist = np.abs(fpr - f)
            out[n_t] = tpr[dist.size - 1 - int(np.argmin(dist[::-1]))]
            continue
        i = int(np.searchsorted(fpr, f, side="right")) - 1  # last point with fpr <= f (fpr[0] = 0 <= f)
        if fpr[i] == f:
            out[n_t] = tpr[i]
        else:  # fpr[i] < f < fpr[i + 1] (fpr[-1] = 1 >= f)
            x0, x1, y0, y1 = fpr[i], fpr[i + 1], tpr[i], tpr[i + 1]
            out[n_t] = y0 + (y1 - y0) * (f - x0) / (x1 - x0)
    return float(out[0]) if scalar else out


def best_threshold_accuracy(scores: Any, issame: Any) -> float:
    """Reference C (opensphere ``ACC``): no folds, the best accuracy over all ROC thresholds.

    ``max over ROC points of (TPR·n_pos + TNR·n_neg) / n`` with "same" iff ``score >= τ``, the +inf point
    (everything "different") included.  An optimistic, test-set-tuned number; dropping collinear ROC points
    (sklearn's default) cannot change the max, since accuracy is linear in (FPR, TPR).  A single class is
    allowed (the answer is then 1.0).
    """
    s, y = scores_labels(scores, issame)
    fps, tps, _ = _roc_counts(s, y)
    n_neg = s.size - int(y.sum())
    correct = np.concatenate(([n_neg], tps + (n_neg - fps)))
    return float(correct.max()) / s.size


# ----------------------------------------------------------------------------------------------------------------
# VAL@FAR (insightface)


def _slinear_legacy(x: np.ndarray, yv: np.ndarray, target: float) -> float:
    """``scipy.interpolate.interp1d(x, y, kind="slinear")(target)`` as scipy <= 1.8 evaluated it.

    ``x`` is non-decreasing with repeats (newer scipy refuses repeats).  The degree-1 spline is evaluated on
    the interval [x[i], x[i+1]] with i the *last* index with ``x[i] <= target`` (capped at len − 2), so a
    target equal to a repeated x takes the y of its last repeat.  Degenerate case (target equal to the
    last, repeated x): the y of the first index where x reaches target.
    """
    i = min(int(np.searchsorted(x, target, side="right")) - 1, x.size - 2)
    x0, x1 = x[i], x[i + 1]
    if x1 == x0:
        return float(yv[int(np.searchsorted(x, target, side="left"))])
    return float(yv[i] + (yv[i + 1] - yv[i]) * (target - x0) / (x1 - x0))


def val_at_far(
    scores: Any,
    issame: Any,
    far: float = 1e-3,
    n_folds: int = 10,
    *,
    folds: Any = None,
) -> ValResult:
    """insightface VAL@FAR (Reference B step 3, ``calculate_val``), k-fold.

    Squared distance ``d = 2 − 2·score``; thresholds ``np.arange(0, 4, 0.001)``; on the training folds
    ``FAR(τ) = #{neg: d < τ} / #neg``.  If ``max FAR >= far`` the threshold is the linear interpolation of
    (FAR → τ) at ``far`` (``interp1d(..., kind="slinear")`` as scipy <= 1.8 computed it with repeated FAR
    values: the last grid τ with FAR <= far and the next one); otherwise τ = 0.  On the held-out fold
    ``VAL = #{pos: d < τ} / #pos`` and ``FAR = #{neg: d < τ} / #neg``.  Folds as in :func:`kfold_accuracy`.
    Every training split needs negatives and every held-out fold both classes (insightface would divide by
    zero).
    """
    target = check_rate(far, "far", allow_zero=False)
    s, y = scores_labels(scores, issame)
    fold_of, k = _fold_assignment(s.size, n_folds, folds)
    d = 2.0 - 2.0 * s
    vals, fars, taus = np.empty(k), np.empty(k), np.empty(k)
    for f in range(k):
        test = fold_of == f
        d_neg_train = np.sort(d[~test & ~y])
        if d_neg_train.size == 0:
            raise InvalidOptionError(f"val_at_far: the training folds of fold {f} hold no negative pair")
        y_test = y[test]
        n_same = int(y_test.sum())
        if n_same == 0 or n_same == y_test.size:
            raise InvalidOptionError(f"val_at_far: held-out fold {f} needs both positive and negative pairs")
        far_train = np.searchsorted(d_neg_train, _INSIGHTFACE_VAL_GRID, side="left") / d_neg_train.size
        tau = _slinear_legacy(far_train, _INSIGHTFACE_VAL_GRID, target) if far_train.max() >= target else 0.0
        accept = d[test] < tau
        vals[f] = np.count_nonzero(accept & y_test) / n_same
        fars[f] = np.count_nonzero(accept & ~y_test) / (y_test.size - n_same)
        taus[f] = tau
    return ValResult(
        val=float(np.mean(vals)),
        val_std=float(np.std(vals)),
        far=float(np.mean(fars)),
        vals=vals,
        fars=fars,
        thresholds=taus,
        target_far=target,
    )
