"""Transforms: shapes, dtypes, exact normalisation, flips, seeded determinism, distinct streams per worker."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from facesphere.data.transforms import (
    ColorJitter,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    build_eval_transform,
    build_train_transform,
)
from facesphere.errors import InvalidOptionError


def image(h: int = 24, w: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# ---- Normalize ----------------------------------------------------------------------------------------------------


def test_normalize_arcface_values_and_layout():
    img = image()
    out = Normalize()(img)
    assert out.dtype == torch.float32 and out.shape == (3, 24, 20) and out.is_contiguous()
    ref = (torch.from_numpy(img).permute(2, 0, 1).double() - 127.5) / 127.5
    assert torch.allclose(out.double(), ref, atol=1e-6)
    edge = Normalize()(np.array([[[0, 255, 127]]], dtype=np.uint8))
    assert torch.allclose(edge.flatten(), torch.tensor([-1.0, 1.0, -0.5 / 127.5]), atol=1e-6)


def test_normalize_conventions_agree():
    img = image(seed=3)
    a = Normalize(127.5, 127.5)(img)
    b = Normalize(0.5, 0.5, scale=255.0)(img)  # (x / 255 - 0.5) / 0.5
    c = Normalize.arcface()(img)
    assert torch.allclose(a, b, atol=1e-6) and torch.equal(a, c)
    sph = Normalize.sphereface()(img)
    ref = (torch.from_numpy(img).permute(2, 0, 1).double() - 127.5) / 128.0
    assert torch.allclose(sph.double(), ref, atol=1e-6)


def test_normalize_bgr_and_per_channel():
    img = image(seed=4)
    rgb = Normalize()(img)
    bgr = Normalize(color="bgr")(img)
    assert torch.equal(bgr, rgb.flip(0))
    mean, std = (10.0, 20.0, 30.0), (2.0, 4.0, 8.0)
    out = Normalize(mean, std)(img)
    ref = (torch.from_numpy(img).permute(2, 0, 1).double() - torch.tensor(mean).view(3, 1, 1).double()) / torch.tensor(
        std
    ).view(3, 1, 1).double()
    assert torch.allclose(out.double(), ref, atol=1e-5)
    # uint8 HWC tensors are accepted too
    assert torch.equal(Normalize()(torch.from_numpy(img)), rgb)


def test_normalize_rejects_bad_options():
    with pytest.raises(InvalidOptionError):
        Normalize(color="hsv")
    with pytest.raises(InvalidOptionError):
        Normalize(0.0, 0.0)
    with pytest.raises(InvalidOptionError):
        Normalize((1.0, 2.0), 1.0)
    with pytest.raises(TypeError):
        Normalize()(np.zeros((4, 4, 3), dtype=np.float32))


# ---- flip ---------------------------------------------------------------------------------------------------------


def test_flip_is_a_mirror():
    img = image()
    flipped = RandomHorizontalFlip(p=1.0)(img)
    assert np.array_equal(flipped, img[:, ::-1])
    assert np.array_equal(flipped[:, 0], img[:, -1])
    assert RandomHorizontalFlip(p=0.0)(img) is img
    # flip then normalise == normalise then mirror the tensor; and tensors flip their last dim
    t = Normalize()(img)
    assert torch.equal(Normalize()(flipped), t.flip(-1))
    assert torch.equal(RandomHorizontalFlip(p=1.0)(t), t.flip(-1))


def test_flip_probability_and_seeding():
    img = image(4, 4)

    def pattern(gen, n=400):
        f = RandomHorizontalFlip(0.5, generator=gen)
        return np.array([f(img) is not img for _ in range(n)])

    a, b, c = pattern(7), pattern(7), pattern(8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert 0.4 < a.mean() < 0.6
    # numpy and torch generators are accepted
    assert np.array_equal(pattern(np.random.default_rng(5)), pattern(np.random.default_rng(5)))
    assert np.array_equal(pattern(torch.Generator().manual_seed(5)), pattern(torch.Generator().manual_seed(5)))
    with pytest.raises(InvalidOptionError):
        RandomHorizontalFlip(1.5)
    with pytest.raises(InvalidOptionError):
        RandomHorizontalFlip(0.5, generator="seed")


def test_default_stream_follows_torch_seed():
    img = image(4, 4)
    f = RandomHorizontalFlip(0.5)
    # the per-process stream is (re)seeded whenever torch.initial_seed() changes
    torch.manual_seed(123)
    a = [f(img) is not img for _ in range(64)]
    torch.manual_seed(124)
    c = [f(img) is not img for _ in range(64)]
    torch.manual_seed(123)
    b = [f(img) is not img for _ in range(64)]
    assert a == b and a != c


# ---- crops, resize, jitter ---------------------------------------------------------------------------------------


def test_random_resized_crop_shapes_and_identity():
    img = image(30, 30)
    out = RandomResizedCrop(16, generator=0)(img)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    out = RandomResizedCrop((20, 12), scale=(0.5, 1.0), generator=1)(img)
    assert out.shape == (20, 12, 3)
    same = RandomResizedCrop(None, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=0)(img)
    assert np.array_equal(same, img)
    rrc = RandomResizedCrop(8, scale=(0.1, 0.6), generator=3)
    for _ in range(50):
        top, left, h, w = rrc.get_params(30, 40)
        assert 0 <= top and 0 <= left and top + h <= 30 and left + w <= 40 and h > 0 and w > 0
    a = [RandomResizedCrop(8, generator=9).get_params(30, 30) for _ in range(2)]
    assert a[0] == a[1]
    with pytest.raises(InvalidOptionError):
        RandomResizedCrop(8, scale=(0.9, 0.1))


def test_resize():
    img = image(30, 20)
    assert Resize(10)(img).shape == (10, 10, 3)
    assert Resize((12, 8))(img).shape == (12, 8, 3)
    assert Resize((30, 20))(img) is img
    with pytest.raises(InvalidOptionError):
        Resize(10, interpolation="magic")


def test_color_jitter():
    img = image(16, 16)
    assert ColorJitter()(img) is img
    out = ColorJitter(0.4, 0.4, 0.4, generator=0)(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(out, ColorJitter(0.4, 0.4, 0.4, generator=0)(img))
    dark = np.full((4, 4, 3), 100, np.uint8)
    assert np.all(ColorJitter(brightness=(2.0, 2.0), generator=0)(dark) == 200)
    grey = ColorJitter(saturation=(0.0, 0.0), generator=0)(img).astype(int)
    assert np.abs(grey[..., 0] - grey[..., 1]).max() <= 1 and np.abs(grey[..., 1] - grey[..., 2]).max() <= 1
    flat = ColorJitter(contrast=(0.0, 0.0), generator=0)(img)
    assert flat.max() - flat.min() <= 1
    with pytest.raises(InvalidOptionError):
        ColorJitter(brightness=-1)


# ---- recipes ------------------------------------------------------------------------------------------------------


def test_build_transforms():
    img = image(24, 20)
    t = build_train_transform()
    assert isinstance(t, Compose)
    out = t(img)
    assert out.shape == (3, 24, 20) and out.dtype == torch.float32
    full = build_train_transform(random_resized_crop=True, color_jitter=0.2, size=16, generator=1)
    again = build_train_transform(random_resized_crop=True, color_jitter=0.2, size=16, generator=1)
    assert full(img).shape == again(img).shape == (3, 16, 16)
    assert all(torch.equal(full(img), again(img)) for _ in range(5))
    ev = build_eval_transform()
    assert torch.equal(ev(img), Normalize()(img))
    assert build_eval_transform(size=(12, 10), color="bgr")(img).shape == (3, 12, 10)
    sph = build_train_transform(flip=False, mean=127.5, std=128.0)
    assert torch.equal(sph(img), Normalize.sphereface()(img))


# ---- DataLoader workers get distinct, reproducible streams ---------------------------------------------------------


class FlipProbe(Dataset):
    """Returns 1.0 where the transform flipped the (asymmetric) image, else 0.0."""

    def __init__(self, transform, n=128):
        self.transform = transform
        self.n = n
        self.img = np.zeros((2, 2, 3), np.uint8)
        self.img[:, 0] = 255

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        out = self.transform(self.img)
        return float(out[0, 0, 0] < 0)  # after a flip the left column is dark


def _flip_batches(transform, seed):
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(FlipProbe(transform), batch_size=32, num_workers=2, generator=g)
    return [b.numpy() for b in loader]


@pytest.mark.parametrize("explicit", [False, True])
def test_workers_do_not_repeat_augmentations(explicit):
    def make():
        return Compose([RandomHorizontalFlip(0.5, generator=11 if explicit else None), Normalize()])

    batches = _flip_batches(make(), seed=0)
    # batches 0 and 2 come from worker 0, batches 1 and 3 from worker 1
    assert not np.array_equal(batches[0], batches[1])
    assert not np.array_equal(batches[2], batches[3])
    assert 0.3 < np.concatenate(batches).mean() < 0.7
    # a seeded loader reproduces the same augmentations
    again = _flip_batches(make(), seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
