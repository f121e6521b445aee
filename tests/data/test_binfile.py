"""Verification .bin files: safe loading (nothing executed), Python 2 pickles, numpy payloads, round trips."""

from __future__ import annotations

import json
import os
import pickle
import struct

import numpy as np
import pytest

from facesphere.data.binfile import read_bin, write_bin
from facesphere.errors import DataError, UnsafePickleError

from tests.helpers import run_isolated

JPEG_A = b"\xff\xd8\xff\xe0" + bytes(range(256)) + b"\xff\xd9"  # 262 bytes: needs BINSTRING, not SHORT_BINSTRING
JPEG_B = b"\xff\xd8\xff\xe1tiny\xff\xd9"


def _py2_str(data: bytes) -> bytes:
    """How Python 2's pickle (protocol 2) writes a ``str``: SHORT_BINSTRING or BINSTRING."""
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data
    return b"T" + struct.pack("<i", len(data)) + data


def _py2_bin_pickle(images: list[bytes], issame: list[bool]) -> bytes:
    """A (bins, issame_list) pickle as Python 2 wrote InsightFace's .bin files, built opcode by opcode."""
    out = b"\x80\x02"  # PROTO 2
    out += b"]q\x00("  # EMPTY_LIST, BINPUT 0, MARK
    for img in images:
        out += _py2_str(img)
    out += b"e"  # APPENDS
    out += b"]q\x01("
    for s in issame:
        out += b"\x88" if s else b"\x89"  # NEWTRUE / NEWFALSE
    out += b"e"
    out += b"\x86q\x02."  # TUPLE2, BINPUT 2, STOP
    return out


def _py2_uint8_array(data: bytes) -> bytes:
    """A 1-D uint8 numpy array as Python 2 numpy pickled it (protocol 2, py2 str for the raw data)."""
    return (
        b"cnumpy.core.multiarray\n_reconstruct\n"
        + b"cnumpy\nndarray\n"
        + b"K\x00\x85" + _py2_str(b"b") + b"\x87R"
        + b"(K\x01" + (b"M" + struct.pack("<H", len(data))) + b"\x85"
        + b"cnumpy\ndtype\n" + _py2_str(b"u1") + b"K\x00K\x01\x87R"
        + b"(K\x03" + _py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        + b"\x89" + _py2_str(data) + b"tb"
    )


def test_python2_pickle_of_str_images(tmp_path):
    path = tmp_path / "lfw.bin"
    images = [JPEG_A, JPEG_B, JPEG_B, JPEG_A]
    path.write_bytes(_py2_bin_pickle(images, [True, False]))
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(path.read_bytes())  # the default ASCII decoding fails: why encoding="bytes" is needed
    got, issame = read_bin(path)
    assert got == images and all(type(b) is bytes for b in got)
    assert issame.dtype == np.bool_ and issame.tolist() == [True, False]


def test_python2_pickle_of_numpy_images(tmp_path):
    path = tmp_path / "cfp.bin"
    body = b"\x80\x02]q\x00(" + _py2_uint8_array(JPEG_A) + _py2_uint8_array(JPEG_B) + b"e"
    body += b"]q\x01(\x88e\x86q\x02."
    path.write_bytes(body)
    images, issame = read_bin(path)
    assert images == [JPEG_A, JPEG_B] and issame.tolist() == [True]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_python3_numpy_payloads(tmp_path, protocol):
    path = tmp_path / "np.bin"
    bins = [np.frombuffer(JPEG_A, np.uint8), np.frombuffer(JPEG_B, np.uint8)] * 2
    flags = np.array([True, False])
    with open(path, "wb") as f:
        pickle.dump((bins, flags), f, protocol=protocol)
    images, issame = read_bin(path)
    assert images == [JPEG_A, JPEG_B] * 2 and issame.tolist() == [True, False]
    with open(path, "wb") as f:
        pickle.dump(([JPEG_A, JPEG_B], [np.bool_(False)]), f, protocol=protocol)
    images, issame = read_bin(path)
    assert images == [JPEG_A, JPEG_B] and issame.tolist() == [False]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_round_trip_and_insightface_style_load(tmp_path, protocol):
    path = tmp_path / "sub" / "agedb_30.bin"
    images = [JPEG_A, JPEG_B, JPEG_A + b"x", b""]
    write_bin(path, images, np.array([1, 0], dtype=np.uint8), protocol=protocol)
    assert os.listdir(path.parent) == ["agedb_30.bin"]  # no temporary left behind
    got, issame = read_bin(path)
    assert got == images and issame.tolist() == [True, False]
    with open(path, "rb") as f:  # what InsightFace's evaluation code does
        bins, issame_list = pickle.load(f, encoding="bytes")
    assert bins == images and issame_list == [True, False]


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    # protocol 0: GLOBAL 'os system', MARK, STRING 'touch ...', TUPLE, REDUCE, STOP
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(UnsafePickleError) as e:
        read_bin(path)
    msg = str(e.value)
    assert str(path) in msg and "os.system" in msg and "not executed" in msg
    assert not marker.exists()
    assert isinstance(e.value, DataError)

    # protocol 4 form (STACK_GLOBAL) wrapped inside an otherwise valid (bins, issame) structure
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps(([JPEG_A, Evil()], [True]), protocol=4))
    with pytest.raises(UnsafePickleError, match=r"refused to load the global (os|posix)\.system"):
        read_bin(path)
    assert not marker.exists()

    for evil in (
        pickle.dumps(([eval], [True]), protocol=4),  # builtins.eval
        pickle.dumps((getattr, [True]), protocol=2),
        b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x04\x00\x00\x00zlib\x86R.",  # a non-latin-1 codec
    ):
        path.write_bytes(evil)
        with pytest.raises(UnsafePickleError) as e:
            read_bin(path)
        assert str(path) in str(e.value)


def test_malformed_files(tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(([JPEG_A, JPEG_B, JPEG_A], [True]), protocol=4))
    with pytest.raises(DataError) as e:
        read_bin(path)
    assert str(path) in str(e.value) and "3 images but 1 issame labels" in str(e.value)

    path.write_bytes(pickle.dumps({"bins": [], "issame": []}, protocol=4))
    with pytest.raises(DataError, match=r"bad\.bin: expected a pickled pair \(bins, issame_list\), got a dict"):
        read_bin(path)
    path.write_bytes(pickle.dumps(([JPEG_A, JPEG_B], [True], 3), protocol=4))
    with pytest.raises(DataError, match="got a tuple of length 3"):
        read_bin(path)
    path.write_bytes(pickle.dumps(([JPEG_A, 7], [True]), protocol=4))
    with pytest.raises(DataError, match="image 1 is a int"):
        read_bin(path)
    path.write_bytes(pickle.dumps(([JPEG_A, JPEG_B], ["yes"]), protocol=4))
    with pytest.raises(DataError, match=r"issame_list\[0\]"):
        read_bin(path)
    path.write_bytes(b"this is not a pickle at all")
    with pytest.raises(DataError, match=r"bad\.bin: not a readable pickle"):
        read_bin(path)
    path.write_bytes(pickle.dumps(([JPEG_A, JPEG_B], [True]), protocol=4)[:-7])  # truncated
    with pytest.raises(DataError, match=r"bad\.bin: not a readable pickle"):
        read_bin(path)
    with pytest.raises(DataError, match="not found"):
        read_bin(tmp_path / "missing.bin")
    with pytest.raises(DataError, match="2 images per label"):
        write_bin(tmp_path / "w.bin", [JPEG_A], [True])
    assert not (tmp_path / "w.bin").exists()


# ---------------------------------------------------------------------------------------------------------------
# malicious numpy states: run in a child process, so that a native crash fails the test instead of the suite


def _array_pickle(code: str, state: tuple, raw: bytes, shape: tuple = (2,)) -> bytes:
    """A protocol-2 numpy array pickled opcode by opcode with any dtype ``state`` (what a crafted file can say)."""
    body = lambda obj: pickle.dumps(obj, protocol=2)[2:-1]  # noqa: E731 - one object's opcodes, no PROTO / STOP
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R"
            + b"(K\x01" + body(shape) + b"cnumpy\ndtype\n" + body(code) + b"K\x00K\x01\x87R" + body(state)
            + b"b\x89" + pickle.dumps(raw, protocol=3)[2:-1] + b"tb")


EVIL_DTYPES = {
    # a field 1 TiB past the 8-byte item: numpy reads memory it does not own (SIGSEGV when issame is iterated)
    "field_offset": ("V8", (3, "|", None, ("a",), {"a": (np.dtype("u8"), 1 << 40)}, 8, 1, 0)),
    "subarray_1TiB": ("V8", (3, "|", (np.dtype("u1"), (1 << 40,)), None, None, 8, 1, 0)),
    "negative_size": ("V8", (3, "|", None, None, None, -8, 1, 0)),
    "object_flags": ("u8", (3, "<", None, None, None, -1, -1, 0x3F)),
    "object_dtype": ("O", (3, "|", None, None, None, -1, -1, 0x3F)),
}

CHILD_READ_BIN = r"""
import json, sys
from facesphere.data.binfile import read_bin
from facesphere.data.verify import verify_dataset
from facesphere.errors import FaceSphereError
out = {}
for path in sys.argv[1:]:
    try:
        read_bin(path)
        out[path] = ["read", ""]
    except FaceSphereError as error:
        out[path] = [type(error).__name__, str(error)]
    out[path].append(verify_dataset("bin:" + path, progress=False).num_bad)
print(json.dumps(out))
"""


def test_malformed_dtype_states_never_reach_numpy(tmp_path):
    paths = []
    for name, (code, state) in EVIL_DTYPES.items():
        evil = _array_pickle(code, state, b"A" * 16)
        for where, data in (("issame", b"\x80\x02]q\x00(C\x01aC\x01ae" + evil + b"\x86."),  # ([a, a], evil)
                            ("image", b"\x80\x02(" + evil + evil + b"l]q\x00(\x88e\x86.")):  # ([evil, evil], [T])
            path = tmp_path / f"{name}_{where}.bin"
            path.write_bytes(data)
            paths.append(str(path))
    marker = tmp_path / "ran"  # and a pickle that would run a command, in the same child
    evil = tmp_path / "command.bin"
    evil.write_bytes(b"\x80\x02(]q\x00cposix\nsystem\n(X" + struct.pack("<I", len(f"touch {marker}"))
                     + f"touch {marker}".encode() + b"tRa]q\x01\x88a\x86.")
    paths.append(str(evil))
    child = run_isolated(CHILD_READ_BIN, *paths, timeout=120, memory_mb=3072)
    assert child.returncode == 0, f"the reader crashed (signal {-child.returncode}):\n{child.stderr[-3000:]}"
    results = json.loads(child.stdout.splitlines()[-1])
    for path in paths:
        kind, message, bad = results[path]
        assert kind in ("UnsafePickleError", "DataError") and message.startswith(f"{path}: "), (path, kind, message)
        assert bad >= 1  # data verify reports the file instead of crashing
    assert "not passed to numpy" in results[paths[0]][1]
    assert "refused to load the global posix.system" in results[str(evil)][1] and not marker.exists()


def test_huge_lengths_and_memo_indices_are_refused_before_allocating(tmp_path):
    cases = {
        "binbytes8": b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"abc",  # 1 TiB of bytes announced
        "memo_put": b"\x80\x02]r\xff\xff\xff\x7f.",  # LONG_BINPUT 2**31: a memo table of 16 GiB
        "frame": b"\x80\x04\x95" + struct.pack("<Q", 1 << 50) + b"N.",
        "long4": b"\x80\x02\x8b" + struct.pack("<i", 1 << 30) + b"\x01.",
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.bin"
        path.write_bytes(data)
    code = ("import sys\nfrom facesphere.data.binfile import read_bin\nfrom facesphere.errors import DataError\n"
            "for path in sys.argv[1:]:\n"
            "    try:\n        read_bin(path)\n    except DataError as error:\n        print(error)\n")
    child = run_isolated(code, *(str(tmp_path / f"{n}.bin") for n in cases), light=True, memory_mb=400)
    assert child.returncode == 0, child.stderr[-3000:]
    lines = child.stdout.splitlines()
    assert len(lines) == len(cases) and all("not a readable pickle" in line for line in lines), lines
    assert "MemoryError" not in child.stdout


def test_plain_data_stand_ins_rebuild_arrays_and_scalars(tmp_path):
    path = tmp_path / "np.bin"
    images = [np.frombuffer(JPEG_A, np.uint8), np.frombuffer(JPEG_B, np.uint8)]
    for protocol in (2, 4, 5):
        for flags in (np.array([True]), np.array([1], ">i8"), [np.bool_(True)], [np.int64(1)], (True,)):
            path.write_bytes(pickle.dumps((images, flags), protocol=protocol))
            got, issame = read_bin(path)
            assert got == [JPEG_A, JPEG_B] and issame.tolist() == [True]
        path.write_bytes(pickle.dumps(([np.bytes_(JPEG_B), bytearray(JPEG_A)], [False]), protocol=protocol))
        assert read_bin(path)[0] == [JPEG_B, JPEG_A]
    path.write_bytes(pickle.dumps(([np.zeros(2, np.float32)] * 2, [True]), protocol=4))
    with pytest.raises(DataError, match="image 0 is a ndarray"):
        read_bin(path)
    path.write_bytes(pickle.dumps(([JPEG_A, JPEG_B], [bytes(10**6)[:0]]), protocol=2))
    with pytest.raises(DataError, match=r"issame_list\[0\]"):
        read_bin(path)
    path.write_bytes(b"\x80\x02c__builtin__\nbytearray\nJ\x00\x00\x00\x40\x85R.")  # bytearray(2**30): 1 GiB of zeros
    with pytest.raises(UnsafePickleError, match="refused bytearray of 1073741824"):
        read_bin(path)
