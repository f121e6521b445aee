"""The trainer's one input pipeline: bad samples through workers, seeded augmentations independent of the worker
count, and ``data.exclude``."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from facesphere.data.datasets import BadSample
from facesphere.errors import DataError
from facesphere.run.config import load_config
from facesphere.train.data import build_train_set, make_loader
from tests.helpers import TINY


def face(seed: int, size: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)


@pytest.fixture
def folder(tmp_path):
    """3 identities x 5 PNG faces, plus a corrupt and a truncated JPEG in identity id1."""
    root = tmp_path / "faces"
    for c in range(3):
        (root / f"id{c}").mkdir(parents=True)
        for k in range(5):
            Image.fromarray(face(10 * c + k)).save(root / f"id{c}" / f"{k}.png")
    (root / "id1" / "zz_corrupt.jpg").write_bytes(b"not a jpeg" * 50)
    buffer = io.BytesIO()
    Image.fromarray(face(99)).save(buffer, format="JPEG")
    (root / "id1" / "zz_truncated.jpg").write_bytes(buffer.getvalue()[:200])
    return root


def _config(folder, *extra):
    return load_config(None, TINY + ["--data.train", f"folder:{folder}", "--data.image_size", "[24, 24]",
                                     "--data.batch_size", "4", *extra])


def _batches(config, workers):
    config.data.num_workers = workers
    train_set = build_train_set(config)
    loader = make_loader(train_set, config, start=0, total=8)
    return [(images.clone(), labels.clone(), num_bad) for images, labels, num_bad in loader]


def test_bad_samples_are_dropped_and_counted_through_workers(folder, caplog):
    config = _config(folder)
    with caplog.at_level(logging.WARNING):
        batches = _batches(config, 2)
    assert sum(num_bad for *_, num_bad in batches) == 4  # 2 bad files x 2 epochs of 4 batches of 4
    assert all(images.dtype == torch.uint8 and images.shape[1:] == (3, 24, 24) for images, *_ in batches)
    config = _config(folder, "--data.bad_samples", "fail")
    with pytest.raises(DataError, match="zz_"):
        _batches(config, 0)


def test_augmented_batches_do_not_depend_on_the_worker_count(folder):
    augment = ["--data.crop_scale", "0.7", "--data.color_jitter", "0.3", "--data.gray_prob", "0.5",
               "--data.down_prob", "0.5", "--data.blur_prob", "0.3"]
    a = _batches(_config(folder, *augment), 0)
    b = _batches(_config(folder, *augment), 2)
    plain = _batches(_config(folder), 0)
    for (ia, la, na), (ib, lb, nb) in zip(a, b):
        assert torch.equal(ia, ib) and torch.equal(la, lb) and na == nb
    assert any(not torch.equal(ia, ip) for (ia, *_), (ip, *_) in zip(a, plain))


def test_exclude_drops_identities_and_renumbers_labels(folder, tmp_path):
    listing = tmp_path / "overlap.txt"
    listing.write_text("# from facesphere data overlap\nid0\n\nnot_in_the_set\n")
    train_set = build_train_set(_config(folder, "--data.exclude", f"[{listing}]"))
    assert train_set.num_classes == 2 and sorted(set(train_set.labels.tolist())) == [0, 1]
    assert len(train_set.samples) == 12 and "1 identities (5 images) excluded" in train_set.description
    image, label = train_set.samples[(0, 0)]
    assert label == 0 and image.shape == (3, 24, 24)
    bad = [train_set.samples[(0, i)] for i in range(len(train_set.samples))]
    assert sum(isinstance(b, BadSample) for b in bad) == 2 and all(
        "id1" in b.source for b in bad if isinstance(b, BadSample))
    with pytest.raises(DataError, match="list of identity names not found"):
        build_train_set(_config(folder, "--data.exclude", f"[{tmp_path / 'missing.txt'}]"))
    everyone = tmp_path / "all.txt"
    everyone.write_text("id0\nid1\nid2\n")
    with pytest.raises(DataError, match="leaves no training image"):
        build_train_set(_config(folder, "--data.exclude", f"[{everyone}]"))


def test_real_training_faces_validated_on_synthetic_faces_only_warn():
    from facesphere.errors import FaceSphereWarning
    from facesphere.train.data import warn_synthetic_validation

    real = load_config(None, ["--data.train", "folder:faces"])  # data.val left at its default: [synthetic]
    with pytest.warns(FaceSphereWarning, match="validating on synthetic faces only") as caught:
        warn_synthetic_validation(real)
    message = str(caught[0].message)
    assert "--data.val" in message and "facesphere data split" in message and "--data.exclude" in message
    quiet = [load_config(None, ["--data.train", "folder:faces", "--data.val", "[lfw:lfw]"]),
             load_config(None, ["--data.train", "folder:faces", "--data.val", "[synthetic, bin:lfw.bin]"]),
             load_config(None, ["--data.train", "folder:faces", "--data.val", "[]"]),
             load_config(None, [])]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for config in quiet:
            warn_synthetic_validation(config)
