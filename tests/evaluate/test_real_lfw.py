"""Real faces: a slice of the official LFW View-2 pairs (grayscale copy in ../shared/data/lfw), detected with YuNet,
aligned and embedded with OpenCV Zoo's SFace through ``lfw:DIR``. Skips when the shared data / models are absent."""

from __future__ import annotations

import pytest

from facesphere.evaluate.run import evaluate_model
from tests.helpers import DATA, MODELS

pytestmark = pytest.mark.slow  # processes / real data end to end: left out by -m "not slow"

LFW = DATA / "lfw"
SFACE = MODELS / "face_recognition_sface_2021dec_int8bq.onnx"
YUNET = MODELS / "face_detection_yunet_2023mar_int8bq.onnx"


def test_sface_on_an_lfw_slice(tmp_path):
    if not ((LFW / "pairs.txt").is_file() and SFACE.is_file() and YUNET.is_file()):
        pytest.skip("shared LFW data or SFace / YuNet models not present")
    pytest.importorskip("cv2")
    lines = (LFW / "pairs.txt").read_text().splitlines()
    same, different = lines[1:13], lines[301:313]  # fold 1: its first 12 same and first 12 different pairs
    root = tmp_path / "lfw_slice"
    root.mkdir()
    (root / "images").symlink_to(LFW / "images", target_is_directory=True)
    (root / "pairs.txt").write_text("2 6\n" + "\n".join(same[:6] + different[:6] + same[6:] + different[6:]) + "\n")
    from facesphere.infer.embedders import load_embedder

    results = evaluate_model(load_embedder(SFACE), [f"lfw:{root}"], None, detector=str(YUNET), progress=False,
                             plots=False, batch_size=16)
    m = results["datasets"]["lfw_slice"]
    assert m["pairs"] == 24 and m["detection"]["detected"] + m["detection"]["no_face"] == m["images"]
    assert m["detection"]["no_face"] == 0
    # SFace reaches 99 % on all of LFW (docs/results.md); on 24 pairs: separable or nearly so
    assert m["auc"] >= 0.97
    assert m["best_threshold_accuracy"] >= 0.95
