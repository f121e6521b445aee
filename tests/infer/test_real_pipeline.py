"""The whole in-the-wild pipeline on real LFW photos, through the commands a user runs:
``facesphere data align`` (SCRFD, 5-point ArcFace alignment) -> ``facesphere eval`` (MobileFaceNet ONNX, 10-fold).

A subset of the official View-2 pairs keeps it to seconds: the first 15 matched and 15 mismatched pairs of every
fold (300 pairs, ~550 photos). The full 6,000-pair numbers are in docs/results.md (benchmarks/real_faces.py).
Skips when ``../shared`` is absent."""

from __future__ import annotations

import json
import shutil

import pytest

from facesphere.cli import main
from tests.helpers import DATA, MODELS

pytestmark = pytest.mark.slow  # processes / real data end to end: left out by -m "not slow"

PER_CLASS = 15


def _subset_lfw(target):
    """Write ``target/pairs.txt`` (header ``10 15``) and copy the photos it needs to ``target/images``."""
    lfw = DATA / "lfw"
    lines = (lfw / "pairs.txt").read_text().splitlines()
    folds, per_class = (int(v) for v in lines[0].split())
    body = lines[1:]
    kept = []
    for fold in range(folds):
        block = body[fold * 2 * per_class:(fold + 1) * 2 * per_class]
        kept += block[:PER_CLASS] + block[per_class:per_class + PER_CLASS]
    photos = set()
    for line in kept:
        fields = line.split()
        if len(fields) == 3:
            photos |= {(fields[0], int(fields[1])), (fields[0], int(fields[2]))}
        else:
            photos |= {(fields[0], int(fields[1])), (fields[2], int(fields[3]))}
    for name, number in photos:
        source = lfw / "images" / name / f"{name}_{number:04d}.jpg"
        (target / "images" / name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target / "images" / name / source.name)
    (target / "pairs.txt").write_text(f"{folds}\t{PER_CLASS}\n" + "\n".join(kept) + "\n")
    return len(photos), len(kept)


def test_detect_align_embed_verify_on_real_lfw_pairs(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    detector, recogniser = MODELS / "scrfd_2.5g_bnkps.onnx", MODELS / "mobilefacenet_128d.onnx"
    if not (detector.is_file() and recogniser.is_file() and (DATA / "lfw" / "pairs.txt").is_file()):
        pytest.skip("shared SCRFD / MobileFaceNet models or LFW not present")
    photos, pairs = _subset_lfw(tmp_path / "lfw")
    aligned = tmp_path / "lfw_aligned"
    assert main(["data", "align", str(tmp_path / "lfw" / "images"), str(aligned / "images"),
                 "--detector", str(detector), "--choose", "central", "--quiet"]) == 0
    report = json.loads((aligned / "images" / "align_report.json").read_text())
    assert report["counts"]["aligned"] == photos and report["no_face"] == []
    shutil.copyfile(tmp_path / "lfw" / "pairs.txt", aligned / "pairs.txt")
    assert main(["eval", str(recogniser), "--data", f"lfw:{aligned}", "--out", str(tmp_path / "eval"),
                 "--quiet"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    (result,) = metrics["datasets"].values()
    assert result["pairs"] == pairs == 300 and len(result["fold_accuracies"]) == 10
    # a correct pipeline is near 99 % on this grayscale copy; misalignment costs several points
    assert result["accuracy"] >= 0.96, result["accuracy"]
    assert result["auc"] >= 0.98
