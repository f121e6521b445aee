"""facesphere.metrics: docs/methods.md §8 test vectors, hand-computed cases and slow references written here."""

from __future__ import annotations

import ast
import math
import pathlib

import numpy as np
import pytest

from facesphere.errors import InvalidOptionError
from facesphere.evaluate import metrics as M
from facesphere.evaluate.metrics import (
    KFoldResult,
    auc,
    best_threshold_accuracy,
    eer,
    identification_metrics,
    kfold_accuracy,
    pool_templates,
    roc,
    tar_at_far,
    val_at_far,
    verification_scores,
)
from facesphere.evaluate.metrics.pairs import _exact_threshold

IF_GRID = np.arange(0, 4, 0.01)
SF_GRID = np.arange(-10000, 10001) / 10000.0


def lfw_like(n_pairs=600, n_folds=10, seed=0, quantise=None):
    """Blocks of equal size, each half positives; positives ~ N(0.45, 0.2), negatives ~ N(0.1, 0.2)."""
    rng = np.random.default_rng(seed)
    block = n_pairs // n_folds
    y = np.tile(np.r_[np.ones(block // 2, bool), np.zeros(block - block // 2, bool)], n_folds)
    s = np.where(y, rng.normal(0.45, 0.2, n_pairs), rng.normal(0.1, 0.2, n_pairs))
    s = np.clip(s, -0.999, 0.999)
    if quantise is not None:
        s = np.round(s / quantise) * quantise + quantise / 2
    return s, y


def fold_slices(n, k):
    return np.array_split(np.arange(n), k)


# ---------------------------------------------------------------- slow references written for the tests


def brute_best_train_acc(s, y):
    """max over every cut of the sorted scores of accuracy with 'same iff score > tau' (O(m^2))."""
    taus = np.r_[s.min() - 1.0, np.unique(s)]
    pred = s[None, :] > taus[:, None]
    return ((pred == y[None, :]).mean(axis=1)).max()


def if_grid_train_accs(s, y):
    d = 2.0 - 2.0 * s
    pred = d[None, :] < IF_GRID[:, None]
    return (pred == y[None, :]).mean(axis=1)


def sf_grid_train_accs(s, y):
    return ((s[y][None, :] > SF_GRID[:, None]).sum(1) + (s[~y][None, :] < SF_GRID[:, None]).sum(1)) / s.size


def naive_reference_b(s, y, k):
    accs, taus = [], []
    for test in fold_slices(s.size, k):
        train = np.setdiff1d(np.arange(s.size), test)
        acc_train = if_grid_train_accs(s[train], y[train])
        tau = IF_GRID[np.argmax(acc_train)]
        accs.append(np.mean(((2.0 - 2.0 * s[test]) < tau) == y[test]))
        taus.append(tau)
    return np.array(accs), np.array(taus)


def naive_reference_a(s, y, k):
    accs, taus = [], []
    for test in fold_slices(s.size, k):
        train = np.setdiff1d(np.arange(s.size), test)
        acc_train = sf_grid_train_accs(s[train], y[train])
        tau = np.mean(SF_GRID[acc_train == acc_train.max()])
        st, yt = s[test], y[test]
        accs.append((np.sum(st[yt] > tau) + np.sum(st[~yt] < tau)) / st.size)
        taus.append(tau)
    return np.array(accs), np.array(taus)


def slow_roc(s, y):
    thr = np.unique(s)[::-1]
    fpr = np.array([0.0] + [np.mean(s[~y] >= t) for t in thr])
    tpr = np.array([0.0] + [np.mean(s[y] >= t) for t in thr])
    return fpr, tpr, np.r_[np.inf, thr]


# ---------------------------------------------------------------- docs/methods.md §8.2 test vectors


def test_test_vector_perfect_separation_all_methods():
    y = np.tile([True, False], 10)
    s = np.where(y, 0.9, 0.1)
    for method in ("exact", "insightface", "sphereface"):
        r = kfold_accuracy(s, y, 10, method=method)
        assert isinstance(r, KFoldResult)
        assert r.mean == 1.0 and r.std == 0.0
        np.testing.assert_array_equal(r.accuracies, np.ones(10))
    assert np.all(kfold_accuracy(s, y, method="exact").thresholds == 0.5)
    # Reference A: tau* = mean of 0.1001 ... 0.8999 = 0.5
    np.testing.assert_allclose(kfold_accuracy(s, y, method="sphereface").thresholds, 0.5, atol=1e-12)


def test_test_vector_reference_b_distance_threshold():
    # docs/methods.md §8.2: d_pos = 0.2, d_neg = 1.8 -> tau* = 0.21, the first grid value above d_pos.  With score 0.9,
    # 2 - 2*0.9 rounds to 0.19999999999999996 < 0.2, so use an exactly representable score near it:
    # 115/128 -> d = 0.203125, whose first grid value above is 0.21 as well.
    y = np.tile([True, False], 10)
    s = np.where(y, 115 / 128, 13 / 128)
    r = kfold_accuracy(s, y, method="insightface")
    assert r.threshold_space == "distance"
    assert np.all(r.thresholds == IF_GRID[21]) and r.thresholds[0] == pytest.approx(0.21)
    assert r.mean == 1.0
    r09 = kfold_accuracy(np.where(y, 0.9, 0.1), y, method="insightface")
    assert np.all(r09.thresholds == IF_GRID[20])  # the fp rounding documented above
    assert r09.mean == 1.0


def test_reference_a_positive_exactly_at_tau_is_an_error():
    y = np.tile([True, False], 4)
    s = np.where(y, 0.9, 0.1)
    folds = np.repeat(np.arange(4), 2)
    tau = kfold_accuracy(s, y, method="sphereface", folds=folds).thresholds[3]
    s2 = s.copy()
    s2[6] = tau  # the positive of fold 3 sits exactly at the threshold chosen on folds 0-2
    r = kfold_accuracy(s2, y, method="sphereface", folds=folds)
    assert r.thresholds[3] == tau
    assert r.accuracies[3] == 0.5
    # a negative exactly at tau is an error as well (strict on both sides)
    s3 = s.copy()
    s3[7] = tau
    assert kfold_accuracy(s3, y, method="sphereface", folds=folds).accuracies[3] == 0.5
    # the exact method predicts same iff score > tau: a positive at tau is an error there too
    tau_e = kfold_accuracy(s, y, method="exact", folds=folds).thresholds[3]
    s4 = s.copy()
    s4[6] = tau_e
    assert kfold_accuracy(s4, y, method="exact", folds=folds).accuracies[3] == 0.5


# ---------------------------------------------------------------- ties, single-class folds, fold layout


def test_all_equal_scores_predict_majority():
    y = np.tile([True, False], 10)
    s = np.full(20, 0.3)
    for method in ("exact", "insightface", "sphereface"):
        r = kfold_accuracy(s, y, 10, method=method)
        np.testing.assert_array_equal(r.accuracies, np.full(10, 0.5))
    r = kfold_accuracy(s, y, 10, method="exact")
    assert np.all(r.thresholds < 0.3)  # exact 50/50 tie -> "same"
    # unbalanced: 3 positives per 4 pairs -> training majority "same" -> test accuracy = 0.75
    y2 = np.tile([True, True, True, False], 5)
    r2 = kfold_accuracy(np.full(20, 0.3), y2, 5, method="exact")
    np.testing.assert_allclose(r2.accuracies, 0.75)
    np.testing.assert_allclose(r2.train_accuracies, 0.75)
    # majority negative -> all "different"
    r3 = kfold_accuracy(np.full(20, 0.3), ~y2, 5, method="exact")
    np.testing.assert_allclose(r3.accuracies, 0.75)
    assert np.all(r3.thresholds > 0.3)


def test_ties_are_never_split():
    # two tied scores with different labels: no threshold can separate them
    s = np.array([0.5, 0.5, 0.9, 0.1])
    y = np.array([True, False, True, False])
    tau, acc = _exact_threshold(s, y)
    assert acc == 0.75
    assert brute_best_train_acc(s, y) == 0.75


def test_fold_with_one_class():
    s = np.array([0.8, 0.9, 0.1, 0.2])
    y = np.array([1, 1, 0, 0])
    r = kfold_accuracy(s, y, 2, method="exact")  # fold 0 = positives, fold 1 = negatives
    np.testing.assert_array_equal(r.accuracies, [1.0, 1.0])
    # fold 0: trained on negatives {0.1, 0.2} -> all "different", tau = 0.2 + 0.05
    # fold 1: trained on positives {0.8, 0.9} -> all "same", tau = 0.8 - 0.05
    np.testing.assert_allclose(r.thresholds, [0.25, 0.75])
    for method in ("insightface", "sphereface"):
        r = kfold_accuracy(s, y, 2, method=method)
        assert np.all((r.accuracies >= 0) & (r.accuracies <= 1))


def test_fold_layout_array_split_and_explicit_ids():
    s, y = lfw_like(600, 10, seed=3)
    a = kfold_accuracy(s, y, 10)
    ids = np.repeat(np.arange(10), 60)
    b = kfold_accuracy(s, y, folds=ids * 7 + 3)  # any sortable ids
    np.testing.assert_array_equal(a.accuracies, b.accuracies)
    np.testing.assert_array_equal(a.thresholds, b.thresholds)
    # uneven sizes follow np.array_split
    s5, y5 = lfw_like(605, 5, seed=3)
    c = kfold_accuracy(s5, y5, 10)
    split_ids = np.concatenate([np.full(len(ix), f) for f, ix in enumerate(fold_slices(605, 10))])
    d = kfold_accuracy(s5, y5, folds=split_ids)
    np.testing.assert_array_equal(c.accuracies, d.accuracies)
    assert a.std == pytest.approx(np.std(a.accuracies))  # population std


def test_per_fold_score_rows():
    s, y = lfw_like(200, 4, seed=5)
    rows = np.stack([s + 0.01 * f for f in range(4)])
    r = kfold_accuracy(rows, y, 4)
    for f, test in enumerate(fold_slices(200, 4)):
        single = kfold_accuracy(rows[f], y, 4)
        assert r.accuracies[f] == single.accuracies[f]
        assert r.thresholds[f] == single.thresholds[f]
    with pytest.raises(InvalidOptionError, match="one row per fold"):
        kfold_accuracy(rows[:3], y, 4)


# ---------------------------------------------------------------- exact vs grids, and the references


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_is_optimal_and_beats_every_grid(seed):
    s, y = lfw_like(300, 5, seed=seed)
    ex = kfold_accuracy(s, y, 5, method="exact")
    for f, test in enumerate(fold_slices(300, 5)):
        train = np.setdiff1d(np.arange(300), test)
        st, yt = s[train], y[train]
        assert ex.train_accuracies[f] == pytest.approx(brute_best_train_acc(st, yt), abs=1e-15)
        assert ex.train_accuracies[f] == np.mean((st > ex.thresholds[f]) == yt)
        assert ex.train_accuracies[f] >= if_grid_train_accs(st, yt).max()
        assert ex.train_accuracies[f] >= sf_grid_train_accs(st, yt).max()
        # agreement within grid resolution: the grid loses at most the training scores within one step of tau
        for step, grid_best in ((1e-4, sf_grid_train_accs(st, yt).max()), (0.005, if_grid_train_accs(st, yt).max())):
            near = np.count_nonzero(np.abs(st - ex.thresholds[f]) <= step) / st.size
            assert grid_best >= ex.train_accuracies[f] - near - 1e-12


@pytest.mark.parametrize("quantise", [None, 0.05])
def test_kfold_exact_sorts_once_and_matches_each_split(quantise):
    # kfold_accuracy sorts all scores once and filters per fold; each split must give what the per-split
    # selector (its own sort) gives, ties included
    s, y = lfw_like(500, 10, seed=9, quantise=quantise)
    r = kfold_accuracy(s, y, 10)
    for f, test in enumerate(fold_slices(500, 10)):
        train = np.setdiff1d(np.arange(500), test)
        tau, acc = _exact_threshold(s[train], y[train])
        assert r.thresholds[f] == tau and r.train_accuracies[f] == acc
        assert r.accuracies[f] == np.mean((s[test] > tau) == y[test])
    # interleaved fold ids, coarse ties, tiny folds (some with a single class or a single score value)
    rng = np.random.default_rng(10)
    for trial in range(30):
        n = int(rng.integers(4, 60))
        s = np.round(rng.normal(size=n), int(rng.integers(0, 2)))
        y = rng.random(n) < rng.random()
        folds = rng.integers(0, int(rng.integers(2, 6)), n)
        if np.unique(folds).size < 2:
            continue
        r = kfold_accuracy(s, y, folds=folds)
        for f, fid in enumerate(np.unique(folds)):
            tau, acc = _exact_threshold(s[folds != fid], y[folds != fid])
            assert r.thresholds[f] == tau and r.train_accuracies[f] == acc, (trial, f)


def test_all_equal_scores_roc_family():
    y = np.array([1, 0, 1, 0, 0], bool)
    s = np.full(5, 0.4)
    c = roc(s, y)
    np.testing.assert_array_equal(c.fpr, [0, 1])
    np.testing.assert_array_equal(c.tpr, [0, 1])
    assert auc(c.fpr, c.tpr) == 0.5
    assert eer(s, y) == pytest.approx(0.5)
    # interpolate: the diagonal; nearest: the (0, 0) or (1, 1) point, whichever FPR is nearer
    np.testing.assert_allclose(tar_at_far(s, y, [0.0, 0.1, 0.5, 1.0]), [0.0, 0.1, 0.5, 1.0], atol=1e-15)
    np.testing.assert_array_equal(tar_at_far(s, y, [0.1, 0.6], method="nearest"), [0.0, 1.0])
    assert best_threshold_accuracy(s, y) == 0.6  # all "different"


def test_exact_equals_grid_when_every_gap_holds_a_grid_point():
    # scores on a 0.01 lattice offset by 0.005: every gap between distinct scores holds several grid points
    s, y = lfw_like(600, 10, seed=7, quantise=0.01)
    ex = kfold_accuracy(s, y, 10, method="exact")
    for f, test in enumerate(fold_slices(600, 10)):
        train = np.setdiff1d(np.arange(600), test)
        assert ex.train_accuracies[f] == pytest.approx(sf_grid_train_accs(s[train], y[train]).max(), abs=1e-15)


@pytest.mark.parametrize("seed", [0, 4])
def test_grid_methods_match_naive_references(seed):
    s, y = lfw_like(400, 10, seed=seed)
    accs, taus = naive_reference_b(s, y, 10)
    r = kfold_accuracy(s, y, 10, method="insightface")
    np.testing.assert_array_equal(r.thresholds, taus)
    np.testing.assert_array_equal(r.accuracies, accs)
    accs, taus = naive_reference_a(s, y, 10)
    r = kfold_accuracy(s, y, 10, method="sphereface")
    np.testing.assert_allclose(r.thresholds, taus, atol=1e-12)
    np.testing.assert_array_equal(r.accuracies, accs)


def test_best_threshold_accuracy_reference_c():
    s, y = lfw_like(300, 5, seed=11)
    expected = brute_best_train_acc(s, y)  # same as the max over the ROC thresholds
    assert best_threshold_accuracy(s, y) == pytest.approx(expected, abs=1e-15)
    assert best_threshold_accuracy([0.9, 0.1], [1, 0]) == 1.0
    assert best_threshold_accuracy([0.5, 0.5], [1, 1]) == 1.0  # one class
    assert best_threshold_accuracy([0.5, 0.5, 0.5], [1, 0, 0]) == pytest.approx(2 / 3)


# ---------------------------------------------------------------- ROC family


def test_roc_against_slow_reference():
    rng = np.random.default_rng(0)
    s = np.round(rng.normal(size=200), 1)  # many ties
    y = rng.random(200) < 0.4
    c = roc(s, y)
    fpr, tpr, thr = slow_roc(s, y)
    np.testing.assert_allclose(c.fpr, fpr, atol=1e-15)
    np.testing.assert_allclose(c.tpr, tpr, atol=1e-15)
    np.testing.assert_array_equal(c.thresholds, thr)


@pytest.mark.parametrize("drop", [False, True])
@pytest.mark.parametrize("decimals", [1, 2, None])
def test_roc_against_sklearn(drop, decimals):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    s = rng.normal(size=500)
    if decimals is not None:
        s = np.round(s, decimals)
    y = rng.random(500) < 0.3
    ref_fpr, ref_tpr, ref_thr = sk.roc_curve(y, s, drop_intermediate=drop)
    c = roc(s, y, drop_intermediate=drop)
    np.testing.assert_array_equal(c.fpr, ref_fpr)
    np.testing.assert_array_equal(c.tpr, ref_tpr)
    assert c.thresholds[0] == np.inf
    if np.isinf(ref_thr[0]):  # sklearn >= 1.3
        np.testing.assert_array_equal(c.thresholds, ref_thr)
    else:
        np.testing.assert_array_equal(c.thresholds[1:], ref_thr[1:])
    assert auc(c.fpr, c.tpr) == pytest.approx(sk.auc(ref_fpr, ref_tpr), abs=1e-14)
    assert best_threshold_accuracy(s, y) == pytest.approx(
        max(ref_tpr * y.sum() + (1 - ref_fpr) * (~y).sum()) / y.size, abs=1e-14
    )


def test_auc_cases():
    y = np.array([1, 1, 0, 0])
    c = roc([0.9, 0.8, 0.2, 0.1], y)
    assert auc(c.fpr, c.tpr) == 1.0
    c = roc([0.1, 0.2, 0.8, 0.9], y)
    assert auc(c.fpr, c.tpr) == 0.0
    c = roc([0.5, 0.5, 0.5, 0.5], y)
    assert auc(c.fpr, c.tpr) == 0.5
    assert auc(c.fpr[::-1], c.tpr[::-1]) == 0.5  # decreasing x is allowed
    rng = np.random.default_rng(2)
    s = np.round(rng.normal(size=400), 1)
    yy = rng.random(400) < 0.5
    c = roc(s, yy)
    # AUC = P(score_pos > score_neg) + 0.5 P(tie)  (Mann-Whitney)
    diff = s[yy][:, None] - s[~yy][None, :]
    mw = np.mean(diff > 0) + 0.5 * np.mean(diff == 0)
    assert auc(c.fpr, c.tpr) == pytest.approx(mw, abs=1e-12)
    assert abs(mw - 0.5) < 0.1
    with pytest.raises(InvalidOptionError, match="monotonic"):
        auc([0, 1, 0.5], [0, 1, 1])


def test_eer_cases():
    # symmetric: positives {-0.1, 0.4, 0.6, 0.8}, negatives their mirror -> FPR = FNR = 0.25
    s = np.array([-0.1, 0.4, 0.6, 0.8, 0.1, -0.4, -0.6, -0.8])
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    assert eer(s, y) == pytest.approx(0.25, abs=1e-15)
    assert eer([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 0.0
    assert eer([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 1.0
    assert eer([0.5, 0.5], [1, 0]) == pytest.approx(0.5)  # diagonal ROC
    # against opensphere's brentq on interp1d on a continuous random case
    scipy_opt = pytest.importorskip("scipy.optimize")
    interp = pytest.importorskip("scipy.interpolate")
    rng = np.random.default_rng(3)
    s = rng.normal(size=300) + np.r_[np.ones(150), np.zeros(150)]
    y = np.r_[np.ones(150, bool), np.zeros(150, bool)]
    c = roc(s, y, drop_intermediate=True)
    f = interp.interp1d(c.fpr, c.tpr)
    ref = scipy_opt.brentq(lambda x: 1.0 - x - f(x), 0.0, 1.0)
    assert eer(s, y) == pytest.approx(ref, abs=1e-9)


# hand case with a tie: positives {0.9, 0.7, 0.5, 0.5}, negatives {0.8, 0.5, 0.3, 0.1}
# full ROC fpr = [0, 0, .25, .25, .5, .75, 1], tpr = [0, .25, .25, .5, 1, 1, 1];
# drop_intermediate removes the (.75, 1) point.
HAND_S = np.array([0.9, 0.7, 0.5, 0.5, 0.8, 0.5, 0.3, 0.1])
HAND_Y = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)


def test_hand_roc():
    c = roc(HAND_S, HAND_Y)
    np.testing.assert_array_equal(c.fpr, [0, 0, 0.25, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(c.tpr, [0, 0.25, 0.25, 0.5, 1, 1, 1])
    np.testing.assert_array_equal(c.thresholds, [np.inf, 0.9, 0.8, 0.7, 0.5, 0.3, 0.1])
    d = roc(HAND_S, HAND_Y, drop_intermediate=True)
    np.testing.assert_array_equal(d.fpr, [0, 0, 0.25, 0.25, 0.5, 1])
    np.testing.assert_array_equal(d.thresholds, [np.inf, 0.9, 0.8, 0.7, 0.5, 0.1])


def test_tar_at_far_interpolate_hand_case():
    got = tar_at_far(HAND_S, HAND_Y, [0.0, 0.1, 0.25, 0.375, 0.5, 1.0], method="interpolate")
    # 0 and 0.25 lie on vertical steps: the highest tpr there (interp1d -> np.interp); 0.375 is halfway up
    # the tie's diagonal
    np.testing.assert_allclose(got, [0.25, 0.25, 0.5, 0.75, 1.0, 1.0], atol=1e-15)
    assert isinstance(tar_at_far(HAND_S, HAND_Y, 0.375), float)
    interp = pytest.importorskip("scipy.interpolate")
    c = roc(HAND_S, HAND_Y, drop_intermediate=True)
    fars = [0.0, 0.1, 0.25, 0.375, 0.5, 0.9, 1.0]
    ref = interp.interp1d(c.fpr, c.tpr)(fars)
    np.testing.assert_allclose(tar_at_far(HAND_S, HAND_Y, fars), ref, atol=1e-15)
    # and on a random curve with ties, at FARs that hit ROC points exactly and between them
    rng = np.random.default_rng(6)
    s = np.round(rng.normal(size=400), 1) + np.r_[np.ones(100), np.zeros(300)]
    y = np.r_[np.ones(100, bool), np.zeros(300, bool)]
    c = roc(s, y, drop_intermediate=True)
    fars = np.r_[c.fpr, np.linspace(0, 1, 37), 1e-3, 1e-2]
    np.testing.assert_allclose(tar_at_far(s, y, fars), interp.interp1d(c.fpr, c.tpr)(fars), atol=1e-14)


def test_tar_at_far_nearest_hand_case():
    # dropped ROC fpr = [0, 0, .25, .25, .5, 1], tpr = [0, .25, .25, .5, 1, 1]
    got = tar_at_far(HAND_S, HAND_Y, [0.25, 0.3, 0.125, 0.7, 0.05], method="nearest")
    # 0.25: tie between two points at fpr .25 -> larger tpr .5;  0.125: equidistant from 0 and .25 -> later point
    np.testing.assert_array_equal(got, [0.5, 0.5, 0.5, 1.0, 0.25])


def _insightface_nearest(y, s, far):
    sk = pytest.importorskip("sklearn.metrics")
    fpr, tpr, _ = sk.roc_curve(y, s)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    _, idx = min(zip(abs(fpr - far), range(len(fpr))))
    return tpr[idx]


def test_tar_at_far_nearest_matches_ijb_script():
    rng = np.random.default_rng(5)
    s = np.round(np.r_[rng.normal(1.5, 1, 300), rng.normal(0, 1, 3000)], 2)
    y = np.r_[np.ones(300, bool), np.zeros(3000, bool)]
    fars = [1e-4, 1e-3, 1e-2, 1e-1, 0.5]
    got = tar_at_far(s, y, fars, method="nearest")
    np.testing.assert_array_equal(got, [_insightface_nearest(y, s, f) for f in fars])


# ---------------------------------------------------------------- VAL@FAR


def naive_val(s, y, far_target, k):
    interp = pytest.importorskip("scipy.interpolate")
    grid = np.arange(0, 4, 0.001)
    d = 2.0 - 2.0 * s
    vals, fars, taus = [], [], []
    for test in fold_slices(s.size, k):
        train = np.setdiff1d(np.arange(s.size), test)
        dt, yt = d[train], y[train]
        far_train = np.array([np.sum((dt < t) & ~yt) / np.sum(~yt) for t in grid])
        if far_train.max() >= far_target:
            # scipy <= 1.8 interp1d(kind="slinear") = degree-1 BSpline on knots [x0, x..., x_last]
            spl = interp.BSpline.construct_fast(np.r_[far_train[0], far_train, far_train[-1]], grid, 1)
            tau = float(spl(far_target))
        else:
            tau = 0.0
        acc = d[test] < tau
        vals.append(np.sum(acc & y[test]) / np.sum(y[test]))
        fars.append(np.sum(acc & ~y[test]) / np.sum(~y[test]))
        taus.append(tau)
    return np.array(vals), np.array(fars), np.array(taus)


@pytest.mark.parametrize("target", [1e-3, 1e-2, 0.1])
def test_val_at_far_matches_reference(target):
    s, y = lfw_like(2000, 10, seed=8)
    vals, fars, taus = naive_val(s, y, target, 10)
    r = val_at_far(s, y, far=target)
    np.testing.assert_allclose(r.thresholds, taus, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(r.vals, vals)
    np.testing.assert_array_equal(r.fars, fars)
    assert r.val == pytest.approx(np.mean(vals)) and r.val_std == pytest.approx(np.std(vals))
    assert r.far == pytest.approx(np.mean(fars))


def test_val_at_far_hand_cases():
    # perfectly separated with a far target never reached on training: FAR stays 0 -> tau = 0 -> VAL 0
    y = np.tile([True, False], 10)
    s = np.where(y, 0.9, -0.9)
    r = val_at_far(s, y, far=0.5, n_folds=10)
    # training FAR(tau) jumps from 0 to 1 once tau > d_neg = 3.8 -> max FAR 1 >= 0.5: tau is interpolated
    # halfway between the last grid tau with FAR 0 and the next (grid[3800] = 3.8000000000000003 > 3.8, so
    # these are 3.799 and 3.800: tau = 3.7995); every positive (d = 0.2) is accepted, no negative
    grid = np.arange(0, 4, 0.001)
    i = int(np.searchsorted(grid, 2.0 - 2.0 * -0.9, side="right")) - 1
    np.testing.assert_allclose(r.thresholds, (grid[i] + grid[i + 1]) / 2, atol=1e-12)
    assert r.thresholds[0] == pytest.approx(3.7995)
    assert r.val == 1.0 and r.far == 0.0
    with pytest.raises(InvalidOptionError, match="held-out fold"):
        val_at_far(np.where(np.r_[y[:18], True, True], 0.9, 0.1), np.r_[y[:18], True, True], n_folds=10)


# ---------------------------------------------------------------- IJB templates


def test_pool_templates_test_vector():
    v1, v2, v3 = np.array([1.0, 0, 0]), np.array([0, 2.0, 0]), np.array([0, 0, 4.0])
    w = np.array([3.0, 1.0, 1.0])
    feats = np.stack([v1, v2, v3, w])
    tids = np.array([7, 7, 7, 5])
    mids = np.array([0, 1, 1, 0])  # media 0 reused by template 5: a different media
    ids, tf = pool_templates(feats, tids, mids)
    np.testing.assert_array_equal(ids, [5, 7])
    expected = v1 + (v2 + v3) / 2
    np.testing.assert_allclose(tf[1], expected / np.linalg.norm(expected), atol=1e-15)
    np.testing.assert_allclose(tf[0], w / np.linalg.norm(w), atol=1e-15)
    assert tf.dtype == np.float64
    # faceness multiplies each image feature before pooling
    q = np.array([2.0, 1.0, 3.0, 1.0])
    _, tfq = pool_templates(feats, tids, mids, faceness=q)
    e2 = 2 * v1 + (v2 + 3 * v3) / 2
    np.testing.assert_allclose(tfq[1], e2 / np.linalg.norm(e2), atol=1e-15)
    # float32 in -> float32 out, string ids work
    ids_s, tf32 = pool_templates(feats.astype(np.float32), tids.astype(str), mids.astype(str))
    assert tf32.dtype == np.float32 and list(ids_s) == ["5", "7"]


def test_pool_templates_random_against_loop():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(300, 8))
    tids = rng.integers(0, 20, 300)
    mids = rng.integers(0, 6, 300)
    ids, tf = pool_templates(feats, tids, mids)
    for t, row in zip(ids, tf):
        sel = tids == t
        acc = sum(feats[sel & (mids == m)].mean(axis=0) for m in np.unique(mids[sel]))
        np.testing.assert_allclose(row, acc / np.linalg.norm(acc), atol=1e-12)


def test_verification_scores():
    rng = np.random.default_rng(1)
    ids = np.array([40, 10, 30, 20])
    tf = rng.normal(size=(4, 5))
    p1 = np.array([10, 20, 40, 30, 10])
    p2 = np.array([20, 30, 10, 30, 40])
    got = verification_scores(ids, tf, p1, p2, batch_size=2)
    n = tf / np.linalg.norm(tf, axis=1, keepdims=True)
    row = {t: i for i, t in enumerate(ids)}
    exp = [n[row[a]] @ n[row[b]] for a, b in zip(p1, p2)]
    np.testing.assert_allclose(got, exp, atol=1e-12)
    np.testing.assert_allclose(verification_scores(ids, tf, p1, p2), got, atol=1e-15)
    with pytest.raises(InvalidOptionError, match="99"):
        verification_scores(ids, tf, [10, 99], [20, 30])
    with pytest.raises(InvalidOptionError, match="duplicate"):
        verification_scores([1, 1, 2, 3], tf, [1], [2])


# ---------------------------------------------------------------- 1:N identification


def _unit_probe(first3):
    v = np.zeros(4)
    v[:3] = first3
    v[3] = math.sqrt(1 - sum(x * x for x in first3))
    return v


GALLERY = np.eye(4)[:3]  # subjects 10, 20, 30 at e1, e2, e3 (cosine with a probe = its first 3 entries)
GALLERY_IDS = np.array([10, 20, 30])
MATED = [  # (id, scores vs 10/20/30)
    (10, [0.9, 0.3, 0.1]),  # mate .9, rank 1
    (20, [0.71, 0.7, 0.0]),  # mate .7, rank 2
    (30, [0.2, 0.1, 0.75]),  # mate .75, rank 1
    (30, [0.1, 0.2, 0.95]),  # mate .95, rank 1
]
NONMATED = [(99, [0.97, 0.1, 0.1]), (98, [0.2, 0.85, 0.3]), (97, [0.65, 0.3, 0.2]), (96, [0.1, 0.2, 0.5])]


def _probes(entries):
    return np.stack([_unit_probe(v) for _, v in entries]), np.array([i for i, _ in entries])


def test_identification_nist_hand_case():
    pf, pid = _probes(MATED + NONMATED)
    r = identification_metrics(GALLERY, GALLERY_IDS, pf, pid, ranks=(1, 2, 5), fpirs=(0.01, 0.25, 0.5))
    assert r.definition == "nist" and r.n_mated == 4 and r.n_nonmated == 4
    assert r.rank_accuracy == {1: 0.75, 2: 1.0, 5: 1.0}
    # non-mated top-1 scores .97 .85 .65 .5; FPIR .25 -> one false alarm allowed -> accept scores > .85
    assert r.tpir[0.25] == 0.5  # .9 and .95 (rank 1)
    assert r.thresholds[0.25] == pytest.approx(0.85)
    assert r.tpir[0.5] == 0.75  # > .65: .9, .75, .95 (the .7 mate is rank 2 anyway)
    assert r.tpir[0.01] == 0.0  # no false alarm allowed: > .97
    # probe order does not matter, batching does not matter
    r1 = identification_metrics(GALLERY, GALLERY_IDS, pf[::-1], pid[::-1], (1, 2, 5), (0.01, 0.25, 0.5), batch_size=1)
    assert r1.rank_accuracy == r.rank_accuracy and r1.tpir == r.tpir


def test_identification_toolbox_hand_case():
    pf, pid = _probes(MATED)
    r = identification_metrics(
        GALLERY, GALLERY_IDS, pf, pid, ranks=(1, 5), fpirs=(0.1, 0.25, 0.5), definition="toolbox", batch_size=3
    )
    assert r.rank_accuracy == {1: 0.75, 5: 1.0}
    # non-mate similarities: .71 .3 .2 .2 .1 .1 .1 0;  N_q = 4
    assert r.thresholds[0.25] == pytest.approx(0.71)  # ceil(1)-th largest
    assert r.tpir[0.25] == 0.75  # mates > .71: .9, .75, .95 (no rank-1 condition, but .7 < .71)
    assert r.thresholds[0.1] == pytest.approx(0.71)  # ceil(0.4) = 1
    assert r.thresholds[0.5] == pytest.approx(0.3)  # 2nd largest
    assert r.tpir[0.5] == 1.0
    with pytest.raises(InvalidOptionError, match="toolbox"):
        identification_metrics(GALLERY, GALLERY_IDS, *_probes(MATED + NONMATED), definition="toolbox")


def _slow_identification(g, gid, p, pid, ranks, fpirs, definition):
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    sims = p @ g.T
    mate = pid[:, None] == gid[None, :]
    mated = mate.any(axis=1)
    ms = np.where(mate, sims, -np.inf).max(axis=1)
    rank = 1 + ((sims >= ms[:, None]) & ~mate).sum(axis=1)
    cmc = {k: np.mean(rank[mated] <= k) for k in ranks}
    tp = {}
    if definition == "toolbox":
        neg = np.sort(sims[~mate])[::-1]
        for f in fpirs:
            tau = neg[math.ceil(f * len(p)) - 1]
            tp[f] = np.mean(ms > tau)
    else:
        tops = sims[~mated].max(axis=1)
        for f in fpirs:  # sweep every candidate threshold
            best = 0.0
            for tau in np.r_[np.unique(tops), np.unique(ms), np.inf]:
                if np.mean(tops >= tau) <= f:
                    best = max(best, np.mean((rank[mated] == 1) & (ms[mated] >= tau)))
            tp[f] = best
    return cmc, tp


@pytest.mark.parametrize("definition", ["nist", "toolbox"])
def test_identification_random_against_slow(definition):
    rng = np.random.default_rng(4)
    g = rng.normal(size=(30, 16)).astype(np.float32)
    gid = np.arange(30)
    pid = rng.integers(0, 30 if definition == "toolbox" else 45, 120)
    p = np.where((pid < 30)[:, None], g[np.minimum(pid, 29)], 0) + rng.normal(size=(120, 16)).astype(np.float32)
    p = p.astype(np.float32)
    fpirs = (0.01, 0.1, 0.3)
    r = identification_metrics(g, gid, p, pid, (1, 5, 10), fpirs, definition=definition, batch_size=7)
    cmc, tp = _slow_identification(g.astype(np.float64), gid, p.astype(np.float64), pid, (1, 5, 10), fpirs, definition)
    for k in (1, 5, 10):
        assert r.rank_accuracy[k] == pytest.approx(cmc[k])
    for f in fpirs:
        assert r.tpir[f] == pytest.approx(tp[f])


# ---------------------------------------------------------------- validation and purity


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: kfold_accuracy([0.1, 0.2, 0.3], [1, 0]), "different lengths"),
        (lambda: kfold_accuracy([], []), "empty"),
        (lambda: kfold_accuracy([0.1, 0.2, 0.3, 0.4], [1, 0, 2, 0], 2), "binary"),
        (lambda: kfold_accuracy([0.1, np.nan, 0.3, 0.4], [1, 0, 1, 0], 2), "NaN"),
        (lambda: kfold_accuracy([0.1, 0.2], [1, 0], 2, method="lfw"), "exact, insightface, sphereface"),
        (lambda: kfold_accuracy([0.1, 0.2], [1, 0], 3), "n_folds"),
        (lambda: kfold_accuracy([0.1, 0.2], [1, 0], 1), "n_folds"),
        (lambda: kfold_accuracy([0.1, 0.2], [1, 0], folds=[0, 0]), "2 distinct"),
        (lambda: roc([0.1, 0.2], [1, 1]), "both classes"),
        (lambda: roc([0.1, 0.2], ["a", "b"]), "bool or 0/1"),
        (lambda: eer([0.1, np.inf], [1, 0]), "NaN or infinite"),
        (lambda: tar_at_far([0.1, 0.2], [1, 0], 1.5), "far"),
        (lambda: tar_at_far([0.1, 0.2], [1, 0], 0.1, method="linear"), "interpolate"),
        (lambda: val_at_far([0.1, 0.2], [1, 0], far=0), "far"),
        (lambda: best_threshold_accuracy([0.1], [1, 0]), "different lengths"),
        (lambda: pool_templates(np.ones((3, 2)), [1, 1], [0, 0, 0]), "template_ids"),
        (lambda: identification_metrics(np.eye(2), [1, 2], np.eye(3), [1, 2, 3]), "dimension"),
        (lambda: identification_metrics(np.eye(2), [1, 2], np.eye(2), [1, 2], fpirs=(0,)), "fpir"),
        (lambda: identification_metrics(np.eye(2), [1, 2], np.eye(2), [1, 2], ranks=(0,)), "rank"),
    ],
)
def test_invalid_inputs(call, match):
    with pytest.raises(InvalidOptionError, match=match):
        call()


def test_module_imports_numpy_only():
    """The metrics layer is pure numpy: no torch, no facesphere module above it (errors only)."""
    package = pathlib.Path(M.__file__).resolve().parent
    names, relative = set(), set()
    for src in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(src.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.level > 1:
                relative.add(node.module)
    assert names <= {"__future__", "math", "numbers", "dataclasses", "typing", "numpy"}, names
    assert relative <= {"errors"}, relative
