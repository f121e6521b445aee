"""The training augmentations: each a function of (image, rng), hand-checked effects, and the pipeline's draws."""

from __future__ import annotations

import numpy as np
import pytest

from facesphere.data.transforms import (
    LUMA,
    Augmentation,
    color_jitter,
    downscale,
    gaussian_blur,
    hflip,
    resize,
    resized_crop,
    to_grayscale,
)
from facesphere.errors import InvalidOptionError


def face(seed: int = 0, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 7, y * 5, (x + y) * 3], axis=2) % 256
    return np.clip(base + rng.integers(0, 20, size=base.shape), 0, 255).astype(np.uint8)


def test_flip_and_grayscale_by_hand():
    img = face()
    assert np.array_equal(hflip(img)[:, 0], img[:, -1])
    grey = to_grayscale(img)
    assert grey.shape == img.shape and np.array_equal(grey[..., 0], grey[..., 2])
    expected = np.clip(np.rint(img[3, 4].astype(np.float32) @ LUMA), 0, 255)
    assert grey[3, 4, 0] == expected


def test_geometric_and_blur_ops_keep_the_size_and_change_the_image():
    img = face(1)
    rng = np.random.default_rng(0)
    for out in (resized_crop(img, rng, 0.5), downscale(img, rng, 0.3), gaussian_blur(img, rng, 2.0)):
        assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
    assert resized_crop(img, rng, 1.0, ratio=(1.0, 1.0)) is img  # the whole image: unchanged
    blurred = gaussian_blur(img, np.random.default_rng(1), 3.0)
    assert np.abs(np.diff(blurred.astype(int), axis=1)).mean() < np.abs(np.diff(img.astype(int), axis=1)).mean()
    assert resize(img, (16, 8)).shape == (16, 8, 3) and resize(img, 32) is img


def test_color_jitter_bounds_and_identity():
    img = face(2)
    out = color_jitter(img, np.random.default_rng(0), 0.4)
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
    assert np.array_equal(color_jitter(img, np.random.default_rng(0), 0.0), img)  # factors all 1


def test_pipeline_is_a_function_of_the_generator():
    aug = Augmentation(crop_scale=0.7, down_prob=0.5, blur_prob=0.5, color_jitter=0.3, gray_prob=0.5)
    img = face(3)
    a = aug(img, np.random.default_rng([0, 1, 2]))
    b = aug(img, np.random.default_rng([0, 1, 2]))
    c = aug(img, np.random.default_rng([0, 1, 3]))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert aug.active and not Augmentation().active


def test_flip_only_draws_one_number_so_defaults_never_change():
    img = face(4)
    for key in range(20):
        flipped = np.random.default_rng([5, 0, key]).random() < 0.5
        out = Augmentation()(img, np.random.default_rng([5, 0, key]))
        assert np.array_equal(out, img[:, ::-1] if flipped else img)
    assert Augmentation(flip=False)(img, np.random.default_rng(0)) is img


def test_grayscale_probability_is_respected():
    aug = Augmentation(flip=False, gray_prob=0.3)
    img = face(5)
    grey = sum(np.array_equal(out[..., 0], out[..., 1])
               for out in (aug(img, np.random.default_rng([0, 0, k])) for k in range(400)))
    assert 0.22 < grey / 400 < 0.38


@pytest.mark.parametrize("field, value", [("crop_scale", 0.0), ("crop_scale", 1.5), ("down_prob", -0.1),
                                          ("down_min", 1.0), ("gray_prob", 2.0), ("color_jitter", 3.0),
                                          ("blur_sigma", 0.0)])
def test_out_of_range_options_are_refused(field, value):
    with pytest.raises(InvalidOptionError, match=f"data.{field}"):
        Augmentation(**{field: value})
