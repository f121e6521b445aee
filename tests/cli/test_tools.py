"""`facesphere clean` and `facesphere invert` end to end on the tiny sub-center run shared with test_cleaning."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from facesphere.cli import main
from tests.workflows.test_clean import arcface_run, noisy_folder, subcenter_run


def test_clean_command_writes_the_cleaned_folder_and_report(tmp_path, capsys):
    out = tmp_path / "cleaned"
    code = main(["clean", str(subcenter_run()), "--data", f"folder:{noisy_folder()}", "--out", str(out), "--quiet",
                 "--threshold", "80", "--batch-size", "50"])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["threshold_deg"] == 80.0 and printed["num_dropped"] == report["num_dropped"]
    assert printed["output"] == f"folder:{out}"
    assert all(d["angle_deg"] >= 80.0 for d in report["dropped"])
    kept_files = [p for p in out.rglob("*.jpg")]
    assert len(kept_files) == report["num_kept"] == 288 - report["num_dropped"]
    with Image.open(out / "angles.png") as im:
        assert im.size[0] > 300
    # the default data is the run's own training set: same decisions
    again = tmp_path / "again"
    assert main(["clean", str(subcenter_run()), "--out", str(again), "--quiet", "--threshold", "80"]) == 0
    capsys.readouterr()
    assert json.loads((again / "report.json").read_text())["dropped"] == report["dropped"]


def test_clean_command_errors(tmp_path, capsys):
    assert main(["clean", str(arcface_run()), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "subcenter_arcface and K >= 2" in capsys.readouterr().err
    assert main(["clean", str(tmp_path / "missing"), "--out", str(tmp_path / "y"), "--quiet"]) == 2
    assert "facesphere: error:" in capsys.readouterr().err


def test_invert_command_embedding_and_image(tmp_path, capsys):
    from facesphere.data.synthetic import (
        EVAL_IDENTITY_OFFSET,
        SyntheticConfig,
        SyntheticFaces,
    )

    face = SyntheticFaces(SyntheticConfig(seed=0, difficulty=0.5)).render(EVAL_IDENTITY_OFFSET + 1, 0)
    Image.fromarray(face).save(tmp_path / "face.png")
    out = tmp_path / "from_image"
    code = main(["invert", str(subcenter_run()), "--image", str(tmp_path / "face.png"), "--out", str(out),
                 "--steps", "30", "--num-images", "2", "--quiet", "--seed", "1"])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 30 and metrics["num_images"] == 2 and metrics["kind"] == "image"
    assert printed["identity_cosine"]["final"] == metrics["final_uint8"]["cosine"] > metrics["initial"]["cosine"]
    assert set(metrics["initial"]) >= {"id_loss", "bn_loss", "cosine"}
    with Image.open(out / "grid.png") as grid:  # the target face, then 2 synthesised faces, 2-pixel gaps
        assert grid.size == (3 * 112 + 4 * 2, 112 + 2 * 2)
    assert (out / "target.png").exists() and (out / "face_01.png").exists()

    # the embedding of the saved face as a .npy target gives the same optimisation (same seed)
    np.save(tmp_path / "e.npy", _embedding_of(face)[None])
    out2 = tmp_path / "from_embedding"
    assert main(["invert", str(subcenter_run()), "--embedding", str(tmp_path / "e.npy"), "--out", str(out2),
                 "--steps", "30", "--num-images", "2", "--quiet", "--seed", "1"]) == 0
    capsys.readouterr()
    metrics2 = json.loads((out2 / "metrics.json").read_text())
    assert metrics2["final_uint8"]["cosine"] == pytest.approx(metrics["final_uint8"]["cosine"], abs=1e-4)
    with Image.open(out2 / "grid.png") as grid:
        assert grid.size == (2 * 112 + 3 * 2, 112 + 2 * 2)


def _embedding_of(face: np.ndarray) -> np.ndarray:
    import torch

    from facesphere.run import load_run

    _, backbone, _, _ = load_run(subcenter_run())
    x = torch.from_numpy((face[None].astype(np.float32) - 127.5) / 127.5).permute(0, 3, 1, 2)
    with torch.no_grad():
        return backbone(x)[0].numpy()


def test_invert_command_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):  # no target: argparse error
        main(["invert", str(subcenter_run()), "--out", str(tmp_path / "a")])
    capsys.readouterr()
    np.save(tmp_path / "bad.npy", np.ones(5, dtype=np.float32))
    assert main(["invert", str(subcenter_run()), "--embedding", str(tmp_path / "bad.npy"), "--out",
                 str(tmp_path / "b"), "--quiet"]) == 2
    assert "expected an embedding of shape (64,)" in capsys.readouterr().err
    assert main(["invert", str(subcenter_run()), "--class", "24", "--out", str(tmp_path / "c"), "--quiet"]) == 2
    assert "[0, 23]" in capsys.readouterr().err
    assert main(["invert", str(subcenter_run()), "--class", "0", "--steps", "0", "--out", str(tmp_path / "d"),
                 "--quiet"]) == 2
    assert "--steps must be an integer >= 1" in capsys.readouterr().err
    assert main(["invert", str(subcenter_run()), "--embedding", str(tmp_path / "none.npy"), "--out",
                 str(tmp_path / "e"), "--quiet"]) == 2
    assert "not found" in capsys.readouterr().err
