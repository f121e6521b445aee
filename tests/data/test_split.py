"""facesphere data split: whole groups held out, folds that no identity or group crosses, pairs read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesphere.data.pairs import read_pair_list
from facesphere.data.split import make_heldout_split
from facesphere.errors import DataError, InvalidOptionError


@pytest.fixture
def families(tmp_path):
    """40 families F00..F39 of 3 members, 4 images each; a 1-image member in every family."""
    root = tmp_path / "faces"
    pixel = np.zeros((8, 8, 3), np.uint8)
    for f in range(40):
        for m in range(3):
            name = f"F{f:02d}_MID{m}"
            (root / name).mkdir(parents=True)
            for k in range(4 if m < 2 else 1):
                Image.fromarray(pixel).save(root / name / f"{k}.png")
    return root


def _identity(path: str) -> str:
    return Path(path).parent.name


def test_groups_held_out_whole_and_folds_disjoint(families, tmp_path):
    overlap = tmp_path / "overlap.txt"
    overlap.write_text("F00_MID0\nF01_MID1\n")
    summary = make_heldout_split(f"folder:{families}", tmp_path / "split", exclude=[str(overlap)], fraction=0.25,
                                 group=r"^(F\d+)_", folds=5, pairs_per_fold=8, seed=3)
    out = tmp_path / "split"
    held = (out / "heldout_identities.txt").read_text().split()
    groups = {name.split("_")[0] for name in held}
    assert all(f"{g}_MID{m}" in held or f"{g}_MID{m}" in ("F00_MID0", "F01_MID1") for g in groups for m in range(3))
    assert "F00_MID0" not in held and summary["heldout_identities"] == len(held)
    assert summary["excluded_by_lists"] == 2
    pairs = read_pair_list(out / "heldout_pairs.txt", num_folds=5)
    assert len(pairs) == 40 and pairs.num_folds == 5
    fold_identities = []
    for k in range(5):
        rows = np.flatnonzero(pairs.folds == k)
        assert pairs.issame[rows].sum() == 4  # half genuine
        names = {_identity(p) for r in rows for p in (pairs.paths1[r], pairs.paths2[r])}
        fold_identities.append(names)
        for r in rows:
            a, b = _identity(pairs.paths1[r]), _identity(pairs.paths2[r])
            assert (a == b) == bool(pairs.issame[r]) and a in held and b in held
            assert pairs.paths1[r] != pairs.paths2[r]
    for i in range(5):
        for j in range(i + 1, 5):
            assert not fold_identities[i] & fold_identities[j]
            assert not {n.split("_")[0] for n in fold_identities[i]} & {n.split("_")[0] for n in fold_identities[j]}
    saved = json.loads((out / "summary.json").read_text())
    assert saved["training_identities"] + saved["heldout_identities"] == saved["identities"] == 118
    assert any(s["impostor_same_group"] > 0 for s in saved["fold_stats"])


def test_split_errors(families, tmp_path):
    with pytest.raises(InvalidOptionError, match="--fraction"):
        make_heldout_split(f"folder:{families}", tmp_path / "s", fraction=1.5)
    with pytest.raises(InvalidOptionError, match="capture group"):
        make_heldout_split(f"folder:{families}", tmp_path / "s", group="F")
    with pytest.raises(DataError, match="can make only"):
        make_heldout_split(f"folder:{families}", tmp_path / "s", fraction=0.05, pairs_per_fold=400)
    with pytest.raises(DataError, match="list of identity names not found"):
        make_heldout_split(f"folder:{families}", tmp_path / "s", exclude=[str(tmp_path / "missing.txt")])
