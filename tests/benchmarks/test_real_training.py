"""benchmarks/real_training.py: outcomes, tables and result merging from made-up rows (no training, no shared data)."""

import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def real_training():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module("real_training")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def _row(head="arcface", *, lfw=0.9, fiw=0.8, status="finished", loss=(10.0, 5.0)):
    metrics = {"accuracy_std": 0.01, "auc": 0.95, "tar@1e-3": 0.3, "threshold": 0.3}
    return {"head": head, "steps": 100, "status": status, "wall_seconds": 600.0, "images_per_second": 200.0,
            "load_average": [1.0, 2.0], "lfw": {"accuracy": lfw, **metrics}, "fiw": {"accuracy": fiw, **metrics},
            "curve": {"steps": [1, 13, 100][:len(loss)], "loss": list(loss), "val_steps": [100], "val_accuracy": [fiw]}}


def test_stability_outcomes(real_training):
    assert real_training.stability_outcome(_row()) == "trained"
    assert real_training.stability_outcome(_row(fiw=0.55)) == "stalled"
    assert real_training.stability_outcome({"status": "diverged", "curve": {"loss": []}}) == "diverged"
    assert real_training.stability_outcome(_row(loss=(10.0, float("nan")))) == "diverged"


def test_results_merge_part_by_part(real_training, tmp_path):
    real_training.save_row(tmp_path, "heads", "arcface", _row())
    real_training.save_row(tmp_path, "heads", "cosface", _row("cosface", lfw=0.85))
    real_training.save_row(tmp_path, "recipe", "recipe", _row() | {"path": "configs/x.yaml"})
    results = real_training.load_results(tmp_path)
    assert set(results["heads"]) == {"arcface", "cosface"} and results["recipe"]["path"] == "configs/x.yaml"
    json.dumps(results)  # the stored rows stay plain JSON


@pytest.mark.parametrize("accuracy,minutes,verdict", [(0.91, 29.0, "met"), (0.89, 20.0, "missed"),
                                                       (0.95, 31.0, "missed")])
def test_recipe_target_is_stated_met_or_missed(real_training, accuracy, minutes, verdict):
    recipe = _row(lfw=accuracy) | {"path": "configs/x.yaml", "wall_seconds": 60 * minutes}
    text = real_training.tables({"recipe": recipe})
    assert f"**{verdict}**" in text and f"{100 * accuracy:.2f} ± 1.00" in text


def test_tables_show_every_part(real_training):
    results = {
        "heads": {"arcface": _row(), "sphereface": {"status": "diverged", "error": "non-finite loss"}},
        "optimiser": {"papers (x) | arcface": _row(loss=(10.0, 9.0, 5.0))},
        "stability": {"A-Softmax | seed 0": _row(fiw=0.5) | {"outcome": "stalled"}},
        "noise": {"arcface": _row() | {"noise": {"rate": 0.2, "flipped": 20, "images": 100}},
                  "arcface cleaned": _row() | {"noise": {"rate": 0.2, "flipped": 20, "images": 100},
                                               "clean": {"threshold_deg": 75.0, "dropped": 25, "dropped_flipped": 18,
                                                         "precision": 0.72, "recall": 0.9}}},
    }
    text = real_training.tables(results)
    assert "| arcface | 90.00 ± 1.00 |" in text and "diverged: non-finite loss" in text
    assert "| papers (x) | arcface | 10.000 | 9.000 | 5.000 |" in text
    assert "| A-Softmax | 0 | stalled |" in text
    assert "20 % of the FIW training labels flipped" in text and "precision 72.0 %, recall 90.0 %" in text
