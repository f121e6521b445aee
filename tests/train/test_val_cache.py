"""Training-time validation decodes every ``.bin`` / pairs image once and keeps it for the later validations."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facesphere.data import image as image_module
from facesphere.data import pairs as pairs_module
from facesphere.data.binfile import write_bin
from facesphere.data.pairs import cached_pair_set, open_pair_set
from facesphere.run.config import load_config
from facesphere.train.loop import train


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def bin_file(tmp_path):
    path = tmp_path / "tiny.bin"
    write_bin(path, [_png(i) for i in range(20)], [True, False] * 5)
    return path


@pytest.fixture
def decode_counter(monkeypatch):
    counter = {"n": 0}
    original = image_module.decode_image

    def counting(*args, **kwargs):
        counter["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(pairs_module, "decode_image", counting)
    return counter


def test_cached_pair_set_decodes_each_image_once(bin_file, decode_counter):
    plain = open_pair_set(f"bin:{bin_file}")
    cached = cached_pair_set(plain)
    first = [cached.load(i).copy() for i in range(cached.num_images)]
    decoded = decode_counter["n"]
    assert decoded == 20
    again = [cached.load(i) for i in range(cached.num_images)]
    assert decode_counter["n"] == decoded  # nothing decoded the second time
    assert all(np.array_equal(a, b) and np.array_equal(a, plain.load(i)) for i, (a, b) in enumerate(zip(first, again)))
    assert not again[3].flags.writeable  # a kept image cannot be changed by a caller
    assert cached_pair_set(cached) is cached
    assert cached_pair_set(plain, max_bytes=1000) is plain  # too large to keep: decoded at every pass


def test_trainer_validations_share_one_decode(tmp_path, tiny_overrides, bin_file, decode_counter):
    config = load_config(None, tiny_overrides + ["--train.steps", "4", "--train.val_every", "2",
                                                 "--data.val", f"[bin:{bin_file}]", "--train.quiet", "true"])
    summary = train(config, out=tmp_path / "run", progress=False)
    assert "tiny" in summary["val"]
    assert decode_counter["n"] == 20  # two validations (steps 2 and 4), one decode per image
