"""Held-out synthetic evaluation sets: verification pairs in 10 folds, a 1:N identification set, and a pixel baseline."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from ...errors import InvalidOptionError
from .identity import (
    EVAL_IDENTITY_OFFSET,
    IDENTIFICATION_OFFSET,
    TAG_PAIRS,
    SyntheticConfig,
    check_nonneg_int,
)
from .render import SyntheticFaces

# ----------------------------------------------------------------------------------------------------------------------
# evaluation sets over held-out identities


def _render_many(faces: SyntheticFaces, keys: Sequence[tuple[int, int]]) -> np.ndarray:
    s = faces.config.image_size
    out = np.empty((len(keys), s, s, 3), dtype=np.uint8)
    for i, (ident, k) in enumerate(keys):
        out[i] = faces.render(ident, k)
    return out


def synthetic_pairs(
    seed: int = 0,
    num_identities: int = 200,
    images_per_identity: int = 10,
    n_folds: int = 10,
    pairs_per_fold: int = 600,
    *,
    difficulty: float = 1.0,
    identity_spread: float = 1.0,
    image_size: int = 112,
    return_labels: bool = False,
) -> tuple[np.ndarray, ...]:
    """LFW-style verification pairs over held-out identities (View-2 layout, docs/methods.md §8.2).

    Identities are split into ``n_folds`` contiguous groups of ``num_identities // n_folds``; fold ``f`` holds
    ``pairs_per_fold / 2`` same-identity pairs (distinct images) followed by as many different-identity pairs, all
    drawn inside group ``f`` -- so no identity appears in two folds.  Folds are contiguous blocks in pair order.

    Returns ``(images, idx1, idx2, issame, folds)``: the unique images used (N, S, S, 3) uint8 sorted by (identity,
    image index), int64 indices into them, bool same-identity flags, and the int64 fold (0 .. n_folds-1) of each pair.
    With ``return_labels`` a sixth array gives each image's held-out identity index (0 .. num_identities-1).
    Deterministic in the arguments.
    """
    num_identities = check_nonneg_int(num_identities, "num_identities", 2)
    images_per_identity = check_nonneg_int(images_per_identity, "images_per_identity", 2)
    n_folds = check_nonneg_int(n_folds, "n_folds", 1)
    pairs_per_fold = check_nonneg_int(pairs_per_fold, "pairs_per_fold", 2)
    if pairs_per_fold % 2:
        raise InvalidOptionError(f"pairs_per_fold must be even (half same, half different), got {pairs_per_fold}")
    per_fold = num_identities // n_folds
    if per_fold < 2:
        raise InvalidOptionError(
            f"num_identities={num_identities} gives {per_fold} identities per fold for n_folds={n_folds}; "
            f"need at least 2 (use num_identities >= {2 * n_folds})")
    half = pairs_per_fold // 2
    k = images_per_identity
    n_same = per_fold * k * (k - 1) // 2
    n_diff = (per_fold * (per_fold - 1) // 2) * k * k
    if half > n_same or half > n_diff:
        raise InvalidOptionError(
            f"pairs_per_fold={pairs_per_fold} needs {half} distinct same and different pairs per fold, but "
            f"{per_fold} identities x {k} images give only {n_same} same / {n_diff} different pairs; raise "
            "num_identities or images_per_identity, or lower pairs_per_fold")
    faces = SyntheticFaces(SyntheticConfig(seed=seed, num_identities=num_identities, images_per_identity=k,
                                           difficulty=difficulty, identity_spread=identity_spread,
                                           image_size=image_size, cache_size=per_fold))
    rng = np.random.default_rng([TAG_PAIRS, int(seed), num_identities, k, n_folds, pairs_per_fold])
    ia, ja = np.triu_indices(k, 1)
    pairs: list[tuple[int, int, int, int]] = []  # (class a, image a, class b, image b)
    issame: list[bool] = []
    folds: list[int] = []
    for f in range(n_folds):
        ids = np.arange(f * per_fold, (f + 1) * per_fold)
        pick = rng.choice(n_same, size=half, replace=False)
        for s in pick:
            c, r = divmod(int(s), len(ia))
            pairs.append((int(ids[c]), int(ia[r]), int(ids[c]), int(ja[r])))
        pick = rng.choice(n_diff, size=half, replace=False)
        ca, cb = np.triu_indices(per_fold, 1)
        for s in pick:
            c, r = divmod(int(s), k * k)
            pairs.append((int(ids[ca[c]]), r // k, int(ids[cb[c]]), r % k))
        issame += [True] * half + [False] * half
        folds += [f] * pairs_per_fold
    keys = sorted({(a, i) for a, i, _, _ in pairs} | {(b, j) for _, _, b, j in pairs})
    where = {key: n for n, key in enumerate(keys)}
    idx1 = np.array([where[(a, i)] for a, i, _, _ in pairs], dtype=np.int64)
    idx2 = np.array([where[(b, j)] for _, _, b, j in pairs], dtype=np.int64)
    images = _render_many(faces, [(EVAL_IDENTITY_OFFSET + c, i) for c, i in keys])
    out = (images, idx1, idx2, np.array(issame, dtype=bool), np.array(folds, dtype=np.int64))
    if return_labels:
        out += (np.array([c for c, _ in keys], dtype=np.int64),)
    return out


def synthetic_identification(
    seed: int = 0,
    num_identities: int = 100,
    gallery_per_identity: int = 1,
    probes_per_identity: int = 4,
    *,
    num_distractors: int = 0,
    difficulty: float = 1.0,
    identity_spread: float = 1.0,
    image_size: int = 112,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A 1:N identification set over held-out identities (disjoint from :func:`synthetic_pairs`' people).

    Identity ``c`` (label ``c``) contributes images ``0 .. gallery_per_identity - 1`` to the gallery and the next
    ``probes_per_identity`` images as probes.  ``num_distractors`` extra identities (labels ``num_identities ..``)
    appear in the gallery only.  Returns ``(gallery_images, gallery_labels, probe_images, probe_labels)``.
    """
    num_identities = check_nonneg_int(num_identities, "num_identities", 1)
    gallery_per_identity = check_nonneg_int(gallery_per_identity, "gallery_per_identity", 1)
    probes_per_identity = check_nonneg_int(probes_per_identity, "probes_per_identity", 1)
    num_distractors = check_nonneg_int(num_distractors, "num_distractors", 0)
    total = num_identities + num_distractors
    faces = SyntheticFaces(SyntheticConfig(seed=seed, difficulty=difficulty, identity_spread=identity_spread,
                                           image_size=image_size, cache_size=1))
    base = EVAL_IDENTITY_OFFSET + IDENTIFICATION_OFFSET
    g_keys = [(c, i) for c in range(total) for i in range(gallery_per_identity)]
    p_keys = [(c, gallery_per_identity + i) for c in range(num_identities) for i in range(probes_per_identity)]
    gallery = _render_many(faces, [(base + c, i) for c, i in g_keys])
    probes = _render_many(faces, [(base + c, i) for c, i in p_keys])
    return (gallery, np.array([c for c, _ in g_keys], dtype=np.int64),
            probes, np.array([c for c, _ in p_keys], dtype=np.int64))


def pixel_baseline_accuracy(
    images: np.ndarray,
    idx1: np.ndarray,
    idx2: np.ndarray,
    issame: np.ndarray,
    folds: np.ndarray,
    *,
    size: int = 28,
) -> tuple[float, float]:
    """10-fold verification accuracy of a raw-pixel "embedding" (a calibration yardstick, not a model).

    Each image becomes its ``size x size`` grey thumbnail (box filter), mean-centred over all images and
    L2-normalised; score = cosine; per fold the threshold maximising accuracy on the other folds is applied to the
    held-out fold (docs/methods.md §8.2).  Returns (mean, std) of the fold accuracies.
    """
    grey = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    small = np.stack([np.asarray(Image.fromarray(g).resize((size, size), Image.BOX)) for g in grey])
    feats = small.reshape(len(images), -1).astype(np.float64)
    feats -= feats.mean(axis=0, keepdims=True)
    feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    scores = np.einsum("ij,ij->i", feats[idx1], feats[idx2])
    accs = []
    for f in np.unique(folds):
        test = folds == f
        tr_s, tr_y = scores[~test], issame[~test]
        order = np.argsort(tr_s, kind="stable")
        s_sorted, y_sorted = tr_s[order], tr_y[order]
        # candidate thresholds: midpoints between neighbouring training scores (and both ends); "same" iff score > t.
        # With t between s_sorted[i-1] and s_sorted[i], the i lowest scores are called "different".
        cand = np.concatenate([[s_sorted[0] - 1.0], (s_sorted[1:] + s_sorted[:-1]) / 2.0, [s_sorted[-1] + 1.0]])
        below_pos = np.concatenate([[0], np.cumsum(y_sorted)])
        below_neg = np.concatenate([[0], np.cumsum(~y_sorted)])
        correct = (int(y_sorted.sum()) - below_pos) + below_neg
        valid = np.concatenate([[True], s_sorted[1:] > s_sorted[:-1], [True]])  # skip splits inside ties
        correct = np.where(valid, correct, -1)
        t = cand[int(np.argmax(correct))]
        accs.append(float(np.mean((scores[test] > t) == issame[test])))
    return float(np.mean(accs)), float(np.std(accs))
