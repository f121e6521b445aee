"""Datasets (folder, list, RecordIO), specs, and the bad-sample markers of a batch."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch

from facesphere.data.datasets import (
    BadSample,
    Batch,
    ImageFolderDataset,
    ListFileDataset,
    RecordIODataset,
    build_dataset,
    collate_skip_bad,
)
from facesphere.data.recordio import pack_folder
from facesphere.data.specs import detect_format
from facesphere.errors import DataError, UnknownNameError

H, W = 20, 16


def face(seed: int, h: int = H, w: int = W) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 12 + seed * 7, y * 9 + seed * 3, (x + y) * 5], axis=2) % 256
    return np.clip(base + rng.integers(0, 10, size=base.shape), 0, 255).astype(np.uint8)


def save(path, arr: np.ndarray, fmt: str | None = None, **kw) -> None:
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path, fmt, **kw)


def jpeg_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=92)
    return buf.getvalue()


@pytest.fixture
def tiny(tmp_path):
    """root/{bob: 2 jpg, alice: png + pgm, carl: empty} + a hidden file."""
    root = tmp_path / "faces"
    save(str(root / "bob" / "b2.jpg"), face(2))
    save(str(root / "bob" / "b1.jpg"), face(1))
    save(str(root / "alice" / "a1.png"), face(3))
    save(str(root / "alice" / "a2.pgm"), face(4)[:, :, 0], "PPM")
    (root / "carl").mkdir()
    (root / "bob" / ".DS_Store").write_bytes(b"junk")
    (root / "bob" / "notes.txt").write_text("not an image")
    return root


# ---- folder -------------------------------------------------------------------------------------------------------


def test_folder_numbering_and_items(tiny):
    ds = ImageFolderDataset(tiny)
    assert ds.classes == ["alice", "bob"] and ds.num_classes == 2
    assert [os.path.basename(p) for p in ds.paths] == ["a1.png", "a2.pgm", "b1.jpg", "b2.jpg"]
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [0, 0, 1, 1]
    assert len(ds) == 4
    for i in range(4):
        x, y = ds[i]
        assert x.shape == (H, W, 3) and x.dtype == np.uint8 and isinstance(y, int) and y == ds.labels[i]
    x, _ = ds[0]
    assert np.array_equal(x, face(3))  # PNG is lossless
    grey, _ = ds[1]
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    assert ds.source(2).endswith(os.path.join("bob", "b1.jpg"))
    with pytest.raises(IndexError):
        ds[4]


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="nope: image folder not found"):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no images found"):
        ImageFolderDataset(tmp_path / "empty")
    flat = tmp_path / "flat"
    save(str(flat / "x.jpg"), face(0))
    with pytest.raises(DataError, match="no identity sub-folders"):
        ImageFolderDataset(flat)
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(DataError, match="is a file"):
        ImageFolderDataset(f)


def test_folder_expected_size(tiny):
    ds = ImageFolderDataset(tiny, expected_size=(112, 112))
    with pytest.raises(DataError, match=r"a1\.png: image is 20x16 \(HxW\), expected 112x112"):
        ds[0]


# ---- list files ---------------------------------------------------------------------------------------------------


def test_list_file_names_and_ints(tiny):
    lst = tiny / "train.txt"
    lst.write_text("# comment\nbob/b1.jpg  bob\n\nalice/a1.png alice\nbob/b2.jpg bob\n")
    ds = ListFileDataset(lst)
    assert ds.classes == ["alice", "bob"] and ds.labels.tolist() == [1, 0, 1]
    assert ds[1][1] == 0 and ds[1][0].shape == (H, W, 3)
    ints = tiny / "ints.txt"
    ints.write_text("bob/b1.jpg 5\nalice/a1.png 2\n")
    di = ListFileDataset(ints)
    assert di.labels.tolist() == [5, 2] and di.num_classes == 6
    # paths relative to an explicit root; spaces inside paths survive
    save(str(tiny / "with space" / "x y.jpg"), face(9))
    other = tiny.parent / "lists" / "l.txt"
    other.parent.mkdir()
    other.write_text("with space/x y.jpg 0\n")
    assert len(ListFileDataset(other, root=tiny)) == 1 and ListFileDataset(other, root=tiny)[0][1] == 0


def test_list_file_malformed_line_names_line(tiny):
    lst = tiny / "bad.txt"
    lst.write_text("bob/b1.jpg 0\nalice/a1.png 1\njust_a_path_without_label\n")
    with pytest.raises(DataError, match=r"bad\.txt:3: expected 'relative/path label'"):
        ListFileDataset(lst)
    neg = tiny / "neg.txt"
    neg.write_text("bob/b1.jpg 0\nalice/a1.png -2\n")
    with pytest.raises(DataError, match=r"neg\.txt:2: label -2 is negative"):
        ListFileDataset(neg)
    empty = tiny / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(DataError, match="no entries"):
        ListFileDataset(empty)
    with pytest.raises(DataError, match="list file not found"):
        ListFileDataset(tiny / "missing.txt")


def test_list_file_missing_image_names_line(tiny):
    lst = tiny / "l.txt"
    lst.write_text("bob/b1.jpg 0\nbob/gone.jpg 0\n")
    ds = ListFileDataset(lst)
    with pytest.raises(DataError, match=r"gone\.jpg: no such image file \(listed at .*l\.txt:2\)"):
        ds[1]


def test_mxnet_lst_format(tiny):
    lst = tiny / "train.lst"
    lst.write_text("0\t1.000000\tbob/b1.jpg\n1\t0.000000\talice/a1.png\n")
    ds = ListFileDataset(lst)
    assert ds.format == "mxnet-lst" and ds.labels.tolist() == [1, 0]
    assert ds[0][0].shape == (H, W, 3)


# ---- RecordIO -----------------------------------------------------------------------------------------------------


def test_recordio_matches_folder(tiny, tmp_path):
    pack_folder(str(tiny), str(tmp_path / "rec" / "train"), progress=False)
    folder = ImageFolderDataset(tiny)
    rec = RecordIODataset(tmp_path / "rec" / "train")
    assert len(rec) == len(folder) and rec.num_classes == 2
    assert rec.labels.tolist() == folder.labels.tolist()
    assert rec.classes == ["alice", "bob"]
    for i in range(len(rec)):
        a, la = rec[i]
        b, lb = folder[i]
        assert la == lb and np.array_equal(a, b)  # bytes are copied verbatim
    assert "record key 1" in rec.source(0)
    for spec in (f"rec:{tmp_path / 'rec' / 'train'}", str(tmp_path / "rec" / "train.rec"), str(tmp_path / "rec")):
        assert isinstance(build_dataset(spec), RecordIODataset)


# ---- specs --------------------------------------------------------------------------------------------------------


def test_build_dataset_specs(tiny):
    assert isinstance(build_dataset(f"folder:{tiny}"), ImageFolderDataset)
    assert isinstance(build_dataset(str(tiny)), ImageFolderDataset)
    lst = tiny / "train.txt"
    lst.write_text("bob/b1.jpg 0\n")
    assert isinstance(build_dataset(f"list:{lst}"), ListFileDataset)
    assert isinstance(build_dataset(str(lst)), ListFileDataset)
    assert detect_format(str(tiny)) == ("folder", str(tiny))
    with pytest.raises(UnknownNameError) as info:
        build_dataset(f"zip:{tiny}")
    assert "folder:DIR" in str(info.value) and "list:FILE" in str(info.value) and "rec:PREFIX" in str(info.value)
    with pytest.raises(DataError, match="no such file or folder"):
        build_dataset(str(tiny / "nothing_here"))
    weird = tiny / "data.xyz"
    weird.write_text("?")
    with pytest.raises(DataError, match="cannot tell the dataset format"):
        build_dataset(str(weird))


# ---- bad samples --------------------------------------------------------------------------------------------------


@pytest.fixture
def with_bad(tmp_path):
    """12 good images in 3 classes plus a corrupt and a truncated JPEG."""
    root = tmp_path / "faces"
    for c in range(3):
        for k in range(4):
            save(str(root / f"id{c}" / f"{k}.jpg"), face(10 * c + k))
    (root / "id1" / "zz_corrupt.jpg").write_bytes(b"not a jpeg" * 50)
    data = jpeg_bytes(face(99))
    (root / "id2" / "zz_truncated.jpg").write_bytes(data[: len(data) // 2])
    return root


def test_collate_skip_bad_unit():
    good = [(torch.zeros(3, 2, 2), 1), (torch.ones(3, 2, 2), 2)]
    out = collate_skip_bad([good[0], BadSample(5, "x.jpg", "bad"), None, good[1]])
    assert isinstance(out, Batch) and out.num_bad == 2
    assert out.images.shape == (2, 3, 2, 2) and out.labels.tolist() == [1, 2] and out.labels.dtype == torch.int64
    images, labels, num_bad = collate_skip_bad([BadSample(0, "a", "m")])
    assert num_bad == 1 and images.numel() == 0 and labels.numel() == 0
