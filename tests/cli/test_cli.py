"""The command line: commands call the library, user errors print a message (no traceback) and exit non-zero."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from facesphere.cli import main


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"person_{c}").mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)).save(root / f"person_{c}" / f"{i}.jpg")
    return root


def test_list_prints_heads_and_backbones(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "sphereface_r" in out and "iresnet50" in out and "options:" in out


def test_pack_unpack_verify_round_trip(tmp_path, capsys):
    src = _folder(tmp_path / "images")
    assert main(["data", "pack", str(src), str(tmp_path / "rec" / "train"), "--quiet"]) == 0
    assert (tmp_path / "rec" / "train.rec").is_file() and (tmp_path / "rec" / "property").is_file()
    assert main(["data", "verify", str(tmp_path / "rec" / "train.rec"), "--quiet"]) == 0
    assert main(["data", "unpack", str(tmp_path / "rec" / "train.rec"), str(tmp_path / "out"), "--quiet"]) == 0
    unpacked = sorted(p.read_bytes() for p in (tmp_path / "out").rglob("*.jpg"))
    original = sorted(p.read_bytes() for p in src.rglob("*.jpg"))
    assert unpacked == original


def test_verify_reports_bad_items_and_exits_non_zero(tmp_path, capsys):
    src = _folder(tmp_path / "images")
    (src / "person_0" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    assert main(["data", "verify", str(src), "--quiet"]) == 1
    assert "broken.jpg" in capsys.readouterr().out


def test_user_errors_are_one_line_messages(tmp_path):
    result = subprocess.run([sys.executable, "-m", "facesphere.cli", "train", "--head.nonsense", "1"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "facesphere: error:" in result.stderr and "nonsense" in result.stderr
    assert "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "facesphere.cli", "data", "unpack", str(tmp_path / "missing.rec"),
                             str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2 and "missing" in result.stderr and "Traceback" not in result.stderr


def test_synth_writes_an_image_folder(tmp_path):
    assert main(["data", "synth", "--out", str(tmp_path / "synth"), "--identities", "3",
                 "--images-per-identity", "2", "--quiet"]) == 0
    folders = sorted(p for p in (tmp_path / "synth").iterdir() if p.is_dir())
    assert len(folders) == 3 and all(len(list(f.glob("*.jpg"))) == 2 for f in folders)
