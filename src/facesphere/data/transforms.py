"""Training augmentations of aligned face crops, and a plain resize.

Every augmentation is a function of a uint8 ``(H, W, 3)`` RGB array and an explicit ``numpy.random.Generator``, so the
trainer seeds each sample's augmentations with ``(seed, epoch, index)`` and a resumed run sees exactly the images an
uninterrupted one does, whatever the number of DataLoader workers (:mod:`facesphere.train.data`).
:class:`Augmentation` is the trainer's whole pipeline, configured by the ``data.*`` fields of the run's config
(docs/data.md); each step draws random numbers only when it is enabled, so turning one on never changes what another
does to the same sample, and the default (flip only) draws exactly one number per sample.

Order of the steps (each off by default except the flip, as in the ArcFace / SphereFace recipes):

1. horizontal flip with probability 1/2 (``flip``);
2. random resized crop: area fraction in ``[crop_scale, 1]``, aspect ratio log-uniform in ``[0.9, 1.1]``, resized back
   to the input size (``crop_scale < 1``);
3. down-scaling with probability ``down_prob`` to a factor in ``[down_min, 1)`` of the size and back up (bilinear):
   low-resolution photos;
4. Gaussian blur with probability ``blur_prob``, sigma uniform in ``[0.1, blur_sigma]`` pixels;
5. colour jitter: brightness, contrast and saturation factors uniform in ``[1 − j, 1 + j]``, applied in a random order
   (``color_jitter = j``; torchvision's definitions);
6. grayscale with probability ``gray_prob`` (ITU-R 601 luma, replicated to 3 channels): test sets such as the shared
   LFW copy are grey.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
from PIL import Image, ImageFilter

from ..errors import InvalidOptionError

__all__ = ["Augmentation", "hflip", "resized_crop", "downscale", "gaussian_blur", "color_jitter", "to_grayscale",
           "resize", "CROP_RATIO"]

#: aspect-ratio range (width / height) of the random resized crop: faces are aligned, so nearly square
CROP_RATIO = (0.9, 1.1)
#: ITU-R 601-2 luma weights
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(image))


def resize(image: np.ndarray, size: int | Sequence[int]) -> np.ndarray:
    """uint8 ``(H, W, 3)`` resized to ``size`` (an int for a square, or ``(height, width)``), bilinear."""
    height, width = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    if height <= 0 or width <= 0:
        raise InvalidOptionError(f"resize: size must be positive, got {size!r}")
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(_pil(image).resize((width, height), Image.Resampling.BILINEAR))


def hflip(image: np.ndarray) -> np.ndarray:
    """The mirror image (a view)."""
    return image[:, ::-1]


def resized_crop(image: np.ndarray, rng: np.random.Generator, scale: float,
                 ratio: tuple[float, float] = CROP_RATIO) -> np.ndarray:
    """A random box of area fraction in ``[scale, 1]`` and aspect ratio log-uniform in ``ratio``, resized back to the
    image's size (the Inception recipe; after 10 draws that do not fit, the whole image)."""
    height, width = image.shape[:2]
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale, 1.0)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            if (h, w) == (height, width):
                return image
            box = (left, top, left + w, top + h)
            return np.asarray(_pil(image).resize((width, height), Image.Resampling.BILINEAR, box=box))
    return image


def downscale(image: np.ndarray, rng: np.random.Generator, min_factor: float) -> np.ndarray:
    """Down to a factor uniform in ``[min_factor, 1)`` of the size (at least 8 px) and back up, bilinear."""
    height, width = image.shape[:2]
    factor = rng.uniform(min_factor, 1.0)
    small = _pil(image).resize((max(8, round(width * factor)), max(8, round(height * factor))),
                               Image.Resampling.BILINEAR)
    return np.asarray(small.resize((width, height), Image.Resampling.BILINEAR))


def gaussian_blur(image: np.ndarray, rng: np.random.Generator, max_sigma: float) -> np.ndarray:
    """Gaussian blur with sigma uniform in ``[0.1, max_sigma]`` pixels."""
    sigma = rng.uniform(0.1, max(max_sigma, 0.1))
    return np.asarray(_pil(image).filter(ImageFilter.GaussianBlur(radius=sigma)))


def color_jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Brightness ``x·f``, contrast ``mean + f·(x − mean)`` (mean grey level) and saturation ``grey + f·(x − grey)``,
    each ``f`` uniform in ``[max(0, 1 − strength), 1 + strength]``, in a random order; rounded and clipped."""
    low, high = max(0.0, 1.0 - strength), 1.0 + strength
    x = image.astype(np.float32)
    for kind in rng.permutation(3):
        f = float(rng.uniform(low, high))
        if kind == 0:
            x *= f
        elif kind == 1:
            mean = float((x @ LUMA).mean())
            x = mean + f * (x - mean)
        else:
            grey = (x @ LUMA)[:, :, None]
            x = grey + f * (x - grey)
        np.clip(x, 0.0, 255.0, out=x)
    return np.rint(x).astype(np.uint8)


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, rounded, replicated to 3 channels."""
    grey = np.clip(np.rint(image.astype(np.float32) @ LUMA), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


@dataclass(frozen=True)
class Augmentation:
    """The trainer's augmentation pipeline (see the module docstring for the order and the definitions)."""

    flip: bool = True
    crop_scale: float = 1.0
    down_prob: float = 0.0
    down_min: float = 0.5
    blur_prob: float = 0.0
    blur_sigma: float = 1.5
    color_jitter: float = 0.0
    gray_prob: float = 0.0

    def __post_init__(self) -> None:
        checks = {
            "crop_scale": 0.0 < self.crop_scale <= 1.0, "down_prob": 0.0 <= self.down_prob <= 1.0,
            "down_min": 0.0 < self.down_min < 1.0, "blur_prob": 0.0 <= self.blur_prob <= 1.0,
            "blur_sigma": 0.1 <= self.blur_sigma <= 20.0, "color_jitter": 0.0 <= self.color_jitter <= 1.0,
            "gray_prob": 0.0 <= self.gray_prob <= 1.0,
        }
        ranges = {"crop_scale": "(0, 1]", "down_prob": "[0, 1]", "down_min": "(0, 1)", "blur_prob": "[0, 1]",
                  "blur_sigma": "[0.1, 20]", "color_jitter": "[0, 1]", "gray_prob": "[0, 1]"}
        for name, ok in checks.items():
            if not ok:
                raise InvalidOptionError(f"data.{name}={getattr(self, name)!r} is out of range {ranges[name]}")

    @classmethod
    def from_config(cls, data: object) -> Augmentation:
        """The pipeline a run's ``data`` config section describes (its fields of the same names)."""
        return cls(**{f.name: getattr(data, f.name) for f in fields(cls)})

    @property
    def active(self) -> bool:
        """Whether any step besides the flip is on."""
        return (self.crop_scale < 1.0 or self.down_prob > 0 or self.blur_prob > 0 or self.color_jitter > 0
                or self.gray_prob > 0)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment one uint8 ``(H, W, 3)`` RGB crop with the random numbers of ``rng``."""
        if self.flip and rng.random() < 0.5:
            image = hflip(image)
        if not self.active:
            return image
        if self.crop_scale < 1.0:
            image = resized_crop(image, rng, self.crop_scale)
        if self.down_prob > 0 and rng.random() < self.down_prob:
            image = downscale(image, rng, self.down_min)
        if self.blur_prob > 0 and rng.random() < self.blur_prob:
            image = gaussian_blur(image, rng, self.blur_sigma)
        if self.color_jitter > 0:
            image = color_jitter(image, rng, self.color_jitter)
        if self.gray_prob > 0 and rng.random() < self.gray_prob:
            image = to_grayscale(image)
        return image
