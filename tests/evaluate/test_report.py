"""facesphere.evaluate.report: table, metrics.json, ROC and histogram PNGs; matplotlib only when plotting."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from facesphere.evaluate.protocols import pair_metrics
from facesphere.evaluate.report import (
    format_table,
    plot_roc,
    plot_score_histogram,
    safe_filename,
    write_metrics_json,
)
from facesphere.errors import OutputError
from tests.helpers import simulate_full_disk


def _scores(seed, n=2000):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    return np.where(y, rng.normal(0.6, 0.2, n), rng.normal(0.1, 0.2, n)), y


def test_table_lists_every_dataset_and_metric():
    s, y = _scores(0)
    results = {"datasets": {
        "lfw": {"protocol": "pairs", **pair_metrics(s, y)},
        "IJBC": {"protocol": "ijb", **pair_metrics(s, y, accuracy_method=None, tar_method="nearest")},
        "people": {"protocol": "ident", "probes": 3, "gallery_identities": 3, "distractors": 2,
                   "rank_accuracy": {"1": 0.5, "5": 1.0}, "tpir_at_fpir": {"nist": {"1e-02": 0.25, "1e-01": 0.5},
                                                                         "toolbox": None},
                   "megaface": {"searches": 8, "distractors": 2, "rank_accuracy": {"1": 0.125, "5": 1.0}}},
    }}
    text = format_table(results)
    lines = text.splitlines()
    lfw = next(line for line in lines if line.startswith("lfw "))
    assert f"{100 * results['datasets']['lfw']['accuracy']:.2f}" in lfw
    assert f"{100 * results['datasets']['lfw']['tar_at_far']['1e-02']:.2f}" in lfw
    ijb = next(line for line in lines if line.startswith("IJBC"))
    assert "—" in ijb  # no 10-fold accuracy for IJB
    assert "TAR@FAR=0.1%" in text and "TAR@FAR=0.01%" not in text  # ~1,400 impostors: 1e-4 undefined
    assert "all rates in %" in lines[0]  # one unit per table, said in its first line
    people = next(line for line in lines if line.startswith("people "))
    assert "50.00" in people and "25.00" in people and "nist" in people
    assert any("leave-one-in" in line and "12.50" in line for line in lines)
    assert "interpolate" in text and "nearest" in text
    assert format_table({"datasets": {}}) == "(no datasets evaluated)"


def test_metrics_json_is_strict_json(tmp_path):
    path = write_metrics_json({"a": np.float32(0.5), "b": float("nan"), "c": np.arange(3), "d": {1: np.bool_(True)},
                               "e": -np.inf}, tmp_path / "sub" / "metrics.json")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": 0.5, "b": None, "c": [0, 1, 2], "d": {"1": True}, "e": None}


def _png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_roc_and_histogram_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    curves = {"a": _scores(1), "b": _scores(2, 20_000)}  # the large one is thinned before drawing
    path = plot_roc(curves, tmp_path / "roc.png")
    w, h = _png_size(path)
    assert w > 300 and h > 200
    s, y = _scores(3)
    hist = plot_score_histogram("a", s[y], s[~y], tmp_path / f"scores_{safe_filename('my set/1')}.png",
                                threshold=0.3)
    assert hist.name == "scores_my_set_1.png" and _png_size(hist)[0] > 300
    # degenerate input: one score value, an empty population
    plot_score_histogram("same", np.full(5, 0.2), np.empty(0), tmp_path / "same.png")


def test_importing_report_does_not_import_matplotlib():
    code = ("import sys, facesphere.evaluate.report, facesphere.evaluate.run, facesphere.infer.search, "
            "facesphere.evaluate.protocols, facesphere.cli; "
            "bad = [m for m in ('matplotlib', 'faiss', 'cv2', 'onnxruntime') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_full_disk_while_writing_metrics_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_metrics_json({"datasets": {"lfw": {"accuracy": 0.99}}}, path)
    before = path.read_bytes()
    simulate_full_disk(monkeypatch, tmp_path)
    with pytest.raises(OutputError) as info:
        write_metrics_json({"datasets": {"lfw": {"accuracy": 0.5}}}, path)
    monkeypatch.undo()
    assert str(info.value) == (f"{path}: cannot write the metrics file (No space left on device); the previous "
                               "version is intact")
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
