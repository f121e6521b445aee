"""Image transforms for face recognition, without torchvision.

Conventions
-----------
* Every transform is a callable taking one image and returning one image.
* Before normalisation an image is a ``uint8`` numpy array of shape ``(H, W, 3)`` in RGB order (what
  :func:`facesphere.data.image.decode_image` returns). :class:`Normalize` turns it into a ``float32`` torch tensor of
  shape ``(3, H, W)``; after that, :class:`RandomHorizontalFlip` also accepts such ``(C, H, W)`` tensors (torch tensors
  are always channel-first here, numpy arrays always channel-last).
* :class:`Compose` chains transforms.

Randomness and DataLoader workers
---------------------------------
Random transforms (:class:`RandomHorizontalFlip`, :class:`RandomResizedCrop`, :class:`ColorJitter`) draw from a
numpy ``Generator``:

* ``generator=None`` (the default, what training uses): a per-process generator seeded from
  ``torch.initial_seed()``. In a DataLoader worker that seed is ``base_seed + worker_id``, where ``base_seed`` is
  drawn from the loader's own generator for every new set of workers, so workers never repeat each other's
  augmentations and a seeded loader (see :func:`facesphere.data.datasets.make_train_loader`) reproduces them.
  The generator is re-created whenever the process id or ``torch.initial_seed()`` changes, so a forked worker never
  reuses the parent's stream.
* ``generator=<int | numpy Generator | torch Generator>``: an explicit, reproducible stream (tests, debugging).
  A transform that finds itself in a *different process* from the one that built it (a DataLoader worker) derives a
  fresh stream from that generator's seed material and ``torch.initial_seed()``, so even explicit generators do not
  make two workers repeat the same flips.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.utils.data
from PIL import Image

from ..errors import InvalidOptionError

__all__ = [
    "Compose",
    "Resize",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "ColorJitter",
    "Normalize",
    "ToCHWTensor",
    "normalize_batch",
    "build_train_transform",
    "build_eval_transform",
    "worker_rng",
]

# --------------------------------------------------------------------------------------------------------------------
# randomness

_PROCESS_RNG: np.random.Generator | None = None
_PROCESS_RNG_KEY: tuple[int, int] | None = None


def worker_rng() -> np.random.Generator:
    """The per-process numpy generator seeded from ``torch.initial_seed()`` (distinct in every DataLoader worker)."""
    global _PROCESS_RNG, _PROCESS_RNG_KEY
    key = (os.getpid(), torch.initial_seed())
    if _PROCESS_RNG is None or key != _PROCESS_RNG_KEY:
        _PROCESS_RNG = np.random.default_rng(_process_seed_material([0x5EED_FACE]))
        _PROCESS_RNG_KEY = key
    return _PROCESS_RNG


_IMPORT_PID = os.getpid()


def _process_seed_material(base: list[int]) -> list[int]:
    """``base`` + this process's torch seed (+ the pid in a forked process that is not a DataLoader worker)."""
    material = list(base) + [torch.initial_seed() & 0xFFFFFFFFFFFFFFFF]
    if os.getpid() != _IMPORT_PID and torch.utils.data.get_worker_info() is None:
        material.append(os.getpid())  # e.g. a multiprocessing.Pool child: torch's seed is the parent's
    return material


class _Random:
    """Mix-in for transforms that draw random numbers (see the module docstring)."""

    def _init_rng(self, generator: Any) -> None:
        self._pid = os.getpid()
        self._seed_material: list[int] | None
        if generator is None:
            self._gen: np.random.Generator | None = None
            self._seed_material = None
        elif isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
            self._seed_material = [int(generator) & 0xFFFFFFFFFFFFFFFF]
            self._gen = np.random.default_rng(self._seed_material)
        elif isinstance(generator, np.random.Generator):
            self._gen = generator
            self._seed_material = None
        elif isinstance(generator, torch.Generator):
            # Draw the seed from the torch generator (advances it, as using it would).
            seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
            self._seed_material = [seed]
            self._gen = np.random.default_rng(self._seed_material)
        else:
            raise InvalidOptionError(
                f"{type(self).__name__}: generator must be None, an int seed, a numpy Generator or a torch "
                f"Generator, got {type(generator).__name__}"
            )

    @property
    def rng(self) -> np.random.Generator:
        if self._gen is None:
            return worker_rng()
        if os.getpid() != self._pid:
            # Copied into another process (DataLoader worker): derive a distinct stream for this process.
            if self._seed_material is not None:
                material = list(self._seed_material)
            else:
                material = [int(x) for x in self._gen.integers(0, 2**63, size=2)]
            self._gen = np.random.default_rng(_process_seed_material(material))
            self._pid = os.getpid()
        return self._gen

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --------------------------------------------------------------------------------------------------------------------
# helpers


def _as_hwc_uint8(img: Any, who: str) -> np.ndarray:
    if isinstance(img, np.ndarray):
        if img.ndim != 3 or img.dtype != np.uint8:
            raise TypeError(f"{who}: expected a uint8 (H, W, C) numpy array, got {img.dtype} {img.shape}")
        return img
    if isinstance(img, Image.Image):
        return np.asarray(img.convert("RGB"))
    raise TypeError(
        f"{who}: expected a uint8 (H, W, C) numpy array (apply it before Normalize), got {type(img).__name__}"
    )


def _pair(size: int | Sequence[int], who: str) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        if len(size) != 2:
            raise InvalidOptionError(f"{who}: size must be an int or (height, width), got {size!r}")
        h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise InvalidOptionError(f"{who}: size must be positive, got {size!r}")
    return h, w


_INTERP = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


def _interp(name: str, who: str) -> Image.Resampling:
    try:
        return _INTERP[name]
    except KeyError:
        raise InvalidOptionError(f"{who}: interpolation must be one of {sorted(_INTERP)}, got {name!r}") from None


def _resize_box(
    arr: np.ndarray, size_hw: tuple[int, int], resample: Image.Resampling, box: tuple[int, int, int, int] | None
) -> np.ndarray:
    """Crop ``box`` (left, top, right, bottom) of ``arr`` and resize it to ``size_hw`` in one Pillow call."""
    h, w = size_hw
    if box is None and arr.shape[0] == h and arr.shape[1] == w:
        return arr
    if box is not None and box[2] - box[0] == w and box[3] - box[1] == h:
        return np.ascontiguousarray(arr[box[1] : box[3], box[0] : box[2]])
    im = Image.fromarray(arr)
    out = im.resize((w, h), resample=resample, box=box)
    return np.array(out)


# --------------------------------------------------------------------------------------------------------------------
# transforms


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]):
        self.transforms = list(transforms)

    def __call__(self, img: Any) -> Any:
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


class Resize:
    """Resize a ``(H, W, 3)`` uint8 array to ``size`` (int = square, or ``(height, width)``); no-op if already so."""

    def __init__(self, size: int | Sequence[int], interpolation: str = "bilinear"):
        self.size = _pair(size, "Resize")
        self.interpolation = interpolation
        self._resample = _interp(interpolation, "Resize")

    def __call__(self, img: Any) -> np.ndarray:
        arr = _as_hwc_uint8(img, "Resize")
        return _resize_box(arr, self.size, self._resample, None)

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, interpolation={self.interpolation!r})"


class RandomHorizontalFlip(_Random):
    """Mirror left-right with probability ``p``.

    Works on ``(H, W, C)`` numpy arrays (flips axis 1) and on ``(C, H, W)`` / ``(H, W)`` torch tensors (flips the last
    dimension). On numpy arrays it returns a mirrored *view* (negative stride, no copy): the next transform that copies
    (:class:`Normalize`, a resize) pays for it once. Returns the input itself when it does not flip.
    """

    def __init__(self, p: float = 0.5, generator: Any = None):
        if not 0.0 <= p <= 1.0:
            raise InvalidOptionError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)
        self._init_rng(generator)

    def __call__(self, img: Any) -> Any:
        if self.p <= 0.0:
            return img
        if self.p < 1.0 and self.rng.random() >= self.p:
            return img
        if isinstance(img, torch.Tensor):
            return img.flip(-1)
        if isinstance(img, np.ndarray):
            if img.ndim < 2:
                raise TypeError(f"RandomHorizontalFlip: expected an image array, got shape {img.shape}")
            return img[:, ::-1]  # a view: Normalize's single strided copy does the work
        raise TypeError(f"RandomHorizontalFlip: expected a numpy array or torch tensor, got {type(img).__name__}")

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomResizedCrop(_Random):
    """Crop a random area/aspect-ratio box and resize it to ``size`` (the Inception / torchvision recipe).

    Args:
        size: output ``(height, width)`` (int = square); ``None`` keeps the input's size.
        scale: range of the crop's area as a fraction of the image area.
        ratio: range of the crop's aspect ratio (width / height), sampled log-uniformly.
        interpolation: Pillow resampling filter name.

    After 10 unsuccessful draws it falls back to a centre crop with the ratio clamped into ``ratio``.
    """

    def __init__(
        self,
        size: int | Sequence[int] | None = None,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        interpolation: str = "bilinear",
        generator: Any = None,
    ):
        self.size = None if size is None else _pair(size, "RandomResizedCrop")
        if not (0.0 < scale[0] <= scale[1] <= 1.0):
            raise InvalidOptionError(f"RandomResizedCrop: scale must satisfy 0 < min <= max <= 1, got {scale}")
        if not (0.0 < ratio[0] <= ratio[1]):
            raise InvalidOptionError(f"RandomResizedCrop: ratio must satisfy 0 < min <= max, got {ratio}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.interpolation = interpolation
        self._resample = _interp(interpolation, "RandomResizedCrop")
        self._init_rng(generator)

    def get_params(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Draw ``(top, left, crop_height, crop_width)`` for an image of the given size."""
        rng = self.rng
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * rng.uniform(self.scale[0], self.scale[1])
            aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w = width
            h = int(round(w / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h = height
            w = int(round(h * self.ratio[1]))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img: Any) -> np.ndarray:
        arr = _as_hwc_uint8(img, "RandomResizedCrop")
        height, width = arr.shape[:2]
        top, left, h, w = self.get_params(height, width)
        out_size = self.size if self.size is not None else (height, width)
        return _resize_box(arr, out_size, self._resample, (left, top, left + w, top + h))

    def __repr__(self) -> str:
        return (
            f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={tuple(round(r, 4) for r in self.ratio)}, "
            f"interpolation={self.interpolation!r})"
        )


def _factor_range(value: float | Sequence[float], name: str) -> tuple[float, float] | None:
    if isinstance(value, (int, float, np.floating, np.integer)):
        v = float(value)
        if v < 0:
            raise InvalidOptionError(f"ColorJitter: {name} must be >= 0, got {value}")
        if v == 0:
            return None
        return max(0.0, 1.0 - v), 1.0 + v
    lo, hi = float(value[0]), float(value[1])
    if not 0.0 <= lo <= hi:
        raise InvalidOptionError(f"ColorJitter: {name} range must satisfy 0 <= min <= max, got {value}")
    if lo == hi == 1.0:
        return None
    return lo, hi


class ColorJitter(_Random):
    """Randomly change brightness, contrast and saturation (torchvision's definitions; no hue).

    Each argument is ``j`` (factor drawn uniformly from ``[max(0, 1 - j), 1 + j]``) or an explicit ``(min, max)``.
    The enabled adjustments are applied in a random order, as in torchvision:

    * brightness ``f``: ``img * f``
    * contrast ``f``: blend with the mean of the image's grey level, ``mean + f * (img - mean)``
    * saturation ``f``: blend with the image's grey version, ``grey + f * (img - grey)``

    Grey uses ITU-R 601-2 luma (``0.299 R + 0.587 G + 0.114 B``). Results are rounded and clipped to ``uint8``.
    """

    def __init__(
        self,
        brightness: float | Sequence[float] = 0.0,
        contrast: float | Sequence[float] = 0.0,
        saturation: float | Sequence[float] = 0.0,
        generator: Any = None,
    ):
        self.brightness = _factor_range(brightness, "brightness")
        self.contrast = _factor_range(contrast, "contrast")
        self.saturation = _factor_range(saturation, "saturation")
        self._init_rng(generator)

    _LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

    def __call__(self, img: Any) -> np.ndarray:
        arr = _as_hwc_uint8(img, "ColorJitter")
        ops = [
            (k, r)
            for k, r in (("brightness", self.brightness), ("contrast", self.contrast), ("saturation", self.saturation))
            if r is not None
        ]
        if not ops:
            return arr
        rng = self.rng
        order = rng.permutation(len(ops))
        x = arr.astype(np.float32)
        for idx in order:
            kind, (lo, hi) = ops[int(idx)]
            f = float(rng.uniform(lo, hi))
            if kind == "brightness":
                x *= f
            elif kind == "contrast":
                mean = float((x @ self._LUMA).mean())
                x = mean + f * (x - mean)
            else:
                grey = (x @ self._LUMA)[:, :, None]
                x = grey + f * (x - grey)
            np.clip(x, 0.0, 255.0, out=x)
        return np.rint(x).astype(np.uint8)

    def __repr__(self) -> str:
        return f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, saturation={self.saturation})"


class Normalize:
    """``uint8 (H, W, 3)`` array -> ``float32 (3, H, W)`` tensor ``(x / scale - mean) / std``.

    Args:
        mean, std: scalars or one value per *output* channel.
        scale: divide by this first. The common conventions:

            * ArcFace / InsightFace: ``Normalize(127.5, 127.5)`` (the default), identical to torchvision's
              ``ToTensor()`` + ``Normalize(0.5, 0.5)``, i.e. ``Normalize(0.5, 0.5, scale=255)`` (up to float rounding);
            * SphereFace / OpenSphere: ``Normalize(127.5, 128.0)``.
        color: ``"rgb"`` keeps the input's order, ``"bgr"`` reverses it (the input is assumed to be RGB, as decoded).

    Also accepts a ``uint8`` (H, W, 3) torch tensor or a PIL image. Computed as one multiply-add in float32.
    """

    def __init__(
        self,
        mean: float | Sequence[float] = 127.5,
        std: float | Sequence[float] = 127.5,
        *,
        scale: float = 1.0,
        color: str = "rgb",
    ):
        if color not in ("rgb", "bgr"):
            raise InvalidOptionError(f"Normalize: color must be 'rgb' or 'bgr', got {color!r}")
        mean_t = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
        if mean_t.numel() not in (1, 3) or std_t.numel() not in (1, 3):
            raise InvalidOptionError(f"Normalize: mean and std must be scalars or 3 values, got {mean!r}, {std!r}")
        if bool((std_t == 0).any()) or scale == 0:
            raise InvalidOptionError(f"Normalize: std and scale must be non-zero, got std={std!r} scale={scale!r}")
        self.mean = mean
        self.std = std
        self.scale = float(scale)
        self.color = color
        # y = x * a - b  with a = 1 / (scale * std), b = mean / std
        a = 1.0 / (self.scale * std_t)
        b = mean_t / std_t
        if a.numel() == 1 and b.numel() == 1:
            self._a_np: np.ndarray | np.float32 = np.float32(a[0])
            self._b_np: np.ndarray | np.float32 = np.float32(b[0])
        else:
            ones = np.ones((3, 1, 1), dtype=np.float32)
            self._a_np = a.numpy().astype(np.float32).reshape(-1, 1, 1) * ones
            self._b_np = b.numpy().astype(np.float32).reshape(-1, 1, 1) * ones

    @classmethod
    def arcface(cls, color: str = "rgb") -> Normalize:
        """``(x - 127.5) / 127.5`` (InsightFace, ArcFace, CosFace, most recipes)."""
        return cls(127.5, 127.5, color=color)

    @classmethod
    def sphereface(cls, color: str = "rgb") -> Normalize:
        """``(x - 127.5) / 128`` (SphereFace / OpenSphere)."""
        return cls(127.5, 128.0, color=color)

    def __call__(self, img: Any) -> torch.Tensor:
        if isinstance(img, torch.Tensor):
            if img.ndim != 3 or img.dtype != torch.uint8 or img.shape[2] != 3:
                raise TypeError(f"Normalize: expected a uint8 (H, W, 3) tensor, got {img.dtype} {tuple(img.shape)}")
            arr = img.numpy()
        else:
            arr = _as_hwc_uint8(img, "Normalize")
            if arr.shape[2] != 3:
                raise TypeError(f"Normalize: expected 3 channels, got shape {arr.shape}")
        if self.color == "bgr":
            arr = arr[:, :, ::-1]
        # One strided pass uint8 HWC (any strides: flips stay views until here) -> float32 CHW, then one subtract.
        out = np.empty((3, arr.shape[0], arr.shape[1]), dtype=np.float32)
        np.multiply(arr.transpose(2, 0, 1), self._a_np, out=out)
        out -= self._b_np
        return torch.from_numpy(out)

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise a ``uint8 (B, 3, H, W)`` (or ``(3, H, W)``) tensor already in the output channel order.

        Bit-for-bit what :meth:`__call__` computes per image (the same float32 multiply, then subtract), on the
        tensor's device: workers can ship 4x smaller uint8 batches and normalise in the main process or on the GPU.
        """
        if images.dtype != torch.uint8 or images.ndim not in (3, 4) or images.shape[-3] != 3:
            raise TypeError(
                f"Normalize.batch: expected a uint8 (B, 3, H, W) tensor, got {images.dtype} {tuple(images.shape)}"
            )
        a = torch.as_tensor(self._a_np, dtype=torch.float32, device=images.device)
        b = torch.as_tensor(self._b_np, dtype=torch.float32, device=images.device)
        return images.to(torch.float32).mul_(a).sub_(b)

    def __repr__(self) -> str:
        extra = f", scale={self.scale}" if self.scale != 1.0 else ""
        return f"Normalize(mean={self.mean}, std={self.std}{extra}, color={self.color!r})"


class ToCHWTensor:
    """``uint8 (H, W, 3)`` array -> ``uint8 (3, H, W)`` tensor, no normalisation (the fast path for GPU training).

    A batch of these is 4x smaller than float32 images to move between DataLoader workers and to the GPU; normalise
    it there with :func:`normalize_batch`. ``color="bgr"`` reverses the channel order.
    """

    def __init__(self, color: str = "rgb"):
        if color not in ("rgb", "bgr"):
            raise InvalidOptionError(f"ToCHWTensor: color must be 'rgb' or 'bgr', got {color!r}")
        self.color = color

    def __call__(self, img: Any) -> torch.Tensor:
        arr = _as_hwc_uint8(img, "ToCHWTensor")
        if self.color == "bgr":
            arr = arr[:, :, ::-1]
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    def __repr__(self) -> str:
        return f"ToCHWTensor(color={self.color!r})"


def normalize_batch(
    images: torch.Tensor,
    mean: float | Sequence[float] = 127.5,
    std: float | Sequence[float] = 127.5,
    *,
    scale: float = 1.0,
) -> torch.Tensor:
    """``(x / scale - mean) / std`` of a ``uint8 (B, 3, H, W)`` batch as float32, on the batch's device.

    The batched counterpart of :class:`Normalize` (``Normalize(mean, std, scale=scale).batch(images)``): equal, bit
    for bit, to stacking ``Normalize(mean, std)(image)``. Channel order is whatever the batch holds
    (``ToCHWTensor(color=...)`` decided it).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise TypeError(f"normalize_batch: expected a (B, 3, H, W) tensor, got shape {tuple(images.shape)}")
    return Normalize(mean, std, scale=scale).batch(images)


# --------------------------------------------------------------------------------------------------------------------
# recipes


def build_train_transform(
    flip: bool = True,
    random_resized_crop: bool | tuple[float, float] = False,
    color_jitter: float = 0.0,
    mean: float | Sequence[float] = 127.5,
    std: float | Sequence[float] = 127.5,
    color: str = "rgb",
    *,
    size: int | Sequence[int] | None = None,
    generator: Any = None,
    normalize: bool = True,
) -> Compose:
    """The training pipeline: [random resized crop] -> [colour jitter] -> [flip] -> normalise.

    Args:
        flip: random horizontal flip with p = 0.5 (on for every recipe in the papers).
        random_resized_crop: ``True`` for a mild face-friendly crop (``scale=(0.8, 1.0)``, ``ratio=(0.9, 1.1)``), or an
            explicit ``(min_scale, max_scale)``; off by default (aligned faces are already cropped).
        color_jitter: strength ``j`` for brightness, contrast and saturation alike (0 = off).
        mean, std, color: see :class:`Normalize`.
        size: output ``(height, width)`` of the crop / final resize; ``None`` keeps the input size.
        generator: seed / generator for reproducible augmentation (see the module docstring); each random transform
            gets its own stream derived from it.
        normalize: ``False`` ends with :class:`ToCHWTensor` instead (uint8 ``(3, H, W)``; ``mean``/``std`` unused):
            normalise the batches on the GPU with :func:`normalize_batch`.
    """
    gens = _split_generator(generator, 3)
    ts: list[Callable[[Any], Any]] = []
    if random_resized_crop:
        scale = (0.8, 1.0) if random_resized_crop is True else tuple(random_resized_crop)
        ts.append(RandomResizedCrop(size, scale=scale, ratio=(0.9, 1.1), generator=gens[0]))  # type: ignore[arg-type]
    elif size is not None:
        ts.append(Resize(size))
    if color_jitter:
        ts.append(ColorJitter(color_jitter, color_jitter, color_jitter, generator=gens[1]))
    if flip:
        ts.append(RandomHorizontalFlip(0.5, generator=gens[2]))
    ts.append(Normalize(mean, std, color=color) if normalize else ToCHWTensor(color))
    return Compose(ts)


def build_eval_transform(
    size: int | Sequence[int] | None = None,
    mean: float | Sequence[float] = 127.5,
    std: float | Sequence[float] = 127.5,
    color: str = "rgb",
    *,
    normalize: bool = True,
) -> Compose:
    """The evaluation pipeline: [resize to ``size``] -> normalise (no randomness); ``normalize=False`` as in
    :func:`build_train_transform`."""
    ts: list[Callable[[Any], Any]] = []
    if size is not None:
        ts.append(Resize(size))
    ts.append(Normalize(mean, std, color=color) if normalize else ToCHWTensor(color))
    return Compose(ts)


def _split_generator(generator: Any, n: int) -> list[Any]:
    if generator is None:
        return [None] * n
    if isinstance(generator, np.random.Generator):
        return list(generator.spawn(n))
    if isinstance(generator, torch.Generator):
        return [int(torch.randint(0, 2**62, (1,), generator=generator).item()) for _ in range(n)]
    if isinstance(generator, (int, np.integer)):
        return [int(s.generate_state(1, np.uint64)[0]) for s in np.random.SeedSequence(int(generator)).spawn(n)]
    raise InvalidOptionError(
        f"generator must be None, an int seed, a numpy Generator or a torch Generator, got {type(generator).__name__}"
    )
