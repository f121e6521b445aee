"""`facesphere embed`, `verify` and `export` end to end on a tiny run and aligned synthetic crops."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import facesphere as fs
from facesphere.cli import main


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    from facesphere.data.synthetic import SyntheticConfig, SyntheticFaceDataset

    dataset = SyntheticFaceDataset(SyntheticConfig(seed=4, num_identities=2, images_per_identity=2))
    folder = tmp_path_factory.mktemp("crops")
    for i in range(4):
        (folder / f"id{i // 2}").mkdir(exist_ok=True)
        Image.fromarray(dataset.image(i)).save(folder / f"id{i // 2}" / f"{i}.png")
    return folder


def test_embed_folder_writes_npy_and_image_list(tiny_run, crops, tmp_path, capsys):
    out = tmp_path / "emb.npy"
    assert main(["embed", str(tiny_run), str(crops), "--out", str(out), "--quiet"]) == 0
    features = np.load(out)
    listing = json.loads(out.with_suffix(".json").read_text())
    assert features.shape == (4, 32) and len(listing["images"]) == 4 and listing["no_face"] == []
    expected = fs.FaceRecognizer.from_path(tiny_run).embed(listing["images"])
    np.testing.assert_allclose(features, expected, atol=1e-6)


def test_verify_exit_code_is_the_decision(tiny_run, crops, capsys):
    a, b = sorted(crops.glob("id0/*.png"))
    assert main(["verify", str(a), str(a), "--model", str(tiny_run), "--threshold", "0.99"]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert record["same"] and record["score"] == pytest.approx(1.0, abs=1e-5)
    assert main(["verify", str(a), str(b), "--model", str(tiny_run), "--threshold", "1.01", "--quiet"]) == 1


def test_bad_paths_are_errors_not_tracebacks(tiny_run, tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nope.jpg"), str(tmp_path / "nope.jpg"), "--model", str(tiny_run)]) == 2
    assert "nope.jpg" in capsys.readouterr().err
    assert main(["embed", str(tmp_path / "missing_model"), str(tmp_path), "--out", str(tmp_path / "x.npy")]) == 2


def test_export_command(tiny_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    assert main(["export", str(tiny_run), "--onnx", str(out), "--exporter", "torchscript"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert out.is_file() and report["max_rel_diff"] <= 1e-4


def test_gallery_add_search_survives_restart(tiny_run, crops, tmp_path, capsys):
    gallery = tmp_path / "gallery"
    assert main(["gallery", "add", str(gallery), str(crops), "--model", str(tiny_run), "--quiet"]) == 0
    assert "4 entries, 2 identities" in capsys.readouterr().out
    query = sorted(crops.glob("id1/*.png"))[0]
    assert main(["gallery", "search", str(gallery), str(query), "--model", str(tiny_run), "-k", "2", "--json"]) == 0
    (result,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # one JSON line per probe
    assert result["matches"][0]["identity"] == "id1"
    assert result["matches"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [m["identity"] for m in result["matches"]] == ["id1", "id0"]
    assert main(["gallery", "remove", str(gallery), "id1"]) == 0
    assert main(["gallery", "info", str(gallery)]) == 0
    assert main(["gallery", "search", str(tmp_path / "none"), str(query), "--model", str(tiny_run)]) == 2


def test_export_command_checks_given_aligned_crops(tiny_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    folder = tmp_path / "aligned"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    out = tmp_path / "model.onnx"
    assert main(["export", str(tiny_run), "--onnx", str(out), "--exporter", "torchscript",
                 "--check-images", str(folder), "--check-count", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checked_batches"][-1] == 2
    Image.fromarray(np.zeros((100, 90, 3), np.uint8)).save(folder / "odd.png")
    assert main(["export", str(tiny_run), "--onnx", str(out), "--check-images", str(folder)]) == 2
    assert "one size" in capsys.readouterr().err
    assert main(["export", str(tiny_run), "--onnx", str(out), "--check-images", str(folder), "--check-count", "0"]) == 2
    assert "--check-count" in capsys.readouterr().err
