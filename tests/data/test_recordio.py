"""RecordIO: byte-level compatibility with mxnet's framing, InsightFace layout, folder round trips, bad files."""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import pickle
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesphere.data.recordio import (
    MAGIC,
    RecordIOFaceSet,
    RecordReader,
    RecordWriter,
    detect_image_extension,
    encode_record,
    pack_folder,
    pack_image_record,
    resolve_prefix,
    unpack,
    unpack_image_record,
)
from facesphere.data.verify import verify_dataset
from facesphere.errors import DataError
from tests.helpers import DATA, run_isolated

GLINT = DATA / "glint_sample" / "images"

M = struct.pack("<I", MAGIC)
assert M == b"\x0a\x23\xd7\xce"


def frame(cflag: int, body: bytes, pad: int = 0) -> bytes:
    """One part, written out by hand from the format: magic, lrecord = cflag << 29 | length, body, padding."""
    return b"\x0a\x23\xd7\xce" + struct.pack("<I", (cflag << 29) | len(body)) + body + b"\0" * pad


def jpeg(seed: int, size=(16, 12)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png(seed: int, size=(16, 12)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# framing, compared with bytes built by hand from the format


def test_small_record_bytes_match_the_format(tmp_path):
    assert encode_record(b"abcde") == b"\x0a\x23\xd7\xce" + b"\x05\x00\x00\x00" + b"abcde" + b"\0\0\0"
    assert encode_record(b"abcd") == frame(0, b"abcd")
    assert encode_record(b"") == frame(0, b"")
    rec, idx = tmp_path / "t.rec", tmp_path / "t.idx"
    with RecordWriter(rec, idx) as w:
        assert w.write(0, b"abcde") == 0
        assert w.write(7, b"xy") == 16
    assert rec.read_bytes() == frame(0, b"abcde", 3) + frame(0, b"xy", 2)
    assert idx.read_text() == "0\t0\n7\t16\n"


def test_magic_at_aligned_positions_is_split_like_mxnet():
    # aligned magic in the middle: first part (cflag 1) and last part (cflag 3); the magic itself is dropped
    assert encode_record(b"abcd" + M + b"efg") == frame(1, b"abcd") + frame(3, b"efg", 1)
    # three aligned magics: 1, 2, 2, 3
    p = b"ab12" + M + b"cdef" + M + M + b"z"
    assert encode_record(p) == frame(1, b"ab12") + frame(2, b"cdef") + frame(2, b"") + frame(3, b"z", 3)
    # at the start and at the very end
    assert encode_record(M + b"wxyz") == frame(1, b"") + frame(3, b"wxyz")
    assert encode_record(b"wxyz" + M) == frame(1, b"wxyz") + frame(3, b"")
    assert encode_record(M) == frame(1, b"") + frame(3, b"")


def test_magic_at_unaligned_positions_is_not_split():
    for lead in (1, 2, 3, 5):
        p = b"q" * lead + M + b"tail"
        assert encode_record(p) == frame(0, p, -len(p) % 4)
    # an unaligned occurrence followed by an aligned one: only the aligned one splits
    p = b"x" + M + b"abc" + M + b"!"
    assert encode_record(p) == frame(1, b"x" + M + b"abc") + frame(3, b"!", 3)


@pytest.mark.parametrize("indexed", [True, False])
def test_multipart_round_trip(tmp_path, indexed):
    rng = np.random.default_rng(0)
    payloads = [b"", M, M * 3, b"x" + M, b"ab" + M + b"cd" + M, b"abcd" + M + b"efg" + M + M, b"12345"]
    for n in (1, 7, 64, 1001):
        chunks = []
        for _ in range(n):
            r = rng.random()
            chunks.append(M if r < 0.2 else bytes(rng.integers(0, 256, size=int(rng.integers(0, 9)), dtype=np.uint8)))
        payloads.append(b"".join(chunks))
    rec, idx = tmp_path / "m.rec", tmp_path / "m.idx"
    with RecordWriter(rec, idx) as w:
        for k, p in enumerate(payloads):
            w.write(k, p)
    reader = RecordReader(rec, idx if indexed else None)
    assert [bytes(p) for p in reader] == payloads  # sequential scan
    assert list(reader.keys) == list(range(len(payloads)))
    for k in reversed(range(len(payloads))):  # random access
        assert reader.read(k) == payloads[k]
    assert list(reader.scan_offsets()) == [o for o, _ in reader.scan()]


def test_reader_threads_pickle_and_fork(tmp_path):
    rec, idx = tmp_path / "p.rec", tmp_path / "p.idx"
    payloads = [bytes([k % 251]) * (k * 13 % 97) + (M if k % 3 == 0 else b"") for k in range(200)]
    with RecordWriter(rec, idx) as w:
        for k, p in enumerate(payloads):
            w.write(k, p)
    reader = RecordReader(rec, idx)
    assert reader.read(5) == payloads[5]  # opens the descriptor in this process
    state = pickle.dumps(reader)
    assert b"_fd" in state and reader.path_rec.encode() in state
    clone = pickle.loads(state)
    assert clone._fd is None and clone.read(9) == payloads[9]

    errors = []

    def work(offset):
        try:
            for k in range(offset, 200, 4):
                assert reader.read(k) == payloads[k]
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors

    if "fork" in mp.get_all_start_methods():
        global _INHERITED
        _INHERITED = reader  # reaches the children through fork, open descriptor included
        try:
            with mp.get_context("fork").Pool(2) as pool:
                got = pool.map(_read_in_child, range(0, 200, 17))
        finally:
            _INHERITED = None
        assert got == [(payloads[k], True) for k in range(0, 200, 17)]


_INHERITED = None


def _read_in_child(k):
    data = _INHERITED.read(k)
    return data, _INHERITED._pid == os.getpid()  # re-opened its own descriptor in this process


def test_resolve_prefix(tmp_path):
    assert resolve_prefix("/x/train") == ("/x/train.rec", "/x/train.idx")
    assert resolve_prefix("/x/train.rec") == ("/x/train.rec", "/x/train.idx")
    assert resolve_prefix(Path("/x/train.idx")) == ("/x/train.rec", "/x/train.idx")
    (tmp_path / "train.rec").write_bytes(b"")
    assert resolve_prefix(tmp_path) == (str(tmp_path / "train.rec"), str(tmp_path / "train.idx"))
    other = tmp_path / "o"
    other.mkdir()
    with pytest.raises(DataError, match="exactly one .rec"):
        resolve_prefix(other)


# ---------------------------------------------------------------------------------------------------------------
# image records


def test_image_record_header_bytes():
    img = b"\xff\xd8\xffIMAGE"
    p = pack_image_record(3, img, id=7, id2=9)
    assert p == struct.pack("<I", 0) + struct.pack("<f", 3.0) + struct.pack("<Q", 7) + struct.pack("<Q", 9) + img
    head, label, data = unpack_image_record(p)
    assert (head.flag, head.id, head.id2, label, data) == (0, 7, 9, 3.0, img)
    assert isinstance(label, float)

    p = pack_image_record([5, 2.5, -1], img)
    assert p == struct.pack("<IfQQ", 3, 0.0, 0, 0) + np.array([5, 2.5, -1], "<f4").tobytes() + img
    head, label, data = unpack_image_record(p)
    assert head.flag == 3 and data == img
    assert isinstance(label, np.ndarray) and label.dtype == np.float32
    np.testing.assert_array_equal(label, [5, 2.5, -1])
    assert pack_image_record(np.float32(4), b"") == struct.pack("<IfQQ", 0, 4.0, 0, 0)
    assert pack_image_record(np.array([1, 2]), b"") == struct.pack("<IfQQ", 2, 0, 0, 0) + struct.pack("<2f", 1, 2)

    with pytest.raises(DataError, match="shorter than the 24-byte"):
        unpack_image_record(b"abc", source="somefile.rec: record key 3")
    with pytest.raises(DataError, match="somefile.rec: record key 4: header declares a label array of 5"):
        unpack_image_record(struct.pack("<IfQQ", 5, 0, 0, 0) + b"1234", source="somefile.rec: record key 4")


def test_detect_image_extension():
    assert detect_image_extension(jpeg(0)) == ".jpg"
    assert detect_image_extension(png(0)) == ".png"
    assert detect_image_extension(b"P5\n92 112\n255\n") == ".pgm"
    assert detect_image_extension(b"GIF89a...") == ".gif"
    assert detect_image_extension(b"BM....") == ".bmp"
    assert detect_image_extension(b"RIFF\0\0\0\0WEBPVP8 ") == ".webp"
    assert detect_image_extension(b"hello") == ".dat"


# ---------------------------------------------------------------------------------------------------------------
# InsightFace layout


def _write_insightface(prefix: Path, classes: list[list[bytes]], *, array_labels=False, property_line=None):
    n = sum(len(c) for c in classes)
    a, b = n + 1, n + 1 + len(classes)
    with RecordWriter(f"{prefix}.rec", f"{prefix}.idx") as w:
        w.write(0, pack_image_record([a, b], b""))
        key = 1
        ranges = []
        for cid, imgs in enumerate(classes):
            start = key
            for img in imgs:
                label = [cid, 0.5] if array_labels else float(cid)
                w.write(key, pack_image_record(label, img, id=key))
                key += 1
            ranges.append((start, key))
        for cid, (s, e) in enumerate(ranges):
            w.write(a + cid, pack_image_record([s, e], b""))
    if property_line is not None:
        (prefix.parent / "property").write_text(property_line)
    return a, b


@pytest.mark.parametrize("array_labels", [False, True])
def test_faceset_with_header_and_identity_records(tmp_path, array_labels):
    classes = [[jpeg(1), jpeg(2)], [png(3)], [jpeg(4), jpeg(5) + M + b"tail", jpeg(6)]]
    a, b = _write_insightface(tmp_path / "train", classes, array_labels=array_labels)
    ds = RecordIOFaceSet(tmp_path / "train.rec")
    assert ds.header == (a, b) == (7, 10)
    assert len(ds) == 6
    np.testing.assert_array_equal(ds.keys, [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 2, 2, 2])
    assert ds.labels.dtype == np.int64
    assert ds.num_classes == 3  # from the identity records (no property file)
    assert ds.image_size is None
    np.testing.assert_array_equal(ds.class_ranges, [[1, 3], [3, 4], [4, 7]])
    flat = [img for c in classes for img in c]
    for i in range(len(ds)):
        label, img = ds.read(i)
        assert isinstance(label, int) and label == ds.labels[i]
        assert img == flat[i]
    assert ds[-1][1] == flat[-1]
    with pytest.raises(IndexError):
        ds.read(6)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.read(4) == ds.read(4)


def test_faceset_property_and_prefix_forms(tmp_path):
    _write_insightface(tmp_path / "train", [[jpeg(1)], [jpeg(2)]], property_line="85742,112,112\n")
    for arg in (tmp_path / "train", str(tmp_path / "train.rec"), tmp_path):
        ds = RecordIOFaceSet(arg)
        assert ds.num_classes == 85742 and ds.image_size == (112, 112) and len(ds) == 2
    (tmp_path / "property").write_text("85742;112\n")
    with pytest.raises(DataError, match=r"property: expected 'num_classes,height,width'"):
        RecordIOFaceSet(tmp_path / "train")


def test_faceset_header_without_identity_records(tmp_path):
    imgs = [jpeg(i) for i in range(4)]
    with RecordWriter(tmp_path / "s.rec", tmp_path / "s.idx") as w:
        w.write(0, pack_image_record([5, 5], b""))
        for k, img in enumerate(imgs, 1):
            w.write(k, pack_image_record(float(k % 2 + 3), img))
    ds = RecordIOFaceSet(tmp_path / "s")
    assert ds.header == (5, 5) and ds.class_ranges is None
    np.testing.assert_array_equal(ds.labels, [4, 3, 4, 3])
    assert ds.num_classes == 5  # max label + 1


def test_headerless_faceset(tmp_path):
    imgs = [jpeg(i) for i in range(5)]
    with RecordWriter(tmp_path / "h.rec", tmp_path / "h.idx") as w:
        for k, img in enumerate(imgs):  # key 0 is an ordinary image (flag 0)
            w.write(k, pack_image_record(float([2, 0, 1, 2, 0][k]), img))
    ds = RecordIOFaceSet(tmp_path / "h.rec")
    assert ds.header is None and len(ds) == 5
    np.testing.assert_array_equal(ds.keys, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(ds.labels, [2, 0, 1, 2, 0])
    assert ds.read(0) == (2, imgs[0])
    assert ds.num_classes == 3
    # no .idx: indexed by a scan, keyed 0..n-1 in file order
    os.remove(tmp_path / "h.idx")
    ds = RecordIOFaceSet(tmp_path / "h")
    assert ds.idx_path is None and len(ds) == 5 and ds.read(3) == (2, imgs[3])


def test_headerless_label_arrays_and_sparse_keys(tmp_path):
    imgs = [jpeg(i) for i in range(3)]
    with RecordWriter(tmp_path / "a.rec", tmp_path / "a.idx") as w:
        for k, img, lab in zip([10, 3, 42], imgs, [[1, 9, 9], [0, 1, 1], [7, 0, 0]]):
            w.write(k, pack_image_record(lab, img))
    ds = RecordIOFaceSet(tmp_path / "a")
    np.testing.assert_array_equal(ds.keys, [10, 3, 42])  # .idx order
    np.testing.assert_array_equal(ds.labels, [1, 0, 7])
    assert ds.read(2) == (7, imgs[2])


# ---------------------------------------------------------------------------------------------------------------
# folder <-> RecordIO


def _make_folder(root: Path) -> dict[str, dict[str, bytes]]:
    layout = {
        "bob": {"b.jpg": jpeg(1), "a.jpg": jpeg(2), "c.png": png(3)},
        "alice": {"001.jpg": jpeg(4, size=(20, 20))},
        "carol": {"x.JPG": jpeg(5), "y.jpeg": jpeg(6) + M + b"more" + M},  # magic inside the bytes
    }
    for cls, files in layout.items():
        (root / cls).mkdir(parents=True)
        for name, data in files.items():
            (root / cls / name).write_bytes(data)
    (root / "empty").mkdir()
    (root / ".hidden").mkdir()
    (root / "bob" / "notes.txt").write_text("not an image")
    (root / "README").write_text("top-level file")
    return layout


def test_pack_unpack_round_trip(tmp_path):
    src = tmp_path / "src"
    layout = _make_folder(src)
    summary = pack_folder(src, tmp_path / "out" / "train", progress=False)
    assert summary["num_images"] == 6 and summary["num_classes"] == 3
    assert summary["skipped_empty_folders"] == ["empty"]
    assert summary["image_size"] == (12, 16)
    assert (tmp_path / "out" / "property").read_text() == "3,12,16\n"
    assert (tmp_path / "out" / "train.classes.txt").read_text() == "0\talice\n1\tbob\n2\tcarol\n"
    assert sorted(os.listdir(tmp_path / "out")) == ["property", "train.classes.txt", "train.idx", "train.rec"]

    ds = RecordIOFaceSet(tmp_path / "out" / "train")
    assert ds.header == (7, 10) and ds.num_classes == 3 and ds.image_size == (12, 16)
    np.testing.assert_array_equal(ds.labels, [0, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(ds.class_ranges, [[1, 2], [2, 5], [5, 7]])
    expect = [layout["alice"]["001.jpg"], layout["bob"]["a.jpg"], layout["bob"]["b.jpg"], layout["bob"]["c.png"],
              layout["carol"]["x.JPG"], layout["carol"]["y.jpeg"]]
    assert [ds.read(i)[1] for i in range(6)] == expect

    res = unpack(tmp_path / "out" / "train.rec", tmp_path / "back", progress=False)
    assert res["num_images"] == 6 and res["num_classes"] == 3
    back = tmp_path / "back"
    assert sorted(os.listdir(back)) == ["0", "1", "2"]
    assert sorted(os.listdir(back / "1")) == ["2.jpg", "3.jpg", "4.png"]
    for cid, cls in enumerate(["alice", "bob", "carol"]):
        got = [(back / str(cid) / f).read_bytes() for f in sorted(os.listdir(back / str(cid)))]
        want = [layout[cls][f] for f in sorted(layout[cls])]
        assert got == want  # byte-identical images

    # packing the unpacked folder again gives the same class ids, order and bytes
    pack_folder(back, tmp_path / "again" / "train", progress=False)
    assert (tmp_path / "again" / "train.rec").read_bytes() == (tmp_path / "out" / "train.rec").read_bytes()
    assert (tmp_path / "again" / "train.idx").read_bytes() == (tmp_path / "out" / "train.idx").read_bytes()

    with pytest.raises(DataError, match="not empty"):
        unpack(tmp_path / "out" / "train", back, progress=False)


def test_unpack_pads_names_to_keep_numeric_order(tmp_path):
    src = tmp_path / "src"
    for c in range(12):
        (src / f"id{c:02d}").mkdir(parents=True)
        (src / f"id{c:02d}" / "0.png").write_bytes(png(c))
    pack_folder(src, tmp_path / "r" / "train", progress=False)
    unpack(tmp_path / "r" / "train", tmp_path / "u", progress=False)
    assert sorted(os.listdir(tmp_path / "u")) == [f"{c:02d}" for c in range(12)]
    assert os.listdir(tmp_path / "u" / "03") == ["04.png"]


def test_pack_folder_errors_are_clean(tmp_path):
    with pytest.raises(DataError, match="source folder not found"):
        pack_folder(tmp_path / "nope", tmp_path / "o" / "train", progress=False)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(jpeg(0))
    with pytest.raises(DataError, match="no class folders with images"):
        pack_folder(tmp_path / "flat", tmp_path / "o" / "train", progress=False)
    bad = tmp_path / "bad"
    (bad / "p").mkdir(parents=True)
    (bad / "p" / "0.jpg").write_bytes(jpeg(0))
    (bad / "p" / "1.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match=r"1\.jpg: not a readable image"):
        pack_folder(bad, tmp_path / "o" / "train", progress=False)
    assert not (tmp_path / "o").exists() or os.listdir(tmp_path / "o") == []  # nothing half-written remains


@pytest.mark.skipif(not GLINT.is_dir(), reason="shared glint_sample data not present")
def test_glint_sample_round_trip(tmp_path):
    summary = pack_folder(GLINT, tmp_path / "glint" / "train", progress=False)
    names = sorted(d for d in os.listdir(GLINT) if (GLINT / d).is_dir())
    assert summary["num_classes"] == len(names) == 24
    assert summary["num_images"] == 2668
    assert summary["image_size"] == (112, 112)
    ds = RecordIOFaceSet(tmp_path / "glint" / "train")
    assert len(ds) == 2668 and ds.num_classes == 24 and ds.image_size == (112, 112)
    labels = ds.labels
    assert np.all(np.diff(labels) >= 0) and labels[0] == 0 and labels[-1] == 23
    ranges = ds.class_ranges
    files = [(c, f) for c, n in enumerate(names) for f in sorted(os.listdir(GLINT / n))]
    assert len(files) == 2668
    for c, (s, e) in enumerate(ranges):
        assert np.all(labels[s - 1 : e - 1] == c)
    for i in range(0, 2668, 97):
        c, f = files[i]
        assert ds.read(i) == (c, (GLINT / names[c] / f).read_bytes())
    unpack(tmp_path / "glint" / "train.rec", tmp_path / "back", progress=False)
    for c, n in enumerate(names):
        back = sorted(os.listdir(tmp_path / "back" / f"{c:02d}"))
        orig = sorted(os.listdir(GLINT / n))
        assert len(back) == len(orig)
        for b, o in zip(back, orig):
            assert (tmp_path / "back" / f"{c:02d}" / b).read_bytes() == (GLINT / n / o).read_bytes()


# ---------------------------------------------------------------------------------------------------------------
# malformed files


@pytest.fixture
def small_set(tmp_path):
    _write_insightface(tmp_path / "train", [[jpeg(1), jpeg(2)], [jpeg(3)]])
    return tmp_path / "train"


def test_truncated_rec(small_set):
    rec = Path(f"{small_set}.rec")
    offsets = [int(line.split("\t")[1]) for line in Path(f"{small_set}.idx").read_text().splitlines()]
    # keep key 0, keys 1 and 2 whole; cut key 3 in the middle of its payload
    rec.write_bytes(rec.read_bytes()[: offsets[3] + 40])
    with pytest.raises(DataError) as e:
        RecordIOFaceSet(small_set)  # identity keys 4, 5 now point past the end
    assert str(rec) in str(e.value) and "key 4" in str(e.value) and "past the end" in str(e.value)
    reader = RecordReader(rec)  # no index: a sequential scan reaches the cut
    with pytest.raises(DataError) as e:
        list(reader)
    msg = str(e.value)
    assert str(rec) in msg and f"offset {offsets[3]}" in msg and "truncated" in msg
    # with the .idx trimmed to the records that still start inside the file, reading key 3 fails cleanly
    idx = Path(f"{small_set}.idx")
    idx.write_text("".join(f"{k}\t{o}\n" for k, o in enumerate(offsets[:4])))
    reader = RecordReader(rec, idx)
    assert reader.read(2)
    with pytest.raises(DataError) as e:
        reader.read(3)
    msg = str(e.value)
    assert str(rec) in msg and "key 3" in msg and f"offset {offsets[3]}" in msg and "truncated" in msg


def test_idx_offset_past_end(small_set):
    idx = Path(f"{small_set}.idx")
    idx.write_text(idx.read_text() + "6\t999999\n")
    with pytest.raises(DataError) as e:
        RecordIOFaceSet(small_set)
    msg = str(e.value)
    assert str(idx) in msg and "key 6" in msg and "999999" in msg and "past the end" in msg


def test_bad_magic(small_set):
    rec = Path(f"{small_set}.rec")
    offsets = [int(line.split("\t")[1]) for line in Path(f"{small_set}.idx").read_text().splitlines()]
    data = bytearray(rec.read_bytes())
    data[offsets[2] : offsets[2] + 4] = b"JUNK"
    rec.write_bytes(bytes(data))
    ds = RecordIOFaceSet(small_set)
    assert ds.read(0)[0] == 0
    with pytest.raises(DataError) as e:
        ds.read(1)  # key 2
    msg = str(e.value)
    assert str(rec) in msg and "key 2" in msg and "bad magic" in msg and f"offset {offsets[2]}" in msg
    with pytest.raises(DataError, match="bad magic"):
        ds.labels
    # an .idx that points into the middle of a record
    idx = Path(f"{small_set}.idx")
    idx.write_text("0\t4\n")
    with pytest.raises(DataError, match=r"record key 0 at offset 4: bad magic"):
        RecordIOFaceSet(small_set)


def test_malformed_idx_and_missing_keys(small_set):
    idx = Path(f"{small_set}.idx")
    lines = idx.read_text().splitlines()
    idx.write_text("\n".join(lines[:2] + ["2 oops"] + lines[3:]) + "\n")
    with pytest.raises(DataError) as e:
        RecordIOFaceSet(small_set)
    assert str(idx) in str(e.value) and "line 3" in str(e.value)
    idx.write_text("\n".join(lines[:2] + lines[3:]) + "\n")  # key 2 missing
    with pytest.raises(DataError) as e:
        RecordIOFaceSet(small_set)
    assert "image key 2 is missing" in str(e.value) and str(idx) in str(e.value)
    idx.write_text("\n".join(lines + lines[-1:]) + "\n")
    with pytest.raises(DataError, match="appears more than once"):
        RecordIOFaceSet(small_set)


def test_bad_labels(tmp_path):
    with RecordWriter(tmp_path / "l.rec", tmp_path / "l.idx") as w:
        w.write(0, pack_image_record(1.0, jpeg(0)))
        w.write(1, pack_image_record(2.5, jpeg(1)))
    ds = RecordIOFaceSet(tmp_path / "l")
    with pytest.raises(DataError, match=r"l\.rec: record key 1: label 2\.5 is not a non-negative integer"):
        ds.labels
    with pytest.raises(DataError, match="record key 1"):
        ds.read(1)


def test_not_found(tmp_path):
    with pytest.raises(DataError, match="RecordIO file not found"):
        RecordIOFaceSet(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------------------------
# sizes read from the file, identity records, labels (issue 13)


def _offsets(prefix: Path) -> dict[int, int]:
    return {int(k): int(o) for k, o in (line.split("\t") for line in Path(f"{prefix}.idx").read_text().splitlines())}


def _set_label_float(prefix: Path, key: int, index: int | None, value: float) -> None:
    """Overwrite one float of record ``key``: the header label (``index`` None) or label-array value ``index``."""
    rec = Path(f"{prefix}.rec")
    data = bytearray(rec.read_bytes())
    at = _offsets(prefix)[key] + 8 + (4 if index is None else 24 + 4 * index)
    data[at:at + 4] = struct.pack("<f", value)
    rec.write_bytes(bytes(data))


CHILD_OPEN_REC = r"""
import sys
from facesphere.data.recordio import RecordIOFaceSet
from facesphere.errors import DataError
try:
    ds = RecordIOFaceSet(sys.argv[1])
    print("opened", len(ds), ds.labels.tolist())
except DataError as error:
    print("DataError", error)
"""


def test_one_float_changed_in_the_header_record_is_refused_before_allocating(small_set):
    _set_label_float(small_set, 0, 1, float(1 << 31))  # b = 2**31: "keys 1 .. 2**31 - 1 exist" (16 GiB of keys)
    child = run_isolated(CHILD_OPEN_REC, str(small_set), light=True, memory_mb=600)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.startswith(f"DataError {small_set}.rec: record key 0 header [a, b] = [4, 2147483648]")
    assert "holds only 6 records" in child.stdout


def test_property_claiming_200_million_classes_is_refused_where_the_set_is_opened(small_set, tmp_path):
    from facesphere.data.datasets import build_dataset

    (tmp_path / "property").write_text("200000000,112,112\n")
    for open_set in (RecordIOFaceSet, build_dataset):
        with pytest.raises(DataError, match=r"property: claims 200000000 classes, more than facesphere's limit"):
            open_set(small_set)
    (tmp_path / "property").write_text("2,112,112\n" + "x" * 5000)
    with pytest.raises(DataError, match="expected 'num_classes,height,width'"):
        RecordIOFaceSet(small_set)
    (tmp_path / "property").write_text("1,112,112\n")  # fewer classes than the labels use
    with pytest.raises(DataError, match=r"record key 3: label 1 is out of range \(.*property says 1 classes"):
        RecordIOFaceSet(small_set).labels
    (tmp_path / "list.txt").write_text("a.jpg 0\nb.jpg 199999999999\n")
    with pytest.raises(DataError, match=r"list\.txt:2: label 199999999999 is larger than facesphere's limit"):
        build_dataset(f"list:{tmp_path / 'list.txt'}")


def test_huge_idx_keys_and_offsets_are_data_errors(small_set):
    idx = Path(f"{small_set}.idx")
    good = idx.read_text()
    for line, problem in (("99999999999999999999999\t0", "line 7: key or offset out of range"),
                          ("6\t9223372036854775807", "key 6 points at offset 9223372036854775807, past the end"),
                          ("-99999999999999999999\t-1", "line 7: key or offset out of range")):
        idx.write_text(good + line + "\n")
        with pytest.raises(DataError) as e:
            RecordIOFaceSet(small_set)
        assert str(idx) in str(e.value) and problem in str(e.value)
    idx.write_text("")  # an empty index is not an empty set: the .rec holds records
    with pytest.raises(DataError, match=r"train\.idx: the index lists no records but .*train\.rec holds"):
        RecordIOFaceSet(small_set)
    idx.write_text("".join(good.splitlines(keepends=True)[1:3]))  # keys 1, 2 only: a smaller "headerless" set
    with pytest.raises(DataError, match=r"starts with an InsightFace header record but the index has no key 0"):
        RecordIOFaceSet(small_set)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 2.5, 1e30])
def test_non_finite_or_invalid_identity_records_are_data_errors(small_set, value):
    _set_label_float(small_set, 4, 1, value)  # class 0's [start, end): end
    ds = RecordIOFaceSet(small_set)
    with pytest.raises(DataError, match=r"train\.rec: identity record key 4: \[start, end\) = .* is invalid"):
        ds.class_ranges
    with pytest.raises(DataError, match="identity record key 4"):
        ds.labels
    report = verify_dataset(f"rec:{small_set}", progress=False)  # documented never to raise
    assert not report.ok and any("identity record key 4" in problem for _, problem in report.bad)


def test_a_record_moved_to_another_valid_class_contradicts_the_identity_records(small_set):
    _set_label_float(small_set, 3, None, 0.0)  # key 3 is class 1's only image; now it says class 0
    ds = RecordIOFaceSet(small_set)
    assert ds.read(2)[0] == 0  # the record alone cannot tell
    with pytest.raises(DataError) as e:
        ds.labels
    assert str(e.value) == (f"{small_set}.rec: record key 3 has label 0 but identity record key 5 says keys [3, 4) "
                            "are class 1")
    report = verify_dataset(f"rec:{small_set}", progress=False)
    assert not report.ok and report.bad == [
        (f"{small_set}.rec record key 3", f"{small_set}.rec record key 3: label 0 contradicts the identity records: "
                                          "identity record key 5 says keys [3, 4) are class 1")]


def test_a_record_claiming_more_bytes_than_the_file_is_refused_before_reading(small_set):
    rec = Path(f"{small_set}.rec")
    data = bytearray(rec.read_bytes())
    at = _offsets(small_set)[2]
    data[at + 4:at + 8] = struct.pack("<I", (1 << 29) - 1)  # a 512 MiB part
    rec.write_bytes(bytes(data))
    child = run_isolated(CHILD_OPEN_REC.replace("ds.labels.tolist()", "[ds.read(i)[0] for i in range(len(ds))]"),
                         str(small_set), light=True, memory_mb=400)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.startswith(f"DataError {rec}: record key 2 at offset {at}: record part needs 536870911 bytes")


CHILD_PACK_WITH_PLANTED_LINKS = r"""
import os, sys
from facesphere.data.recordio import pack_folder
src, out, victim = sys.argv[1:4]
finals = [os.path.join(out, name) for name in ("train.rec", "train.idx", "train.classes.txt", "property")]
for final in finals:  # the names facesphere < 0.2 wrote to before renaming, and the outputs themselves
    os.symlink(victim, f"{final}.tmp-{os.getpid()}")
    os.symlink(victim, final)
pack_folder(src, os.path.join(out, "train"), progress=False)
print("packed")
"""


def test_pack_folder_never_writes_through_planted_symlinks(tmp_path):
    for c in range(2):
        (tmp_path / "src" / f"id{c}").mkdir(parents=True)
        (tmp_path / "src" / f"id{c}" / "a.jpg").write_bytes(jpeg(c))
    (tmp_path / "out").mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    child = run_isolated(CHILD_PACK_WITH_PLANTED_LINKS, str(tmp_path / "src"), str(tmp_path / "out"), str(victim),
                         light=True)
    assert child.returncode == 0 and child.stdout.strip() == "packed", child.stderr[-2000:]
    assert victim.read_text() == "precious\n"  # nothing written through a link
    out = tmp_path / "out"
    for name in ("train.rec", "train.idx", "train.classes.txt", "property"):
        assert (out / name).is_file() and not (out / name).is_symlink()  # the link itself was replaced
    planted = [p for p in out.iterdir() if ".tmp-" in p.name]
    assert len(planted) == 4 and all(p.is_symlink() and p.resolve() == victim for p in planted)  # left alone
    assert RecordIOFaceSet(out / "train").labels.tolist() == [0, 1]
