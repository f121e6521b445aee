"""The decision threshold a model carries (facesphere.infer.thresholds) and its calibration on the model's validation
set (facesphere.evaluate.calibrate): runs, exports, known public models, the default; --threshold / --far."""

from __future__ import annotations

import json

import numpy as np
import pytest

import facesphere as fs
from facesphere.cli import main
from facesphere.errors import InvalidOptionError
from facesphere.evaluate.calibrate import calibrate_threshold, decision_threshold
from facesphere.evaluate.run import evaluate_model, synthetic_defaults_for
from facesphere.infer.thresholds import (
    DEFAULT_THRESHOLD,
    KNOWN_THRESHOLDS,
    ModelThreshold,
    choose_threshold,
    model_threshold,
    rates_at,
    threshold_at_far,
    validation_settings,
)
from tests.helpers import DATA, MODELS, require


def test_threshold_at_far_accepts_at_most_the_allowed_impostors():
    impostors = np.array([0.9, 0.8, 0.8, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.1])
    assert threshold_at_far(impostors, 0.0) == pytest.approx(0.9) and threshold_at_far(impostors, 0.0) > 0.9
    tau = threshold_at_far(impostors, 0.1)  # one impostor allowed: above the tied 0.8s
    assert 0.8 < tau < 0.8 + 1e-12 and np.mean(impostors >= tau) == 0.1
    tau = threshold_at_far(impostors, 0.3)  # three allowed: 0.9, 0.8, 0.8 in, 0.5 out
    assert np.mean(impostors >= tau) == pytest.approx(0.3) and tau > 0.5
    scores = np.array([0.9, 0.7, 0.2, 0.6])
    assert rates_at(scores, np.array([True, True, False, False]), 0.65) == (0.0, 1.0)
    with pytest.raises(InvalidOptionError):
        threshold_at_far([], 0.1)


def test_a_run_carries_its_validation_threshold(tiny_run):
    record = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()
              if "val" in json.loads(line)][-1]
    carried = model_threshold(tiny_run)
    assert carried.value == pytest.approx(record["val"]["synthetic"]["threshold"])
    assert carried.rule == "accuracy" and carried.far is None and carried.calibrated
    assert "validation set 'synthetic'" in carried.describe() and "FAR not recorded" in carried.describe()
    assert model_threshold(tiny_run / "best.pt").value == carried.value
    rec = fs.FaceRecognizer.from_path(tiny_run)
    assert rec.threshold == carried.value and rec.threshold_info.rule == "accuracy"
    settings = validation_settings(tiny_run)
    assert settings["val"] == ["synthetic"] and settings["synthetic"]["pairs_per_fold"] == 4


def test_known_models_unknown_models_and_overrides(tmp_path):
    known = tmp_path / "face_recognition_sface_2021dec_int8bq.onnx"
    known.write_bytes(b"not really a model")
    carried = model_threshold(known)
    assert carried is KNOWN_THRESHOLDS["face_recognition_sface"] and "LFW" in carried.describe()
    other = tmp_path / "my_model.onnx"
    other.write_bytes(b"x")
    default = model_threshold(other)
    assert default.value == DEFAULT_THRESHOLD and default.rule == "default" and not default.calibrated
    assert "uncalibrated" in default.describe()
    given = choose_threshold(carried, threshold=0.5)
    assert (given.value, given.rule) == (0.5, "given")
    for key, value in carried.at_far.items():
        at = choose_threshold(carried, far=float(key))
        assert at.value == value and at.rule == "far" and "FAR <= " in at.describe()
    with pytest.raises(InvalidOptionError, match="recorded FARs"):
        choose_threshold(carried, far=0.37)
    with pytest.raises(InvalidOptionError, match="either"):
        choose_threshold(carried, threshold=0.1, far=0.1)
    assert ModelThreshold.from_dict(carried.to_dict(), "x").value == carried.value


def test_the_measured_known_thresholds_are_sane():
    for prefix, carried in KNOWN_THRESHOLDS.items():
        assert 0.1 < carried.value < 0.6 and carried.far is not None and carried.far < 0.05, prefix
        values = [carried.at_far[key] for key in sorted(carried.at_far, key=float, reverse=True)]
        assert values == sorted(values) and len(values) == 3, prefix  # a smaller FAR needs a higher threshold


def test_calibrating_a_far_on_the_runs_validation_set(tiny_run):
    embedder = fs.load_embedder(tiny_run)
    at = decision_threshold(tiny_run, embedder, far=0.1)
    assert at.rule == "far" and at.far == 0.1 and "calibrated" in at.source
    default = calibrate_threshold(embedder, tiny_run)
    assert default.rule == "accuracy" and default.far is not None
    assert default.value == pytest.approx(model_threshold(tiny_run).value, abs=1e-5)  # the run's own pairs again
    assert decision_threshold(tiny_run, embedder, threshold=0.2).value == 0.2
    with pytest.raises(InvalidOptionError, match="impostor"):
        decision_threshold(tiny_run, embedder, far=1e-4)  # 20 impostor pairs cannot measure 1e-4


def test_verify_prints_the_threshold_and_its_far(tiny_run, tmp_path, capsys):
    from PIL import Image

    from facesphere.data.synthetic import SyntheticConfig, SyntheticFaceDataset

    dataset = SyntheticFaceDataset(SyntheticConfig(seed=2, num_identities=2, images_per_identity=1))
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(dataset.image(0)).save(a)
    Image.fromarray(dataset.image(1)).save(b)
    code = main(["verify", str(a), str(b), "--model", str(tiny_run)])
    out = capsys.readouterr().out
    record = json.loads(out.splitlines()[0])
    assert record["threshold"] == pytest.approx(model_threshold(tiny_run).value, abs=1e-6)
    assert record["threshold_rule"] == "accuracy" and "metrics.jsonl" in record["threshold_source"]
    assert "accuracy-optimal on validation set 'synthetic'" in out and code == (0 if record["same"] else 1)
    main(["verify", str(a), str(b), "--model", str(tiny_run), "--far", "0.1", "--quiet"])
    captured = capsys.readouterr()
    record = json.loads(captured.out.splitlines()[0])
    assert record["far"] == 0.1 and record["threshold_rule"] == "far" and "calibrating" in captured.err
    assert main(["verify", str(a), str(b), "--model", str(tiny_run), "--far", "2"]) == 2
    with pytest.raises(SystemExit):  # --threshold and --far exclude each other
        main(["verify", str(a), str(b), "--model", str(tiny_run), "--far", "0.1", "--threshold", "0.3"])


def test_an_export_carries_the_runs_threshold_and_validation_settings(tiny_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from facesphere.infer.export import export_onnx

    out = tmp_path / "model.onnx"
    report = export_onnx(tiny_run, out, exporter="torchscript")
    assert report["threshold"] == pytest.approx(model_threshold(tiny_run).value)
    carried = model_threshold(out)
    assert carried.value == pytest.approx(model_threshold(tiny_run).value) and "metadata" in carried.source
    assert synthetic_defaults_for(out) == synthetic_defaults_for(tiny_run) != {}
    assert fs.FaceRecognizer.from_path(out).threshold == pytest.approx(carried.value)
    # the same weights score the same synthetic set as a run and as its export
    run_result = evaluate_model(fs.load_embedder(tiny_run), "synthetic", None, progress=False,
                                synthetic=synthetic_defaults_for(tiny_run))
    onnx_result = evaluate_model(fs.load_embedder(out), "synthetic", None, progress=False,
                                 synthetic=synthetic_defaults_for(out))
    assert run_result["datasets"]["synthetic"]["accuracy"] == onnx_result["datasets"]["synthetic"]["accuracy"]
    assert run_result["datasets"]["synthetic"]["pairs"] == 40


def test_known_model_threshold_separates_real_lfw_pairs():
    """SFace at its documented LFW threshold: a same pair above, a different pair below (real photos, SCRFD)."""
    detector, sface = MODELS / "scrfd_2.5g_bnkps.onnx", MODELS / "face_recognition_sface_2021dec_int8bq.onnx"
    lfw = DATA / "lfw" / "images"
    require(detector, sface, lfw, modules=("onnxruntime", "cv2"))
    rec = fs.FaceRecognizer.from_path(sface, detector=detector)
    assert rec.threshold_info is KNOWN_THRESHOLDS["face_recognition_sface"]
    peirsol = lfw / "Aaron_Peirsol"
    same = rec.verify(peirsol / "Aaron_Peirsol_0001.jpg", peirsol / "Aaron_Peirsol_0003.jpg")
    different = rec.verify(peirsol / "Aaron_Peirsol_0001.jpg", lfw / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg")
    assert same.same and not different.same and same.info.far is not None
