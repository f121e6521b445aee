"""The synthetic training set: a torch ``Dataset`` of identities x images, with optional label noise."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ...errors import InvalidOptionError
from .identity import EVAL_IDENTITY_OFFSET, TAG_NOISE, SyntheticConfig, check_nonneg_int
from .render import SyntheticFaces

# ----------------------------------------------------------------------------------------------------------------------
# label noise and the training / evaluation datasets


def noisy_labels(
    seed: int, num_identities: int, images_per_identity: int, fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic label noise: ``(labels, true_labels, noisy_mask)`` for images ordered identity-major.

    Exactly ``round(fraction * N)`` images (N = ``num_identities * images_per_identity``) get the label of another,
    uniformly drawn, *different* identity; the choice depends only on the arguments.
    """
    num_identities = check_nonneg_int(num_identities, "num_identities", 1)
    images_per_identity = check_nonneg_int(images_per_identity, "images_per_identity", 1)
    if not 0.0 <= float(fraction) <= 1.0:
        raise InvalidOptionError(f"label_noise must be in [0, 1], got {fraction!r}")
    n = num_identities * images_per_identity
    true = np.repeat(np.arange(num_identities, dtype=np.int64), images_per_identity)
    labels = true.copy()
    mask = np.zeros(n, dtype=bool)
    k = int(round(float(fraction) * n))
    if k:
        if num_identities < 2:
            raise InvalidOptionError("label_noise > 0 needs at least 2 identities")
        rng = np.random.default_rng([TAG_NOISE, int(seed), num_identities, images_per_identity])
        idx = np.sort(rng.choice(n, size=k, replace=False))
        labels[idx] = (true[idx] + rng.integers(1, num_identities, size=k)) % num_identities
        mask[idx] = True
    return labels, true, mask


class SyntheticFaceDataset(torch.utils.data.Dataset):
    """Synthetic faces as a map-style dataset: ``ds[i] -> (image, label)``.

    Item ``i`` is image ``i % images_per_identity`` of identity ``i // images_per_identity`` (identity-major order).
    By default the image is a float32 tensor (3, S, S) normalised ``(x / 255 - 0.5) / 0.5`` (arcface_torch, RGB);
    with ``transform`` the uint8 (S, S, 3) RGB array is passed to it and its result is returned instead.

    * ``split="train"``: identities ``0 .. num_identities - 1``; ``labels`` carry ``config.label_noise``.
    * ``split="eval"``: as many held-out identities (``EVAL_IDENTITY_OFFSET + k``), never noisy.

    Attributes: ``labels`` (int64, what ``__getitem__`` returns), ``true_labels``, ``noisy_mask`` (bool),
    ``num_classes``, ``identities`` (generator identity of each class).  Rendering is a pure function of the index,
    so DataLoader workers (fork or spawn) produce identical items; each worker keeps its own identity cache.
    """

    def __init__(
        self,
        config: SyntheticConfig | None = None,
        *,
        split: str = "train",
        transform: Callable[[np.ndarray], Any] | None = None,
    ):
        cfg = config if config is not None else SyntheticConfig()
        if not isinstance(cfg, SyntheticConfig):
            raise InvalidOptionError(f"config must be a SyntheticConfig, got {type(cfg).__name__}")
        if split not in ("train", "eval"):
            raise InvalidOptionError(f"split must be 'train' or 'eval', got {split!r}")
        if transform is not None and not callable(transform):
            raise InvalidOptionError(f"transform must be callable, got {type(transform).__name__}")
        self.config = cfg
        self.split = split
        self.transform = transform
        self.faces = SyntheticFaces(cfg)
        self.num_classes = cfg.num_identities
        self.images_per_identity = cfg.images_per_identity
        offset = 0 if split == "train" else EVAL_IDENTITY_OFFSET
        self.identities = offset + np.arange(cfg.num_identities, dtype=np.int64)
        noise = cfg.label_noise if split == "train" else 0.0
        self.labels, self.true_labels, self.noisy_mask = noisy_labels(
            cfg.seed, cfg.num_identities, cfg.images_per_identity, noise
        )

    def __len__(self) -> int:
        return self.num_classes * self.images_per_identity

    def image(self, index: int) -> np.ndarray:
        """The uint8 (S, S, 3) RGB image of item ``index`` (no transform)."""
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n <= index < n:
            raise IndexError(f"index {index!r} out of range for a dataset of {n} images")
        index = int(index) % n
        cls, k = divmod(index, self.images_per_identity)
        return self.faces.render(int(self.identities[cls]), k)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img = self.image(index)
        label = int(self.labels[int(index) % len(self)])
        if self.transform is not None:
            return self.transform(img), label
        t = torch.from_numpy(img).permute(2, 0, 1).to(torch.float32)
        return t.mul_(2.0 / 255.0).sub_(1.0), label

    def __repr__(self) -> str:
        return (f"SyntheticFaceDataset(split={self.split!r}, classes={self.num_classes}, "
                f"images={len(self)}, noisy={int(self.noisy_mask.sum())})")
