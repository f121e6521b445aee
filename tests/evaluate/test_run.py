"""facesphere.evaluate.run.evaluate_model end to end on the synthetic set, checked against an independent
embedding + scoring written here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facesphere import build_backbone
from facesphere.data.synthetic import synthetic_pairs
from facesphere.errors import InvalidOptionError, UnknownNameError
from facesphere.evaluate import metrics as M
from facesphere.evaluate.run import evaluate_model

SPEC = "synthetic:pairs_per_fold=4"


@pytest.fixture(scope="module")
def backbone() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone("sfnet4", embed_dim=16, channels=(4, 8, 8, 16)).eval()


def _independent_scores(model, flip):
    images, idx1, idx2, issame, folds = synthetic_pairs(pairs_per_fold=4)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() - 127.5) / 127.5
    with torch.no_grad():
        f = model(x)
        m = model(torch.flip(x, dims=[3]))
    f = {"sum": f + m, "concat": torch.cat([f, m], 1), "none": f}[flip].double()
    f = f / f.norm(dim=1, keepdim=True)
    return (f[idx1] * f[idx2]).sum(1).numpy(), issame, folds


def test_evaluate_model_writes_report_matching_an_independent_computation(tmp_path, backbone):
    results = evaluate_model(backbone, [SPEC, SPEC + ",seed=1"], tmp_path / "out", progress=False, batch_size=16,
                             save_scores=True)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "roc.png", "scores_synthetic-2.npz",
                                                     "scores_synthetic-2.png", "scores_synthetic.npz",
                                                     "scores_synthetic.png"]
    saved = json.loads((out / "metrics.json").read_text())
    assert list(saved["datasets"]) == ["synthetic", "synthetic-2"]
    assert saved["options"]["accuracy_method"] == "exact" and saved["options"]["flip"] == "sum"
    m = saved["datasets"]["synthetic"]
    scores, issame, folds = _independent_scores(backbone, "sum")
    k = M.kfold_accuracy(scores, issame, folds=folds)
    assert m["accuracy"] == pytest.approx(k.mean, abs=1e-12)
    assert m["accuracy_std"] == pytest.approx(k.std, abs=1e-12)
    curve = M.roc(scores, issame)
    assert m["auc"] == pytest.approx(M.auc(curve.fpr, curve.tpr), abs=1e-6)
    assert m["eer"] == pytest.approx(M.eer(scores, issame), abs=1e-6)
    assert m["pairs"] == 40 and m["tar_method"] == "interpolate" and "definitions" in m
    assert m["synthetic"] == {"pairs_per_fold": 4}
    assert results["datasets"]["synthetic"]["accuracy"] == m["accuracy"]
    with np.load(out / "scores_synthetic.npz") as saved_scores:
        np.testing.assert_allclose(saved_scores["scores"], scores, atol=1e-5)
        np.testing.assert_array_equal(saved_scores["issame"], issame)
        np.testing.assert_array_equal(saved_scores["folds"], folds)
    assert saved["datasets"]["synthetic-2"]["synthetic"] == {"pairs_per_fold": 4, "seed": 1}


@pytest.mark.parametrize("flip", ["concat", "none"])
def test_flip_modes_and_accuracy_definitions(backbone, flip):
    results = evaluate_model(backbone, SPEC, None, flip=flip, method="sphereface", tar_method="nearest",
                             progress=False, plots=False)
    m = results["datasets"]["synthetic"]
    scores, issame, folds = _independent_scores(backbone, flip)
    assert m["accuracy"] == pytest.approx(M.kfold_accuracy(scores, issame, folds=folds, method="sphereface").mean)
    assert m["accuracy_method"] == "sphereface" and m["tar_method"] == "nearest"
    assert results["files"] == {}


def test_errors(backbone, tmp_path):
    with pytest.raises(InvalidOptionError, match="at least one"):
        evaluate_model(backbone, [], tmp_path)
    with pytest.raises(UnknownNameError, match="unknown dataset kind"):
        evaluate_model(backbone, ["nope:x"], tmp_path)
    with pytest.raises(UnknownNameError, match="flip"):
        evaluate_model(backbone, SPEC, tmp_path, flip="max")
    assert not any(tmp_path.iterdir())  # nothing written before the inputs were checked
