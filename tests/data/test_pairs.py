"""Pair lists: LFW pairs.txt (View 2) and OpenSphere 'label path0 path1' files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from facesphere.data.pairs import (
    PairList,
    contiguous_folds,
    open_pair_set,
    read_lfw_pairs,
    read_pair_list,
)
from facesphere.data.verify import verify_dataset
from facesphere.errors import DataError
from tests.helpers import DATA

LFW = DATA / "lfw"


def _touch(root: Path, rel: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"\xff\xd8\xff")


@pytest.fixture
def mini_lfw(tmp_path):
    """2 folds x 1 pair per class: (same, different) x 2."""
    root = tmp_path / "images"
    for rel in ["A/A_0001.jpg", "A/A_0002.jpg", "B/B_0001.jpg", "C/C_0003.jpg", "C/C_0012.jpg", "D/D_0001.jpg"]:
        _touch(root, rel)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2\t1\nA\t1\t2\nA\t1\tB\t1\nC\t3\t12\n\nB 1 D 1\n")
    return pairs, root


def test_lfw_format(mini_lfw):
    pairs, root = mini_lfw
    pl = read_lfw_pairs(pairs, root)
    assert len(pl) == 4 and pl.num_folds == 2
    assert pl.paths1[0] == os.path.join(root, "A", "A_0001.jpg")
    assert pl.paths2[0] == os.path.join(root, "A", "A_0002.jpg")
    assert pl.paths2[1] == os.path.join(root, "B", "B_0001.jpg")
    assert pl.paths2[2] == os.path.join(root, "C", "C_0012.jpg")
    assert pl.issame.dtype == np.bool_ and pl.issame.tolist() == [True, False, True, False]
    assert pl.folds.dtype == np.int64 and pl.folds.tolist() == [0, 0, 1, 1]

    paths, i1, i2 = pl.unique_paths()
    assert paths == sorted(set(paths)) and len(paths) == 6
    assert [paths[i] for i in i1] == pl.paths1 and [paths[i] for i in i2] == pl.paths2
    assert i1.dtype == i2.dtype == np.int64

    pl = read_lfw_pairs(pairs, root, ext=".png", check_files=False)
    assert pl.paths1[0].endswith("A_0001.png")


def test_lfw_missing_file(mini_lfw):
    pairs, root = mini_lfw
    os.remove(root / "C" / "C_0012.jpg")
    with pytest.raises(DataError) as e:
        read_lfw_pairs(pairs, root)
    msg = str(e.value)
    assert str(pairs) in msg and "line 4" in msg and os.path.join(str(root), "C", "C_0012.jpg") in msg


@pytest.mark.parametrize(
    "text, match",
    [
        ("10 300 7\n", r"line 1: expected the header"),
        ("ten\n", r"line 1: expected the header"),
        ("", r"empty pairs file"),
        ("1 1\nA 1 2\nA 1 B\n", r"line 3: expected 'name i j'"),
        ("1 1\nA 1 x\nA 1 B 1\n", r"line 2: expected 'name i j'"),
        ("1 1\nA 0 1\nA 1 B 1\n", r"line 2: .*positive image numbers"),
        ("1 1\nA 1 2 3 4 5\nA 1 B 1\n", r"line 2:"),
        ("2 1\nA 1 2\nA 1 B 1\n", r"promises 2 folds x 2 x 1 = 4 pairs, but the file has 2"),
    ],
)
def test_lfw_malformed(tmp_path, text, match):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(text)
    with pytest.raises(DataError, match=match) as e:
        read_lfw_pairs(pairs, tmp_path, check_files=False)
    assert str(pairs) in str(e.value)


def test_lfw_view1_header(tmp_path):
    pairs = tmp_path / "pairsDevTest.txt"
    pairs.write_text("2\nA 1 2\nB 1 3\nA 1 B 1\nB 2 C 1\n")
    pl = read_lfw_pairs(pairs, tmp_path, check_files=False)
    assert pl.issame.tolist() == [True, True, False, False] and pl.folds.tolist() == [0, 0, 0, 0]


@pytest.mark.skipif(not (LFW / "pairs.txt").is_file(), reason="shared LFW data not present")
def test_real_lfw_view2():
    pl = read_lfw_pairs(LFW / "pairs.txt", LFW / "images")  # checks that every file exists
    assert len(pl) == 6000
    assert pl.num_folds == 10 and np.bincount(pl.folds).tolist() == [600] * 10
    assert int(pl.issame.sum()) == 3000
    for f in range(10):
        block = pl.issame[pl.folds == f]
        assert block[:300].all() and not block[300:].any()
    paths, i1, i2 = pl.unique_paths()
    assert len(paths) == 7701
    assert all(os.path.isfile(p) for p in paths[:50])


def test_opensphere_pair_list(tmp_path):
    for rel in ["x/1.jpg", "x/2.jpg", "y/1.jpg"]:
        _touch(tmp_path, rel)
    ann = tmp_path / "ann.txt"
    ann.write_text("# label path0 path1\n1 x/1.jpg x/2.jpg\n0 x/1.jpg y/1.jpg\n\n0 x/2.jpg y/1.jpg\n")
    pl = read_pair_list(ann, tmp_path)
    assert pl.paths1 == [os.path.join(tmp_path, "x/1.jpg"), os.path.join(tmp_path, "x/1.jpg"),
                         os.path.join(tmp_path, "x/2.jpg")]
    assert pl.issame.tolist() == [True, False, False]
    assert pl.folds.tolist() == [0, 1, 2]  # 10 folds requested, 3 pairs: one pair per fold
    assert read_pair_list(ann, tmp_path, num_folds=1).folds.tolist() == [0, 0, 0]

    ann.write_text("1 x/1.jpg x/2.jpg\n2 x/1.jpg y/1.jpg\n")
    with pytest.raises(DataError, match=r"ann\.txt: line 2: expected 'label path0 path1'"):
        read_pair_list(ann, tmp_path)
    ann.write_text("1 x/1.jpg\n")
    with pytest.raises(DataError, match="line 1"):
        read_pair_list(ann, tmp_path)
    ann.write_text("1 x/1.jpg z/9.jpg\n")
    with pytest.raises(DataError) as e:
        read_pair_list(ann, tmp_path)
    assert str(ann) in str(e.value) and "line 1" in str(e.value) and "z/9.jpg" in str(e.value)
    assert len(read_pair_list(ann, tmp_path, check_files=False)) == 1
    ann.write_text("\n")
    with pytest.raises(DataError, match="no pairs found"):
        read_pair_list(ann)


def test_contiguous_folds_and_pairlist_checks():
    assert contiguous_folds(6000, 10).tolist() == np.repeat(np.arange(10), 600).tolist()
    f = contiguous_folds(25, 10)
    assert f[0] == 0 and f[-1] == 9 and np.all(np.diff(f) >= 0) and set(np.bincount(f)) <= {2, 3}
    assert contiguous_folds(0, 10).size == 0
    with pytest.raises(ValueError, match="differ in length"):
        PairList(["a"], [], [True], [0])


# ---------------------------------------------------------------------------------------------------------------
# names are not paths (issue 13)


@pytest.mark.parametrize("name", ["../x", "../../x", "..", "A/../../x", "/abs/x"])
def test_lfw_names_never_lead_outside_the_images_folder(tmp_path, name):
    lfw = tmp_path / "lfw"
    root = lfw / "images"
    for rel in ["A/A_0001.jpg", "A/A_0002.jpg", "B/B_0001.jpg"]:
        _touch(root, rel)
    for outside in (lfw / "x_0001.jpg", tmp_path / "x_0001.jpg", lfw / "images_0001.jpg"):
        outside.write_bytes(b"secret")  # where the names would lead
    pairs = lfw / "pairs.txt"
    pairs.write_text(f"1 1\nA 1 2\n{name} 1 B 1\n")
    with pytest.raises(DataError) as e:
        read_lfw_pairs(pairs, root)
    assert str(e.value).startswith(f"{pairs}: line 3: {name!r} is not a person's name")
    with pytest.raises(DataError, match="is not a person's name"):
        open_pair_set(f"lfw:{lfw}")
    report = verify_dataset(f"lfw:{lfw}", progress=False)
    assert any(item == f"{pairs}:3" and "not a person's name" in problem for item, problem in report.bad)
    assert not any("secret" in problem or "x_0001" in item for item, problem in report.bad)


def test_lfw_images_reached_through_a_symlink_out_of_the_folder_are_refused(tmp_path):
    from PIL import Image

    root = tmp_path / "lfw" / "images"
    for rel in ["A/A_0001.jpg", "A/A_0002.jpg"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(root / rel)
    _touch(tmp_path / "elsewhere", "B_0001.jpg")
    (root / "B").symlink_to(tmp_path / "elsewhere")
    pairs = tmp_path / "lfw" / "pairs.txt"
    pairs.write_text("1 1\nA 1 2\nA 1 B 1\n")
    with pytest.raises(DataError, match=r"pairs\.txt: line 3: the image 'B/B_0001\.jpg' leads to .*elsewhere"):
        read_lfw_pairs(pairs, root)
    report = verify_dataset(f"lfw:{tmp_path / 'lfw'}", progress=False)
    assert [item for item, _ in report.bad] == [f"{pairs}:3"] and report.total == 2
