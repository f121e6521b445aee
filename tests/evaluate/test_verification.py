"""facesphere.evaluate.verification: the one pair summary (training validation and ``facesphere eval``)."""

from __future__ import annotations

import numpy as np
import pytest

from facesphere.evaluate import metrics as M
from facesphere.evaluate.verification import pair_metrics


def test_pair_metrics_records_definitions_and_defined_fars():
    rng = np.random.default_rng(0)
    y = np.tile(np.r_[np.ones(50, bool), np.zeros(150, bool)], 10)  # 1,500 impostors
    s = np.where(y, rng.normal(0.6, 0.15, y.size), rng.normal(0.1, 0.15, y.size))
    out = pair_metrics(s, y, tar_method="interpolate")
    assert list(out["tar_at_far"]) == ["1e-01", "1e-02", "1e-03"]  # 1500 x 1e-4 < 1: undefined
    assert out["tar_at_far"] == out["tar_at_far_by_method"]["interpolate"]
    assert out["tar_at_far"]["1e-02"] == pytest.approx(M.tar_at_far(s, y, 1e-2))
    assert out["tar_at_far_by_method"]["nearest"]["1e-03"] == M.tar_at_far(s, y, 1e-3, method="nearest")
    k = M.kfold_accuracy(s, y)
    assert out["accuracy"] == k.mean and out["accuracy_std"] == k.std
    assert out["threshold"] == pytest.approx(np.mean(k.thresholds))
    assert (out["pairs"], out["genuine_pairs"], out["impostor_pairs"]) == (2000, 500, 1500)
    assert "exact" in out["definitions"]["accuracy"] and "interpolated" in out["definitions"]["tar_at_far"]
    grid = pair_metrics(s, y, accuracy_method="insightface", tar_method="nearest")
    assert grid["threshold_space"] == "distance" and grid["tar_method"] == "nearest"
    assert "insightface" in grid["definitions"]["accuracy"]
    # the exact threshold is optimal on the training folds: never below the grid's training accuracy
    ki = M.kfold_accuracy(s, y, method="insightface")
    assert np.all(k.train_accuracies >= ki.train_accuracies)
    assert "accuracy" not in pair_metrics(s, y, accuracy_method=None)
    one_fold = pair_metrics(s, y, np.zeros(y.size, int))  # a one-fold list: 10 contiguous blocks instead
    assert one_fold["accuracy"] == k.mean and "single fold" in one_fold["definitions"]["folds"]
