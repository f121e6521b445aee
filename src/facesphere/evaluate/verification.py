"""Pair verification (LFW-style 10-fold) of a model: set readers -> embeddings -> :mod:`facesphere.metrics`.

Specs: ``synthetic`` (held-out synthetic identities), ``bin:FILE.bin`` (InsightFace validation set),
``lfw:DIR`` (``DIR/pairs.txt`` + ``DIR/images/<name>/<name>_NNNN.jpg`` or ``DIR/<name>/...``), ``pairs:FILE``
(OpenSphere ``label path0 path1`` list). Images must already be aligned crops of the model's input size, unless a
``prepare`` function (detection + alignment, see :mod:`facesphere.evaluate.protocols`) is given.

``model`` is an ``nn.Module`` backbone (the training loop's ``evaluate(model, dataset)``) or a
:class:`facesphere.infer.models.Embedder` (``facesphere eval``).

Embeddings follow the insightface / opensphere convention: f(I) + f(flip I), then L2-normalise (``flip="sum"``);
``flip="concat"`` concatenates the two halves (SphereFace), ``flip="none"`` uses f(I) alone. Score = cosine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import DataError, InvalidOptionError, UnknownNameError

FLIP_MODES = ("sum", "concat", "none")
FARS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


@dataclass
class VerificationSet:
    """Pairs over ``num_images`` unique images: ``load(i) -> uint8 (H, W, 3)``; idx1/idx2 (N,), issame (N,) bool."""

    name: str
    load: Callable[[int], np.ndarray]
    num_images: int
    idx1: np.ndarray
    idx2: np.ndarray
    issame: np.ndarray
    folds: np.ndarray | None = None


def _check_size(image: np.ndarray, size: tuple[int, int], source: str) -> np.ndarray:
    if tuple(image.shape[:2]) != tuple(size):
        raise DataError(
            f"{source}: image is {image.shape[0]}x{image.shape[1]}, the model takes aligned {size[0]}x{size[1]} "
            "crops: align the set first (5-point alignment to the ArcFace template)"
        )
    return image


def load_verification_set(spec: str, *, image_size: Sequence[int] = (112, 112), seed: int = 0,
                          pairs_per_fold: int = 60, difficulty: float = 1.0, identity_spread: float = 1.0,
                          prepare: Callable[[np.ndarray, str], np.ndarray] | None = None) -> VerificationSet:
    """Open a verification set from its spec (see module docstring).

    ``prepare(image, source) -> crop``, if given, turns every decoded image of a ``bin:``, ``lfw:`` or ``pairs:``
    set into the model's input crop (e.g. detect and align it); by default images must already be aligned crops of
    ``image_size`` and any other size is a :class:`DataError`.
    """
    size = (int(image_size[0]), int(image_size[1]))
    scheme, _, rest = spec.partition(":")
    if spec == "synthetic":
        from ..data.synthetic import synthetic_pairs

        images, idx1, idx2, issame, folds = synthetic_pairs(
            seed=seed, pairs_per_fold=pairs_per_fold, difficulty=difficulty, identity_spread=identity_spread,
            image_size=size[0],
        )
        return VerificationSet("synthetic", lambda i: images[i], len(images), idx1, idx2, issame, folds)
    if scheme == "bin":
        from ..data.binfile import read_bin
        from ..data.image import decode_image

        blobs, issame = read_bin(rest)
        n = len(issame)
        name = Path(rest).stem
        if prepare is None:
            load = lambda i: decode_image(blobs[i], source=f"{rest}[{i}]", expected_size=size)  # noqa: E731
        else:
            load = lambda i: prepare(decode_image(blobs[i], source=f"{rest}[{i}]"), f"{rest}[{i}]")  # noqa: E731
        return VerificationSet(name, load, len(blobs), np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2),
                               np.asarray(issame, dtype=bool))
    if scheme in ("lfw", "pairs"):
        from ..data.image import read_image
        from ..data.pairs import read_lfw_pairs, read_pair_list

        if scheme == "lfw":
            root = Path(rest)
            images_root = root / "images" if (root / "images").is_dir() else root
            pairs = read_lfw_pairs(root / "pairs.txt", images_root)
            name = root.name or "lfw"
        else:
            pairs = read_pair_list(rest)
            name = Path(rest).stem
        paths, idx1, idx2 = pairs.unique_paths()
        if prepare is None:
            load = lambda i: _check_size(read_image(paths[i]), size, str(paths[i]))  # noqa: E731
        else:
            load = lambda i: prepare(read_image(paths[i]), str(paths[i]))  # noqa: E731
        return VerificationSet(name, load, len(paths), np.asarray(idx1), np.asarray(idx2),
                               np.asarray(pairs.issame, dtype=bool), np.asarray(pairs.folds))
    raise UnknownNameError(
        f"unknown verification set {spec!r}; valid: synthetic, bin:FILE.bin, lfw:DIR, pairs:FILE"
    )


def _is_embedder(model: Any) -> bool:
    """Whether ``model`` is a :class:`facesphere.infer.models.Embedder` (uint8 RGB crops in, raw features out)."""
    return callable(getattr(model, "embed_batch", None)) and not isinstance(model, nn.Module)


def _fuse(features: np.ndarray, mirrored: np.ndarray | None, flip: str) -> np.ndarray:
    if flip == "none" or mirrored is None:
        return features
    return features + mirrored if flip == "sum" else np.concatenate([features, mirrored], axis=1)


@torch.no_grad()
def embed_images(model: Any, load: Callable[[int], np.ndarray], num_images: int, *, batch_size: int = 128,
                 device: str | torch.device = "cpu", flip: str = "sum", mean: float = 127.5, std: float = 127.5,
                 color: str = "rgb", progress: Any = None, normalize: bool = True) -> np.ndarray:
    """Embeddings float32 ``(N, D)`` (``(N, 2D)`` for ``flip="concat"``) of the images ``load(0) .. load(N-1)``.

    ``model`` is either an ``nn.Module`` backbone (pixels fed as ``(p - mean) / std`` in ``color`` order on
    ``device``; the training loop's path) or an :class:`~facesphere.infer.models.Embedder` (uint8 RGB crops in,
    raw features out; it applies its own colour order and pixel normalisation, so ``device``, ``mean``, ``std``
    and ``color`` are ignored). ``load(i)`` returns a uint8 ``(H, W, 3)`` RGB crop of the model's input size.

    Flip-test fusion (METHODS §8.1) happens before normalisation: ``"sum"`` f(I) + f(mirror I), ``"concat"``
    [f(I); f(mirror I)], ``"none"`` f(I). ``normalize=False`` keeps the fused feature's norm (IJB pooling uses it
    as a quality weight). ``progress``: anything with ``update(n)`` (a tqdm bar), advanced by images embedded.
    """
    if flip not in FLIP_MODES:
        raise UnknownNameError(f"unknown flip mode {flip!r}; valid: {', '.join(FLIP_MODES)}")
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise InvalidOptionError(f"batch_size must be >= 1, got {batch_size!r}")
    outputs: list[np.ndarray] = []
    if _is_embedder(model):
        for start in range(0, num_images, batch_size):
            images = np.stack([load(i) for i in range(start, min(start + batch_size, num_images))])
            features = np.asarray(model.embed_batch(images), dtype=np.float32)
            mirrored = None
            if flip != "none":
                mirrored = np.asarray(model.embed_batch(np.ascontiguousarray(images[:, :, ::-1])), dtype=np.float32)
            outputs.append(_fuse(features, mirrored, flip))
            if progress is not None:
                progress.update(len(images))
    else:
        was_training = model.training
        model.eval()
        try:
            for start in range(0, num_images, batch_size):
                images = np.stack([load(i) for i in range(start, min(start + batch_size, num_images))])
                if color == "bgr":
                    images = images[..., ::-1]
                batch = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float()
                batch = (batch - mean) / std
                features = model(batch).float().cpu().numpy()
                mirrored = model(torch.flip(batch, dims=[3])).float().cpu().numpy() if flip != "none" else None
                outputs.append(_fuse(features, mirrored, flip))
                if progress is not None:
                    progress.update(len(images))
        finally:
            model.train(was_training)
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    features = np.concatenate(outputs).astype(np.float32, copy=False)
    if normalize:
        norms = np.sqrt(np.einsum("ij,ij->i", features, features))
        features = features / np.maximum(norms, 1e-12)[:, None]
    return features


def verification_metrics(scores: np.ndarray, issame: np.ndarray, folds: np.ndarray | None = None) -> dict[str, Any]:
    """10-fold accuracy (exact thresholds), AUC, EER and TAR at FAR 1e-1 … 1e-6 where the set is large enough."""
    from .. import metrics

    result = metrics.kfold_accuracy(scores, issame, n_folds=10, folds=folds)
    curve = metrics.roc(scores, issame)
    out: dict[str, Any] = {
        "accuracy": float(result.mean),
        "accuracy_std": float(result.std),
        "threshold": float(np.mean(result.thresholds)),
        "auc": float(metrics.auc(curve.fpr, curve.tpr)),
        "eer": float(metrics.eer(scores, issame)),
        "pairs": int(len(scores)),
    }
    negatives = int((~issame).sum())
    for far in FARS:
        if negatives * far >= 1:  # at least one impostor pair above the threshold
            out[f"tar@far={far:g}"] = float(metrics.tar_at_far(scores, issame, far))
    return out


def evaluate_verification(model: Any, vset: VerificationSet, *, batch_size: int = 128,
                          device: str | torch.device = "cpu", flip: str = "sum", mean: float = 127.5,
                          std: float = 127.5, color: str = "rgb") -> dict[str, Any]:
    """Embed the set's images and score its pairs: the metrics of :func:`verification_metrics`."""
    features = embed_images(model, vset.load, vset.num_images, batch_size=batch_size, device=device, flip=flip,
                            mean=mean, std=std, color=color)
    scores = np.einsum("ij,ij->i", features[vset.idx1], features[vset.idx2])
    return verification_metrics(scores, vset.issame, vset.folds)


def evaluate(model: Any, dataset: VerificationSet, **options: Any) -> dict[str, Any]:
    """The training loop's single entry point into evaluation: ``evaluate(model, dataset) -> metrics``."""
    return evaluate_verification(model, dataset, **options)


__all__ = ["VerificationSet", "load_verification_set", "embed_images", "verification_metrics",
           "evaluate_verification", "evaluate"]
