"""The generic training DataLoader of image datasets: bad-sample policy and uint8 batches normalised in the main process.

:class:`SkipBadSamples` wraps a dataset with a policy (``"fail"``: re-raise; ``"skip"``: warn and return a
:class:`~facesphere.data.datasets.BadSample`); :class:`FaceDataLoader` (what :func:`make_train_loader` returns) adds the
bad-sample counts of every batch up and raises a clean :class:`DataError` when more than ``max_bad_fraction`` of the
dataset turns out bad within one epoch.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.utils.data
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError, InvalidOptionError
from .datasets import BadSample, Batch, FaceDataset, collate_skip_bad
from .transforms import Compose, Normalize, ToCHWTensor

logger = logging.getLogger(__name__)

class SkipBadSamples(Dataset):
    """Apply a bad-sample policy to a dataset (see the module docstring).

    Args:
        dataset: any dataset whose ``__getitem__`` raises :class:`DataError` for a bad item.
        policy: ``"skip"`` (return a :class:`BadSample`, warn once per file per process) or ``"fail"`` (re-raise).
        max_bad_fraction: largest tolerated fraction of bad items per epoch, enforced by :class:`FaceDataLoader`
            over all workers (and here, for in-process use without a loader); ``None`` = unlimited.

    ``num_bad`` / ``num_seen`` count what *this process* has met (in-process iteration only; with workers use the
    loader's counts). ``labels``, ``num_classes``, ``classes`` and ``source`` are forwarded from ``dataset``.
    """

    def __init__(self, dataset: Dataset, policy: str = "skip", max_bad_fraction: float | None = 0.01):
        if policy not in ("skip", "fail"):
            raise InvalidOptionError(f"bad_sample_policy must be 'skip' or 'fail', got {policy!r}")
        if max_bad_fraction is not None and not 0.0 <= max_bad_fraction <= 1.0:
            raise InvalidOptionError(f"max_bad_fraction must be in [0, 1] or None, got {max_bad_fraction!r}")
        self.dataset = dataset
        self.policy = policy
        self.max_bad_fraction = max_bad_fraction
        self.num_bad = 0
        self.num_seen = 0
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    @property
    def labels(self) -> np.ndarray:
        return self.dataset.labels  # type: ignore[attr-defined]

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes  # type: ignore[attr-defined]

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes  # type: ignore[attr-defined]

    @property
    def transform(self) -> Any:
        return getattr(self.dataset, "transform", None)

    def source(self, index: int) -> str:
        src = getattr(self.dataset, "source", None)
        return src(index) if callable(src) else f"item {index}"

    def max_bad(self) -> float:
        """How many bad items one epoch may hold (``inf`` when unlimited)."""
        if self.max_bad_fraction is None:
            return float("inf")
        return self.max_bad_fraction * len(self)

    def __getitem__(self, index: int) -> Any:
        self.num_seen += 1
        try:
            return self.dataset[index]
        except DataError as exc:
            if self.policy == "fail":
                raise
            self.num_bad += 1
            message = str(exc)
            source = self.source(index)
            if source not in self._warned:
                self._warned.add(source)
                logger.warning("skipping bad sample %d: %s", index, message)
            if torch.utils.data.get_worker_info() is None and self.num_bad > self.max_bad():
                raise DataError(_too_many_bad(self.num_bad, self.num_seen, len(self), self.max_bad_fraction, message))
            return BadSample(int(index), source, message)

    def __repr__(self) -> str:
        return f"SkipBadSamples({self.dataset!r}, policy={self.policy!r}, max_bad_fraction={self.max_bad_fraction})"


def _too_many_bad(num_bad: int, num_seen: int, total: int, fraction: float | None, last: str) -> str:
    return (
        f"{num_bad} bad samples among the first {num_seen} read this epoch exceed max_bad_fraction={fraction} of "
        f"{total} items; the dataset looks broken (last: {last}). Run 'facesphere data verify' on it, or raise "
        "max_bad_fraction"
    )


# --------------------------------------------------------------------------------------------------------------------
# normalising batches instead of items

NORMALIZE_IN = ("main", "worker", "none")


class _DeferredNormalize(Dataset):
    """A :class:`FaceDataset` whose final :class:`Normalize` is replaced by :class:`ToCHWTensor` (uint8 items)."""

    def __init__(self, dataset: FaceDataset, transform: Callable[[np.ndarray], Any]):
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def labels(self) -> np.ndarray:
        return self.dataset.labels

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    def source(self, index: int) -> str:
        return self.dataset.source(index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        arr, label = self.dataset.load_array(index)
        return self.transform(arr), label


def _split_normalize(dataset: Dataset) -> tuple[Dataset, Normalize | None]:
    """If ``dataset`` is a FaceDataset whose transform ends in :class:`Normalize`, the uint8 twin and that Normalize."""
    if not isinstance(dataset, FaceDataset):
        return dataset, None
    t = dataset.transform
    steps = list(t.transforms) if isinstance(t, Compose) else [t]
    if not steps or type(steps[-1]) is not Normalize:
        return dataset, None
    norm = steps[-1]
    # the same transform objects (and so the same random streams) up to the final step
    return _DeferredNormalize(dataset, Compose(steps[:-1] + [ToCHWTensor(norm.color)])), norm


# --------------------------------------------------------------------------------------------------------------------
# loader


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed numpy's and Python's global RNGs from the worker's torch seed.

    The torch seed of a worker is ``base_seed + worker_id`` with ``base_seed`` drawn from the loader's generator, so
    this is distinct per worker and reproducible for a seeded loader. (facesphere's own transforms do not need it --
    they seed themselves from ``torch.initial_seed()``, see :mod:`facesphere.data.transforms` -- but user transforms
    calling ``np.random`` / ``random`` do.)
    """
    seed = torch.initial_seed()
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _clean_worker_message(exc: BaseException) -> str:
    """The original message of an exception re-raised by a DataLoader worker (without the traceback text)."""
    text = str(exc)
    if not text.startswith("Caught "):
        return text
    cls = type(exc)
    marker = f"{cls.__module__}.{cls.__qualname__}: "
    pos = text.rfind(marker)
    if pos < 0:
        return text
    return text[pos + len(marker) :].strip()


class FaceDataLoader(DataLoader):
    """A :class:`torch.utils.data.DataLoader` that counts bad samples across workers.

    Iterating yields whatever the collate function returns -- with :func:`collate_skip_bad` (the default of
    :func:`make_train_loader`) a :class:`Batch` ``(images, labels, num_bad)``. With ``normalize_in="main"`` the
    workers send uint8 batches and the loader normalises them here with ``normalizer``. It adds up ``num_bad`` into
    ``num_bad`` / ``num_samples`` (lifetime) and ``epoch_bad`` / ``epoch_samples`` (current iteration), and raises
    :class:`DataError` when ``epoch_bad > max_bad_fraction * len(dataset)``. A :class:`DataError` raised in a worker
    (policy ``"fail"``) is re-raised here with its original message, without the worker traceback text.
    """

    def __init__(
        self,
        dataset: Dataset,
        *args: Any,
        max_bad_fraction: float | None = None,
        normalizer: Normalize | None = None,
        normalize_in: str = "worker",
        pin_after_normalize: bool = False,
        **kwargs: Any,
    ):
        super().__init__(dataset, *args, **kwargs)
        if max_bad_fraction is None and isinstance(dataset, SkipBadSamples):
            max_bad_fraction = dataset.max_bad_fraction
        self.max_bad_fraction = max_bad_fraction
        #: The Normalize that turns this loader's uint8 batches into float32 ones (None when items are normalised in
        #: the workers). With ``normalize_in="none"`` apply it yourself: ``loader.normalizer.batch(images.cuda())``.
        self.normalizer = normalizer
        self.normalize_in = normalize_in
        self._pin_after = pin_after_normalize
        self.num_bad = 0
        self.num_samples = 0
        self.epoch_bad = 0
        self.epoch_samples = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        it = super().__iter__()
        self.epoch_bad = 0
        self.epoch_samples = 0
        try:
            total = len(self.dataset)  # type: ignore[arg-type]
        except TypeError:  # pragma: no cover - iterable datasets
            total = 0
        limit = float("inf") if self.max_bad_fraction is None else self.max_bad_fraction * total
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except DataError as exc:
                raise type(exc)(_clean_worker_message(exc)) from None
            if isinstance(batch, Batch):
                n_bad = int(batch.num_bad)
                n = int(batch.labels.shape[0]) + n_bad
                self.num_bad += n_bad
                self.epoch_bad += n_bad
                self.num_samples += n
                self.epoch_samples += n
                if self.epoch_bad > limit:
                    raise DataError(
                        _too_many_bad(
                            self.epoch_bad,
                            self.epoch_samples,
                            total,
                            self.max_bad_fraction,
                            "see the warnings above for the files",
                        )
                    )
                if self.normalize_in == "main" and self.normalizer is not None:
                    images = batch.images
                    if images.dtype == torch.uint8:
                        images = self.normalizer.batch(images)
                        if self._pin_after:
                            images = images.pin_memory()
                    batch = Batch(images, batch.labels, batch.num_bad)
            yield batch


def make_train_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 2,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = True,
    *,
    pin_memory: bool = False,
    bad_sample_policy: str | None = "skip",
    max_bad_fraction: float | None = 0.01,
    prefetch_factor: int | None = None,
    persistent_workers: bool | None = None,
    sampler: torch.utils.data.Sampler | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    multiprocessing_context: Any = None,
    normalize_in: str = "main",
) -> FaceDataLoader:
    """The training DataLoader.

    * ``dataset`` is wrapped in :class:`SkipBadSamples` (``bad_sample_policy``, ``max_bad_fraction``) unless it already
      is one or ``bad_sample_policy`` is None; batches are :class:`Batch` ``(images, labels, num_bad)``.
    * Shuffling uses a ``RandomSampler`` with its own ``torch.Generator`` derived from ``seed``: the same seed gives the
      same order every run (a new permutation each epoch), whatever ``num_workers`` is. The workers' seeds derive from
      ``seed`` too (through the loader's generator), so augmentations are reproducible for a given ``num_workers``.
    * Workers: ``persistent_workers`` (default: on when ``num_workers > 0``), ``worker_init_fn`` =
      :func:`seed_worker`, ``prefetch_factor`` (torch's default 2 when None).
    * ``sampler``: e.g. a ``DistributedSampler``; then ``shuffle`` must be False (the sampler shuffles).
    * ``normalize_in`` -- where a dataset transform's final :class:`Normalize` runs (other datasets are unaffected):

      - ``"main"`` (default): workers stop before it and send ``uint8`` items/batches; the loader normalises each batch
        in the main process. The batches are bit-for-bit those of ``"worker"``, but moving uint8 instead of float32
        batches between processes is much cheaper (see ``docs/data.md``, "Loader throughput");
      - ``"worker"``: every item is normalised in the worker, as ``dataset[i]`` returns it (also what a custom
        ``collate_fn`` gets with ``"main"``);
      - ``"none"``: batches stay ``uint8 (B, 3, H, W)``; normalise them on the GPU with
        ``loader.normalizer.batch(images.to(device))``.
    """
    if normalize_in not in NORMALIZE_IN:
        raise InvalidOptionError(f"normalize_in must be one of {', '.join(NORMALIZE_IN)}, got {normalize_in!r}")
    if batch_size <= 0:
        raise InvalidOptionError(f"batch_size must be positive, got {batch_size}")
    if num_workers < 0:
        raise InvalidOptionError(f"num_workers must be >= 0, got {num_workers}")
    if sampler is not None and shuffle:
        raise InvalidOptionError("make_train_loader: pass shuffle=False with a sampler (the sampler decides the order)")
    if collate_fn is not None and normalize_in == "main":
        normalize_in = "worker"  # a custom collate's batches are not ours to normalise
    normalizer: Normalize | None = None
    if normalize_in != "worker":
        if isinstance(dataset, SkipBadSamples):
            inner, normalizer = _split_normalize(dataset.dataset)
            if normalizer is not None:
                dataset = SkipBadSamples(inner, dataset.policy, dataset.max_bad_fraction)
        else:
            dataset, normalizer = _split_normalize(dataset)
    if bad_sample_policy is not None and not isinstance(dataset, SkipBadSamples):
        dataset = SkipBadSamples(dataset, bad_sample_policy, max_bad_fraction)
    pin_after = bool(pin_memory and normalizer is not None and normalize_in == "main" and torch.cuda.is_available())
    n = len(dataset)  # type: ignore[arg-type]
    if drop_last and n < batch_size:
        raise InvalidOptionError(
            f"the dataset has {n} items, fewer than batch_size={batch_size}, and drop_last=True would give no batch; "
            "lower the batch size"
        )
    # Two streams from one seed: the shuffling order does not depend on num_workers (the sampler has its own
    # generator), and the loader's generator gives each new set of workers its base seed.
    streams = np.random.SeedSequence(int(seed)).spawn(2)
    sampler_seed, worker_seed = (int(s.generate_state(1, np.uint64)[0] >> 1) for s in streams)
    if sampler is None and shuffle:
        sampler = torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(sampler_seed))
    generator = torch.Generator()
    generator.manual_seed(worker_seed)
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs["persistent_workers"] = True if persistent_workers is None else bool(persistent_workers)
        kwargs["worker_init_fn"] = seed_worker
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
        if multiprocessing_context is not None:
            kwargs["multiprocessing_context"] = multiprocessing_context
    return FaceDataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn if collate_fn is not None else collate_skip_bad,
        pin_memory=pin_memory and not pin_after,
        drop_last=drop_last,
        generator=generator,
        max_bad_fraction=max_bad_fraction if bad_sample_policy is not None else None,
        normalizer=normalizer,
        normalize_in=normalize_in,
        pin_after_normalize=pin_after,
        **kwargs,
    )

