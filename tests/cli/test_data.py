"""``facesphere data overlap`` and ``facesphere data split`` from the command line (plumbing and errors; the method is
tested in tests/workflows/test_overlap.py and tests/data/test_split.py)."""

from __future__ import annotations

import json

import pytest

from facesphere.cli import main
from facesphere.data.synthetic import write_synthetic_folder


def test_overlap_and_split_commands(tiny_run, tmp_path, capsys):
    write_synthetic_folder(tmp_path / "train", 12, 4, seed=0, progress=False)
    write_synthetic_folder(tmp_path / "test" / "images", 3, 2, seed=0, progress=False)
    code = main(["data", "overlap", f"folder:{tmp_path / 'train'}", "--against", f"lfw:{tmp_path / 'test'}",
                 "--model", str(tiny_run), "--out", str(tmp_path / "ov"), "--quiet", "--flip", "none"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "overlapping training identities" in printed and "--data.exclude" in printed
    report = json.loads((tmp_path / "ov" / "report.json").read_text())
    assert report["train"]["identities"] == 12 and report["test"]["identities"] == 3
    listed = (tmp_path / "ov" / "overlap.txt").read_text().split()
    assert listed == [p["train"] for p in report["pairs"]]
    code = main(["data", "split", f"folder:{tmp_path / 'train'}", "--out", str(tmp_path / "split"), "--fraction",
                 "0.5", "--folds", "2", "--pairs-per-fold", "4"])
    assert code == 0 and (tmp_path / "split" / "heldout_pairs.txt").is_file()
    assert "heldout_identities" in capsys.readouterr().out


def test_overlap_bad_input_is_one_line(tiny_run, tmp_path, capsys):
    code = main(["data", "overlap", str(tmp_path / "missing"), "--against", f"lfw:{tmp_path}", "--model",
                 str(tiny_run), "--out", str(tmp_path / "ov"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "missing" in err and "Traceback" not in err
    with pytest.raises(SystemExit):  # argparse: a threshold that is neither auto nor a number
        main(["data", "overlap", str(tmp_path), "--against", "x", "--model", str(tiny_run), "--out",
              str(tmp_path / "ov"), "--threshold", "high"])
    assert "expected 'auto' or a cosine" in capsys.readouterr().err
