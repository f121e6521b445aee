"""verify_dataset finds every planted bad item, in every format, without crashing."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest

from facesphere.data.recordio import pack_folder
from facesphere.data.verify import VerifyReport, verify_dataset
from facesphere.errors import DataError, UnknownNameError
from tests.helpers import DATA

S = 24  # planted images are S x S


def img(seed: int, h: int = S, w: int = S) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 9 + seed, y * 7, (x * y) % 200], axis=2) % 256
    return np.clip(base + rng.integers(0, 6, size=base.shape), 0, 255).astype(np.uint8)


def encode(arr: np.ndarray, fmt: str = "JPEG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def write(path, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


@pytest.fixture
def planted(tmp_path):
    """A folder with 9 good images and 3 bad ones: corrupt JPEG, truncated JPEG, wrong-size PNG."""
    root = tmp_path / "faces"
    for c in range(3):
        for k in range(3):
            write(str(root / f"id{c}" / f"{k}.jpg"), encode(img(c * 10 + k)))
    bad = {
        str(root / "id0" / "corrupt.jpg"): b"\xff\xd8\xff\xe0" + b"garbage" * 40,
        str(root / "id1" / "truncated.jpg"): encode(img(77))[:-60],
        str(root / "id2" / "big.png"): encode(img(78, 40, 30), "PNG"),
    }
    for p, data in bad.items():
        write(p, data)
    (root / "empty_identity").mkdir()
    (root / "id0" / "readme.txt").write_text("not an image")
    return root, bad


def bad_items(report: VerifyReport) -> set[str]:
    return {item for item, _ in report.bad}


def test_folder_finds_every_bad_file(planted):
    root, bad = planted
    report = verify_dataset(str(root), expected_size=(S, S), progress=False)
    assert report.kind == "folder" and report.total == 12 and report.num_classes == 3
    assert not report.ok
    assert bad_items(report) == set(bad)
    problems = dict(report.bad)
    assert "cannot decode image" in problems[str(root / "id0" / "corrupt.jpg")]
    assert "truncated" in problems[str(root / "id1" / "truncated.jpg")]
    assert "40x30" in problems[str(root / "id2" / "big.png")] and f"{S}x{S}" in problems[str(root / "id2" / "big.png")]
    assert report.sizes[f"{S}x{S}"] == 9 and report.sizes["40x30"] == 1
    assert any("empty_identity" in n for n in report.notes)
    table = report.format_table()
    assert "FAILED: 3 bad item(s)" in table
    for p in bad:
        assert p in table
    d = report.to_dict()
    assert d["num_bad"] == 3 and d["ok"] is False
    # without an expected size the differently sized image is fine
    assert bad_items(verify_dataset(f"folder:{root}", progress=False)) == set(bad) - {str(root / "id2" / "big.png")}


def test_parallel_verify_matches(planted):
    root, bad = planted
    one = verify_dataset(str(root), expected_size=(S, S), progress=False, workers=1)
    two = verify_dataset(str(root), expected_size=(S, S), progress=False, workers=2, chunk_size=2)
    assert one.bad == two.bad and one.total == two.total and one.sizes == two.sizes


def test_clean_folder_ok(tmp_path):
    for k in range(3):
        write(str(tmp_path / "a" / f"{k}.png"), encode(img(k), "PNG"))
    report = verify_dataset(str(tmp_path), progress=False)
    assert report.ok and report.total == 3 and "OK" in report.format_table()


def test_list_file_bad_lines_and_missing_files(planted):
    root, _ = planted
    lst = root / "train.txt"
    lst.write_text(
        "id0/0.jpg 0\n"
        "id0/corrupt.jpg 0\n"
        "this_line_has_no_label\n"
        "id1/missing.jpg 1\n"
        "id2/0.jpg 2\n"
    )
    report = verify_dataset(f"list:{lst}", progress=False)
    items = bad_items(report)
    assert f"{lst}:3" in items
    assert any("corrupt.jpg" in i and "train.txt:2" in i for i in items)
    assert any("missing.jpg" in i and "train.txt:4" in i for i in items)
    assert len(report.bad) == 3 and report.total == 4
    assert "no such image file" in report.format_table()


def test_recordio_bad_records_and_truncation(tmp_path):
    root = tmp_path / "faces"
    for c in range(2):
        for k in range(4):
            write(str(root / f"c{c}" / f"{k}.jpg"), encode(img(c * 10 + k)))
    write(str(root / "c1" / "z_truncated.jpg"), encode(img(90))[:-50])  # header readable: packs, fails to decode
    write(str(root / "c1" / "z_big.jpg"), encode(img(91, 32, 32)))
    out = tmp_path / "rec"
    pack_folder(str(root), str(out / "train"), progress=False)
    report = verify_dataset(str(out / "train.rec"), expected_size=(S, S), progress=False)
    assert report.kind == "rec" and report.total == 10 and report.num_classes == 2
    problems = dict(report.bad)
    assert len(problems) == 2
    trunc = [p for i, p in problems.items() if "cannot decode" in p]
    big = [p for i, p in problems.items() if "32x32" in p]
    assert len(trunc) == 1 and len(big) == 1
    assert all("record key" in i for i in problems)

    # a record whose framing is damaged is reported by key, the others still checked
    rec = out / "train.rec"
    idx = dict(line.split("\t") for line in (out / "train.idx").read_text().split("\n") if line)
    data = bytearray(rec.read_bytes())
    off = int(idx["3"])
    data[off : off + 4] = b"\0\0\0\0"
    rec.write_bytes(bytes(data))
    report = verify_dataset(f"rec:{out / 'train'}", expected_size=(S, S), progress=False)
    assert any(i.endswith("record key 3") and "magic" in p for i, p in report.bad)
    assert report.total == 10 and len(report.bad) == 3

    # truncated .rec: reported, not raised
    rec.write_bytes(bytes(data[: len(data) // 2]))
    report = verify_dataset(str(out), progress=False)
    assert not report.ok
    assert any("truncated" in p for _, p in report.bad)
    assert str(rec) in report.format_table()


def test_bin_file(tmp_path):
    bins = [encode(img(i)) for i in range(6)]
    bins[3] = bins[3][:100]
    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps((bins, [True, False, True]), protocol=2))
    report = verify_dataset(str(path), progress=False)
    assert report.kind == "bin" and report.total == 6
    assert [i for i, _ in report.bad] == [f"{path} image 3 (pair 1)"]
    bad = tmp_path / "odd.bin"
    bad.write_bytes(pickle.dumps((bins[:5], [True, False, True]), protocol=2))
    report = verify_dataset(f"bin:{bad}", progress=False)
    assert not report.ok and str(bad) in report.bad[0][0]


def test_lfw_pairs_folder(tmp_path):
    lfw = tmp_path / "lfw"
    for name, n in (("Ann_A", 2), ("Bob_B", 1)):
        for k in range(1, n + 1):
            write(str(lfw / "images" / name / f"{name}_{k:04d}.jpg"), encode(img(k)))
    (lfw / "pairs.txt").write_text("1 1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t2\n")
    report = verify_dataset(str(lfw), progress=False)
    assert report.kind == "lfw" and report.total == 3
    assert bad_items(report) == {str(lfw / "images" / "Bob_B" / "Bob_B_0002.jpg")}
    (lfw / "pairs.txt").write_text("1 2\nAnn_A\t1\t2\nAnn_A\tx\n")
    report = verify_dataset(f"pairs:{lfw}", progress=False)
    items = bad_items(report)
    assert f"{lfw / 'pairs.txt'}:3" in items and str(lfw / "pairs.txt") in items  # bad line + count mismatch
    # the same file named directly (pairs:FILE with LFW's numeric header) is read as LFW pairs
    assert bad_items(verify_dataset(f"pairs:{lfw / 'pairs.txt'}", progress=False)) == items


def test_opensphere_pair_list(tmp_path):
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    write(str(a), encode(img(1)))
    write(str(b), b"not an image")
    listing = tmp_path / "pairs.txt"
    listing.write_text(f"1 {a} {a}\n0 {a} {b}\n2 {a}\n")
    report = verify_dataset(f"pairs:{listing}", progress=False)
    assert report.kind == "pairs" and report.total == 2
    assert bad_items(report) == {str(b), f"{listing}:3"}


def test_spec_errors(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        verify_dataset(str(tmp_path / "missing"), progress=False)
    with pytest.raises(UnknownNameError, match="lfw:DIR, pairs:FILE"):
        verify_dataset(f"tar:{tmp_path}", progress=False)


SHARED_ORL = str(DATA / "orl")


@pytest.mark.skipif(not os.path.isdir(SHARED_ORL), reason="shared ORL faces not present")
def test_real_orl_pgm_folder():
    report = verify_dataset(SHARED_ORL, expected_size=(112, 92), progress=False)
    assert report.ok and report.total == 400 and report.num_classes == 40
