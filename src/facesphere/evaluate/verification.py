"""Pair verification (LFW-style 10-fold) of a model: set readers -> embeddings -> :mod:`facesphere.metrics`.

Specs: ``synthetic`` (held-out synthetic identities), ``bin:FILE.bin`` (InsightFace validation set),
``lfw:DIR`` (``DIR/pairs.txt`` + ``DIR/images/<name>/<name>_NNNN.jpg`` or ``DIR/<name>/...``), ``pairs:FILE``
(OpenSphere ``label path0 path1`` list). Images must already be aligned crops of the model's input size.

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

from ..errors import DataError, UnknownNameError

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
                          pairs_per_fold: int = 60, difficulty: float = 1.0, identity_spread: float = 1.0
                          ) -> VerificationSet:
    """Open a verification set from its spec (see module docstring)."""
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
        load = lambda i: decode_image(blobs[i], source=f"{rest}[{i}]", expected_size=size)  # noqa: E731
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
        load = lambda i: _check_size(read_image(paths[i]), size, str(paths[i]))  # noqa: E731
        return VerificationSet(name, load, len(paths), np.asarray(idx1), np.asarray(idx2),
                               np.asarray(pairs.issame, dtype=bool), np.asarray(pairs.folds))
    raise UnknownNameError(
        f"unknown verification set {spec!r}; valid: synthetic, bin:FILE.bin, lfw:DIR, pairs:FILE"
    )


@torch.no_grad()
def embed_images(model: nn.Module, load: Callable[[int], np.ndarray], num_images: int, *, batch_size: int = 128,
                 device: str | torch.device = "cpu", flip: str = "sum", mean: float = 127.5, std: float = 127.5,
                 color: str = "rgb", progress: Any = None) -> np.ndarray:
    """L2-normalised embeddings (N, D) (2D for ``flip="concat"``) of images ``load(0..N-1)``."""
    if flip not in FLIP_MODES:
        raise UnknownNameError(f"unknown flip mode {flip!r}; valid: {', '.join(FLIP_MODES)}")
    was_training = model.training
    model.eval()
    outputs = []
    try:
        for start in range(0, num_images, batch_size):
            images = np.stack([load(i) for i in range(start, min(start + batch_size, num_images))])
            if color == "bgr":
                images = images[..., ::-1]
            batch = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float()
            batch = (batch - mean) / std
            features = model(batch).float()
            if flip != "none":
                flipped = model(torch.flip(batch, dims=[3])).float()
                features = features + flipped if flip == "sum" else torch.cat([features, flipped], dim=1)
            outputs.append(torch.nn.functional.normalize(features, dim=1).cpu().numpy())
            if progress is not None:
                progress.update(len(images))
    finally:
        model.train(was_training)
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), dtype=np.float32)


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


def evaluate_verification(model: nn.Module, vset: VerificationSet, *, batch_size: int = 128,
                          device: str | torch.device = "cpu", flip: str = "sum", mean: float = 127.5,
                          std: float = 127.5, color: str = "rgb") -> dict[str, Any]:
    """Embed the set's images and score its pairs: the metrics of :func:`verification_metrics`."""
    features = embed_images(model, vset.load, vset.num_images, batch_size=batch_size, device=device, flip=flip,
                            mean=mean, std=std, color=color)
    scores = np.einsum("ij,ij->i", features[vset.idx1], features[vset.idx2])
    return verification_metrics(scores, vset.issame, vset.folds)


def evaluate(model: nn.Module, dataset: VerificationSet, **options: Any) -> dict[str, Any]:
    """The training loop's single entry point into evaluation: ``evaluate(model, dataset) -> metrics``."""
    return evaluate_verification(model, dataset, **options)


__all__ = ["VerificationSet", "load_verification_set", "embed_images", "verification_metrics",
           "evaluate_verification", "evaluate"]
