"""Deterministic, resumable training input: the sample order and every augmentation are functions of
(seed, epoch, index), never of worker scheduling, so a run resumed at step k sees exactly the batches an
uninterrupted run sees.

* :class:`StepBatchSampler` yields, for micro-batch t (counted over the whole run), the keys ``(epoch, index)`` of
  this rank's slice of global batch t: epoch = t // batches_per_epoch, a permutation seeded by (seed, epoch).
* :class:`TrainSamples` maps a key to ``(image (3, H, W) uint8, label)``: it loads the uint8 image and augments it
  (:class:`~facesphere.data.transforms.Augmentation`: flip, crop, down-scale, blur, colour jitter, grayscale, as the
  config says) with ``numpy.random.default_rng([seed, epoch, index])``. Batches travel from the workers as uint8
  (4x less inter-process traffic than float32) and the loop normalises them on the training device. A sample that
  cannot be loaded becomes a :class:`~facesphere.data.datasets.BadSample` (policy ``skip``) that the collate
  function drops and the loop counts, or raises (policy ``fail``).
* :func:`build_train_set` opens the configured data and leaves out the identities listed in ``data.exclude`` (labels
  renumbered densely, in the original order).

This is facesphere's one training input pipeline (``benchmarks/data.py`` measures it).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data.datasets import (
    BadSample,
    build_dataset,
    collate_skip_bad,
    read_identity_list,
)
from ..data.synthetic import SyntheticConfig, SyntheticFaceDataset, identity_name
from ..data.transforms import Augmentation
from ..errors import DataError, FaceSphereWarning
from ..run.config import Config
from .interrupt import ignore_stop_signals

logger = logging.getLogger(__name__)

LoadFn = Callable[[int], "tuple[np.ndarray, int]"]


class StepBatchSampler(Sampler):
    """Batches of ``(epoch, index)`` keys for micro-batches ``start .. total-1`` of a run (drop-last epochs)."""

    def __init__(self, num_items: int, batch_size: int, seed: int, start: int, total: int,
                 rank: int = 0, world_size: int = 1) -> None:
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start, self.total, self.rank, self.world_size = start, total, rank, world_size
        self.global_batch = batch_size * world_size
        self.batches_per_epoch = num_items // self.global_batch
        if self.batches_per_epoch < 1:
            raise DataError(
                f"the training set has {num_items} items, fewer than one global batch of {self.global_batch}; "
                "lower data.batch_size"
            )

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 0x5A3B1E, epoch]).permutation(self.num_items)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        cached_epoch, perm = -1, None
        for t in range(self.start, self.total):
            epoch, b = divmod(t, self.batches_per_epoch)
            if epoch != cached_epoch:
                cached_epoch, perm = epoch, self.permutation(epoch)
            begin = b * self.global_batch + self.rank * self.batch_size
            yield [(epoch, int(i)) for i in perm[begin : begin + self.batch_size]]

    def __len__(self) -> int:
        return max(self.total - self.start, 0)


class TrainSamples(Dataset):
    """``(epoch, index) -> (image (3, H, W) uint8, label)`` with per-sample seeded augmentations (see
    :func:`normalize`)."""

    def __init__(self, load: LoadFn, num_items: int, *, seed: int, augmentation: Augmentation | None = None,
                 color: str = "rgb", policy: str = "skip", describe: Callable[[int], str] | None = None) -> None:
        self.load, self.num_items = load, num_items
        self.seed, self.color, self.policy = seed, color, policy
        self.augmentation = augmentation if augmentation is not None else Augmentation()
        self.describe = describe

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        try:
            image, label = self.load(index)
        except DataError as error:
            if self.policy == "fail":
                raise
            logger.warning("skipping bad sample %d: %s", index, error)
            source = self.describe(index) if self.describe else f"item {index}"
            return BadSample(index, source, str(error))
        image = self.augmentation(image, np.random.default_rng([self.seed, epoch, index]))
        if self.color == "bgr":
            image = image[:, :, ::-1]
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), int(label)


def normalize(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 ``(images − mean) / std`` (on whatever device the batch is)."""
    return images.float().sub_(mean).div_(std)


class _SyntheticLoad:
    """index -> (uint8 image, label) of a synthetic dataset (a picklable callable for DataLoader workers)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __call__(self, index: int) -> tuple[np.ndarray, int]:
        return self.dataset.image(index), int(self.dataset.labels[index])


class _Subset:
    """index -> (uint8 image, new label) of the kept items of another load function (picklable)."""

    def __init__(self, load: LoadFn, items: np.ndarray, labels: np.ndarray) -> None:
        self.base, self.items, self.labels = load, items, labels

    def __call__(self, index: int) -> tuple[np.ndarray, int]:
        image, _ = self.base(int(self.items[index]))
        return image, int(self.labels[index])


class _DescribeSubset:
    """index of a subset -> the source of the item it stands for (picklable)."""

    def __init__(self, describe: Callable[[int], str] | None, items: np.ndarray) -> None:
        self.describe, self.items = describe, items

    def __call__(self, index: int) -> str:
        item = int(self.items[index])
        return self.describe(item) if self.describe else f"item {item}"


@dataclass
class TrainSet:
    samples: TrainSamples
    num_classes: int
    labels: np.ndarray
    description: str


def build_train_set(config: Config) -> TrainSet:
    """The configured training data as a :class:`TrainSet` (synthetic identities or a dataset spec), without the
    identities ``data.exclude`` lists."""
    data = config.data
    size = tuple(data.image_size)
    if data.train == "synthetic":
        dataset = SyntheticFaceDataset(SyntheticConfig(
            seed=config.train.seed, num_identities=data.synthetic_identities,
            images_per_identity=data.synthetic_images_per_identity, difficulty=data.synthetic_difficulty,
            identity_spread=data.synthetic_identity_spread, label_noise=data.synthetic_label_noise,
            image_size=size[0],
        ))
        load: LoadFn = _SyntheticLoad(dataset)
        description = (f"synthetic: {data.synthetic_identities} identities x {data.synthetic_images_per_identity} "
                       f"images (difficulty {data.synthetic_difficulty})")
        describe = None
        classes = [identity_name(c, dataset.num_classes) for c in range(dataset.num_classes)]
    else:
        dataset = build_dataset(data.train, expected_size=size)
        load = dataset.load_array
        description = f"{data.train}: {len(dataset)} images, {dataset.num_classes} classes"
        describe = dataset.source
        classes = list(dataset.classes)
    labels = np.asarray(dataset.labels, dtype=np.int64)
    num_classes = int(dataset.num_classes)
    if data.exclude:
        names = {name for file in data.exclude for name in read_identity_list(file)}
        drop = np.array([c in names for c in classes], dtype=bool)
        items = np.flatnonzero(~drop[labels])
        if items.size == 0:
            raise DataError(f"data.exclude ({', '.join(data.exclude)}) leaves no training image")
        unknown = sorted(names - set(classes))
        if unknown:
            logger.warning("data.exclude: %d listed identities are not in the training set (e.g. %s)",
                           len(unknown), unknown[0])
        new_id = np.cumsum(~drop) - 1
        kept_labels = new_id[labels[items]].astype(np.int64)
        description += f"; {int(drop.sum())} identities ({labels.size - items.size} images) excluded"
        load, describe = _Subset(load, items, kept_labels), _DescribeSubset(describe, items)
        labels, num_classes = kept_labels, int((~drop).sum())
    samples = TrainSamples(load, len(labels), seed=config.train.seed, augmentation=Augmentation.from_config(data),
                           color=data.color, policy=data.bad_samples, describe=describe)
    return TrainSet(samples, num_classes, labels, description)


def _is_synthetic(spec: str) -> bool:
    return spec == "synthetic" or spec.startswith("synthetic:")


def warn_synthetic_validation(config: Config) -> None:
    """Warn when real faces (``data.train``) are validated on synthetic faces only (``data.val``'s default): the
    validation accuracy and the choice of ``best.pt`` would then say little about real faces."""
    data = config.data
    if _is_synthetic(data.train) or not data.val or not all(_is_synthetic(spec) for spec in data.val):
        return
    warnings.warn(
        f"training on real faces ({data.train}) but validating on synthetic faces only (data.val={list(data.val)}): "
        "the validation accuracy and best.pt say little about real faces. Set --data.val to a real verification "
        "set (lfw:DIR, bin:FILE.bin, pairs:FILE), e.g. held-out identities of the training set: 'facesphere data "
        "split TRAIN --out OUT', then --data.val pairs:OUT/heldout_pairs.txt --data.exclude "
        "OUT/heldout_identities.txt", FaceSphereWarning, stacklevel=3)


def make_loader(train_set: TrainSet, config: Config, start: int, total: int, rank: int = 0,
                world_size: int = 1) -> DataLoader:
    sampler = StepBatchSampler(len(train_set.samples), config.data.batch_size, config.train.seed, start, total,
                               rank, world_size)
    workers = config.data.num_workers
    return DataLoader(
        train_set.samples, batch_sampler=sampler, num_workers=workers, collate_fn=collate_skip_bad,
        pin_memory=torch.cuda.is_available(), persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=ignore_stop_signals if workers > 0 else None,  # Ctrl-C is the main process's to handle
    )
