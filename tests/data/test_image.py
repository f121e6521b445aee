"""Decoding images: formats, colour conversion, and errors that name the file."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from facesphere.data.image import (
    IMAGE_EXTENSIONS,
    decode_image,
    is_image_file,
    read_image,
)
from facesphere.errors import DataError, FaceSphereError, InvalidOptionError
from tests.helpers import DATA, run_isolated

GLINT = str(DATA / "glint_sample" / "images")


def encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


def smooth_rgb(h: int = 40, w: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 127 // (h + w)], axis=2)
    return np.clip(base + rng.integers(-8, 8, size=base.shape), 0, 255).astype(np.uint8)


def test_png_round_trip_exact():
    arr = smooth_rgb()
    out = decode_image(encode(arr, "PNG"), source="a.png")
    assert out.dtype == np.uint8 and out.shape == (40, 32, 3)
    assert np.array_equal(out, arr)
    assert out.flags.c_contiguous and out.flags.writeable


def test_jpeg_decodes_close():
    arr = smooth_rgb(64, 48)
    out = decode_image(encode(arr, "JPEG", quality=95), source="a.jpg")
    assert out.shape == (64, 48, 3)
    assert np.abs(out.astype(int) - arr.astype(int)).mean() < 6


@pytest.mark.parametrize("fmt", ["PNG", "PPM", "JPEG", "BMP", "TIFF", "WEBP"])
def test_grey_becomes_three_equal_channels(fmt):
    grey = smooth_rgb()[:, :, 0]
    kw = {"lossless": True} if fmt == "WEBP" else {}
    out = decode_image(encode(grey, fmt, **kw), source=f"g.{fmt.lower()}")
    assert out.shape == (40, 32, 3)
    assert np.array_equal(out[:, :, 0], out[:, :, 1]) and np.array_equal(out[:, :, 1], out[:, :, 2])


def test_pgm_grey_exact():
    grey = smooth_rgb()[:, :, 1]
    buf = io.BytesIO()
    Image.fromarray(grey, "L").save(buf, "PPM")  # writes P5 (PGM) for mode L
    data = buf.getvalue()
    assert data.startswith(b"P5")
    out = decode_image(data, source="face.pgm")
    assert np.array_equal(out[:, :, 0], grey)


def test_16bit_pgm_scaled_not_clipped():
    grey16 = (np.arange(4 * 5, dtype=np.uint16).reshape(4, 5) * 3000).astype(np.uint16)
    data = b"P5\n5 4\n65535\n" + grey16.astype(">u2").tobytes()
    out = decode_image(data, source="deep.pgm")
    expect = np.clip((grey16.astype(np.int64) * 255 + 32767) // 65535, 0, 255)
    assert np.abs(out[:, :, 0].astype(int) - expect).max() <= 1
    assert out[:, :, 0].max() > 200  # clipping would make everything 255 and scaling-free casts wrap


def test_rgba_and_palette_to_rgb():
    arr = smooth_rgb()
    rgba = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 128, np.uint8)], axis=2)
    out = decode_image(encode(rgba, "PNG"), source="a.png")
    assert out.shape == (40, 32, 3) and np.array_equal(out, arr)
    pal = Image.fromarray(arr).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    buf = io.BytesIO()
    pal.save(buf, "PNG")
    out = decode_image(buf.getvalue(), source="p.png")
    assert out.shape == (40, 32, 3)
    assert np.array_equal(out, np.asarray(pal.convert("RGB")))


def test_bgr_reverses_channels():
    arr = smooth_rgb()
    data = encode(arr, "PNG")
    out = decode_image(data, source="a.png", color="bgr")
    assert np.array_equal(out, arr[:, :, ::-1])
    assert out.flags.c_contiguous
    with pytest.raises(InvalidOptionError):
        decode_image(data, source="a.png", color="yuv")  # type: ignore[arg-type]


def test_corrupt_bytes_name_the_source():
    with pytest.raises(DataError, match=r"^faces/bob/001\.jpg: cannot decode image: "):
        decode_image(b"this is not an image at all" * 10, source="faces/bob/001.jpg")


def test_empty_bytes():
    with pytest.raises(DataError, match=r"empty.jpg: cannot decode image: the data is empty"):
        decode_image(b"", source="empty.jpg")


@pytest.mark.parametrize("keep", [0.5, 0.9, "all_but_eoi"])
def test_truncated_jpeg_raises(keep):
    data = encode(smooth_rgb(64, 64), "JPEG", quality=90)
    cut = len(data) - 2 if keep == "all_but_eoi" else int(len(data) * keep)
    with pytest.raises(DataError, match=r"^x/trunc\.jpg: cannot decode image: .*truncated"):
        decode_image(data[:cut], source="x/trunc.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png_raises():
    data = encode(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8), "PNG")
    with pytest.raises(DataError, match=r"^t\.png: cannot decode image: "):
        decode_image(data[: len(data) // 2], source="t.png")


def test_corrupt_png_header():
    data = bytearray(encode(smooth_rgb(), "PNG"))
    data[20:40] = b"\xff" * 20  # IHDR damaged (CRC mismatch)
    with pytest.raises(DataError, match=r"^c\.png: cannot decode image"):
        decode_image(bytes(data), source="c.png")


def test_wrong_size_names_actual_and_expected():
    data = encode(smooth_rgb(40, 32), "PNG")
    out = decode_image(data, source="ok.png", expected_size=(40, 32))
    assert out.shape == (40, 32, 3)
    with pytest.raises(DataError) as info:
        decode_image(data, source="faces/big.png", expected_size=(112, 112))
    msg = str(info.value)
    assert msg.startswith("faces/big.png: ")
    assert "40x32" in msg and "112x112" in msg
    assert isinstance(info.value, FaceSphereError)


def test_read_image(tmp_path):
    arr = smooth_rgb()
    p = tmp_path / "a.png"
    p.write_bytes(encode(arr, "PNG"))
    assert np.array_equal(read_image(p), arr)
    with pytest.raises(DataError, match="missing.jpg: no such image file"):
        read_image(tmp_path / "missing.jpg")
    with pytest.raises(DataError, match="is a directory"):
        read_image(tmp_path)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0garbage")
    with pytest.raises(DataError, match=str(bad).replace("\\", "\\\\") + ": cannot decode image"):
        read_image(bad)


def test_extensions():
    for ext in (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".webp", ".tif", ".tiff"):
        assert ext in IMAGE_EXTENSIONS
        assert is_image_file("x" + ext.upper())
    assert not is_image_file(".hidden.jpg")
    assert not is_image_file("notes.txt")


@pytest.mark.skipif(not os.path.isdir(GLINT), reason="shared glint sample not present")
def test_real_aligned_faces_decode():
    ident = sorted(os.listdir(GLINT))[0]
    files = sorted(os.listdir(os.path.join(GLINT, ident)))[:5]
    for f in files:
        out = read_image(os.path.join(GLINT, ident, f), expected_size=(112, 112))
        assert out.shape == (112, 112, 3) and out.dtype == np.uint8


# ---------------------------------------------------------------------------------------------------------------
# images that claim more pixels than they hold (issue 13)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _blank_png(width: int, height: int) -> bytes:
    """A valid all-black 8-bit grey PNG; zlib shrinks 10000 x 10000 pixels to ~97 KB."""
    compressor = zlib.compressobj(9)
    rows = b"\0" * (width + 1) * 500  # filter byte + pixels, 500 rows at a time
    body = b"".join(compressor.compress(rows) for _ in range(height // 500)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b""))


CHILD_DECODE = r"""
import sys, warnings
warnings.simplefilter("ignore")
from facesphere.data.image import read_image
from facesphere.errors import DataError
try:
    read_image(sys.argv[1])
    print("decoded")
except DataError as error:
    print(f"DataError {error}")
with open("/proc/self/status") as status:  # this process's peak resident memory (ru_maxrss counts the parent's)
    print(next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmHWM:")))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="measures memory through /proc")
def test_a_97_kb_png_of_100_megapixels_is_refused_from_its_header(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_blank_png(10000, 10000))
    assert path.stat().st_size < 100_000
    child = run_isolated(CHILD_DECODE, str(path), light=True, timeout=120, memory_mb=2048)
    assert child.returncode == 0, child.stderr[-2000:]
    message, peak_mb = child.stdout.splitlines()
    assert message == (f"DataError {path}: image is 10000x10000 (HxW) = 100000000 pixels, more than facesphere's "
                       "limit of 67108864 (facesphere.data.limits.MAX_IMAGE_PIXELS); not decoded")
    assert int(peak_mb) < 200  # the 100 MB of pixels (300 MB as RGB) were never allocated


def test_the_pixel_limit_is_a_setting(monkeypatch):
    from facesphere.data import limits

    data = _blank_png(500, 500)
    assert decode_image(data, source="ok.png").shape == (500, 500, 3)
    monkeypatch.setattr(limits, "MAX_IMAGE_PIXELS", 100_000)
    with pytest.raises(DataError, match=r"^big\.png: image is 500x500 \(HxW\) = 250000 pixels, more than"):
        decode_image(data, source="big.png")


def test_a_path_with_a_nul_byte_is_a_data_error():
    with pytest.raises(DataError, match="not a valid file path"):
        read_image("faces/a\0b.jpg")
