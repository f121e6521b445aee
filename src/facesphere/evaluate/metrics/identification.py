"""Template pooling and 1:N identification metrics, in pure numpy (docs/methods.md §8.3–§8.4).

:func:`pool_templates` / :func:`verification_scores` reproduce the insightface / arcface_torch IJB 1:1 pipeline;
:func:`identification_metrics` gives rank-k accuracy and TPIR@FPIR under the NIST open-set definition and the
insightface / opensphere "toolbox" definition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ...errors import InvalidOptionError
from .checks import as_float_array, as_labels, check_int, check_rate


@dataclass(frozen=True)
class IdentificationResult:
    """Result of :func:`identification_metrics`.

    Attributes:
        definition: ``"nist"`` or ``"toolbox"``.
        rank_accuracy: ``{k: rank-k accuracy}`` (CMC), over mated probes.
        tpir: ``{fpir: TPIR}``.
        thresholds: ``{fpir: τ}``; a probe's mate is accepted iff its score is **strictly greater** than τ
            (``-inf`` when every score is accepted).
        n_mated, n_nonmated: number of mated / non-mated probe searches.
    """

    definition: str
    rank_accuracy: dict
    tpir: dict
    thresholds: dict
    n_mated: int
    n_nonmated: int



# ----------------------------------------------------------------------------------------------------------------
# IJB templates


def _l2_normalise_rows(x: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    return x / np.where(norms > 0, norms, 1.0)[:, None]


def _feature_matrix(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 2:
        raise InvalidOptionError(f"{name} must be 2-D (N, D), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidOptionError(f"{name} is empty (shape {arr.shape})")
    if arr.dtype.kind not in "iuf":
        raise InvalidOptionError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise InvalidOptionError(f"{name} contains NaN or infinite values")
    return arr


def _id_vector(values: Any, n: int, name: str, other: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InvalidOptionError(f"{name} must be 1-D with one entry per row of {other} ({n}), got shape {arr.shape}")
    return arr


def pool_templates(
    features: Any,
    template_ids: Any,
    media_ids: Any,
    *,
    faceness: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """IJB template features (docs/methods.md §8.3 step 3; arcface_torch ``eval_ijbc.py`` / opensphere).

    Image features are optionally multiplied by their detector ``faceness`` score first (mode "D1"); they are
    *not* normalised (mode "N1": the norm acts as a quality weight).  Within each template, images are
    grouped by media id: media feature = mean of its images; template feature = **sum** of its media
    features; finally L2-normalised.  E.g. media A = {v1}, media B = {v2, v3} → ``normalise(v1 + (v2+v3)/2)``.
    Media ids are grouped per template (the same media id in two templates are two media).  A template
    whose pooled feature is exactly zero stays zero.

    Returns ``(unique_template_ids sorted, template_features)``; features are float32 for float32/float16
    input, else float64.
    """
    feats = _feature_matrix(features, "features")
    n = feats.shape[0]
    tids = _id_vector(template_ids, n, "template_ids", "features")
    mids = _id_vector(media_ids, n, "media_ids", "features")
    out_dtype = np.float32 if feats.dtype in (np.float32, np.float16) else np.float64
    x = feats.astype(np.float64)
    if faceness is not None:
        q = as_float_array(faceness, "faceness")
        if q.shape[0] != n:
            raise InvalidOptionError(f"faceness must have one score per row of features ({n}), got {q.shape[0]}")
        x = x * q[:, None]
    try:
        uniq_t, t_code = np.unique(tids, return_inverse=True)
        _, m_code = np.unique(mids, return_inverse=True)
    except TypeError as exc:
        raise InvalidOptionError(f"template_ids and media_ids must be sortable ({exc})") from None
    t_code = t_code.reshape(-1).astype(np.int64)
    m_code = m_code.reshape(-1).astype(np.int64)
    key = t_code * (int(m_code.max()) + 1) + m_code  # (template, media) pairs, ordered by template first
    _, group = np.unique(key, return_inverse=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    g_sorted = group[order]
    g_starts = np.flatnonzero(np.concatenate(([True], g_sorted[1:] != g_sorted[:-1])))
    counts = np.diff(np.append(g_starts, n))
    media_feats = np.add.reduceat(x[order], g_starts, axis=0) / counts[:, None]
    media_template = t_code[order][g_starts]  # non-decreasing
    t_starts = np.flatnonzero(np.concatenate(([True], media_template[1:] != media_template[:-1])))
    template_feats = np.add.reduceat(media_feats, t_starts, axis=0)
    return uniq_t, _l2_normalise_rows(template_feats).astype(out_dtype, copy=False)


def verification_scores(
    template_ids: Any,
    template_features: Any,
    pairs_t1: Any,
    pairs_t2: Any,
    *,
    batch_size: int = 100_000,
) -> np.ndarray:
    """Cosine similarity of every listed template pair (docs/methods.md §8.3 step 4), vectorised in batches.

    ``template_ids`` (T,) and ``template_features`` (T, D) as returned by :func:`pool_templates`; rows are
    L2-normalised here again, so any features give cosines.  ``pairs_t1[i]``, ``pairs_t2[i]`` are template
    ids; an unknown id raises :class:`InvalidOptionError`.  ``batch_size`` pairs are scored at a time to
    bound memory (``batch_size × D`` floats per side).  Returns float64 scores of shape (P,).
    """
    feats = _feature_matrix(template_features, "template_features")
    tids = _id_vector(template_ids, feats.shape[0], "template_ids", "template_features")
    batch = check_int(batch_size, "batch_size", 1)
    p1 = np.asarray(pairs_t1).reshape(-1) if np.ndim(pairs_t1) else np.asarray([pairs_t1])
    p2 = np.asarray(pairs_t2).reshape(-1) if np.ndim(pairs_t2) else np.asarray([pairs_t2])
    if p1.shape != p2.shape:
        raise InvalidOptionError(f"pairs_t1 and pairs_t2 have different lengths ({p1.size} vs {p2.size})")
    if p1.size == 0:
        raise InvalidOptionError("no pairs to score (pairs_t1 is empty)")
    try:
        sorter = np.argsort(tids, kind="stable")
        sorted_ids = tids[sorter]
        if np.any(sorted_ids[1:] == sorted_ids[:-1]):
            raise InvalidOptionError("template_ids contains duplicate ids")
        rows = []
        for name, p in (("pairs_t1", p1), ("pairs_t2", p2)):
            pos = np.clip(np.searchsorted(sorted_ids, p), 0, sorted_ids.size - 1)
            found = sorted_ids[pos] == p
            if not np.all(found):
                raise InvalidOptionError(
                    f"{name} names template {p[~found][0]!r}, which is not in template_ids "
                    f"({int(np.count_nonzero(~found))} unknown)"
                )
            rows.append(sorter[pos])
    except TypeError as exc:
        raise InvalidOptionError(f"pair template ids are not comparable with template_ids ({exc})") from None
    work_dtype = np.float32 if feats.dtype == np.float32 else np.float64
    normed = _l2_normalise_rows(feats.astype(np.float64)).astype(work_dtype, copy=False)
    out = np.empty(p1.size, dtype=np.float64)
    for start in range(0, p1.size, batch):
        i1 = rows[0][start : start + batch]
        i2 = rows[1][start : start + batch]
        out[start : start + batch] = np.einsum("ij,ij->i", normed[i1], normed[i2])
    return out


# ----------------------------------------------------------------------------------------------------------------
# 1:N identification


def _top_k_merge(current: np.ndarray, new: np.ndarray, k: int) -> np.ndarray:
    both = np.concatenate((current, new))
    if both.size <= k:
        return both
    return np.partition(both, both.size - k)[both.size - k :]


def identification_metrics(
    gallery_feats: Any,
    gallery_ids: Any,
    probe_feats: Any,
    probe_ids: Any,
    ranks: Sequence[int] = (1, 5, 10),
    fpirs: Sequence[float] = (1e-2, 1e-1),
    *,
    definition: str = "nist",
    batch_size: int | None = None,
) -> IdentificationResult:
    """1:N identification metrics (docs/methods.md §8.4): rank-k accuracy (CMC) and TPIR@FPIR.

    Similarity = cosine (both sides are L2-normalised here).  A probe is *mated* iff its id occurs in
    ``gallery_ids``; a gallery may hold several entries of one subject (the mate score is then the best
    one).  The rank of a mated probe is ``1 + #{non-mate gallery entries with score >= mate score}``: ties
    with a non-mate count against the probe.  ``rank_accuracy[k]`` = fraction of mated probes with rank <= k.

    * ``definition="nist"`` — the NIST / IJB open-set definition: non-mated searches are the probes whose
      subject is not in the gallery.  ``FPIR(τ) = #{non-mated: top-1 score >= τ} / #non-mated`` and
      ``TPIR(τ) = #{mated: mate at rank 1 and score >= τ} / #mated``; for each target FPIR the smallest
      τ with ``FPIR(τ) <= target`` is used (the largest TPIR whose FPIR does not exceed the target).
      TPIR is NaN without non-mated probes.  IJB runs the search against G1 and G2 separately; call once
      per gallery and average.
    * ``definition="toolbox"`` — insightface ``ijb_1n.py`` / opensphere (their published tables): every probe
      must be mated (gallery = G1 ∪ G2); with N_q probes, τ = the ``ceil(FPIR·N_q)``-th largest of *all*
      non-mate similarities (every probe × gallery score except the mates) and
      ``TPIR = #{probes with mate score > τ} / N_q`` (no rank-1 condition).  If there are fewer non-mate
      similarities than needed, τ = −inf.

    Computed brute-force in numpy, ``batch_size`` probes at a time (default: about 16M similarities per
    batch); float32 when both feature arrays are float32.
    """
    if definition not in ("nist", "toolbox"):
        raise InvalidOptionError(f"unknown definition {definition!r}; choose 'nist' or 'toolbox'")
    g = _feature_matrix(gallery_feats, "gallery_feats")
    p = _feature_matrix(probe_feats, "probe_feats")
    if g.shape[1] != p.shape[1]:
        raise InvalidOptionError(f"gallery and probe features differ in dimension ({g.shape[1]} vs {p.shape[1]})")
    g_ids = _id_vector(gallery_ids, g.shape[0], "gallery_ids", "gallery_feats")
    p_ids = _id_vector(probe_ids, p.shape[0], "probe_ids", "probe_feats")
    rank_list = [check_int(r, "rank", 1) for r in ranks]
    fpir_list = [check_rate(f, "fpir", allow_zero=False) for f in fpirs]
    n_g, n_q = g.shape[0], p.shape[0]
    if batch_size is None:
        batch = max(1, min(n_q, (1 << 24) // n_g))
    else:
        batch = check_int(batch_size, "batch_size", 1)
    try:
        _, codes = np.unique(np.concatenate((g_ids, p_ids)), return_inverse=True)
    except (TypeError, ValueError) as exc:
        raise InvalidOptionError(f"gallery_ids and probe_ids must be comparable ({exc})") from None
    codes = codes.reshape(-1)
    g_code, p_code = codes[:n_g], codes[n_g:]
    mated = np.isin(p_code, g_code)
    n_mated = int(mated.sum())
    if definition == "toolbox" and n_mated < n_q:
        raise InvalidOptionError(
            f"definition='toolbox' needs every probe's subject in the gallery (gallery = G1 ∪ G2), but "
            f"{n_q - n_mated} of {n_q} probes are not; use definition='nist' for open-set searches"
        )
    work = np.float32 if (g.dtype == np.float32 and p.dtype == np.float32) else np.float64
    g_n = _l2_normalise_rows(g.astype(np.float64)).astype(work, copy=False)
    p_n = _l2_normalise_rows(p.astype(np.float64)).astype(work, copy=False)

    mate_score = np.full(n_q, -np.inf)
    rank = np.zeros(n_q, dtype=np.int64)  # 0 for non-mated probes
    top1 = np.full(n_q, -np.inf)
    k_needed = max(math.ceil(n_q * f) for f in fpir_list) if (definition == "toolbox" and fpir_list) else 0
    nonmate_top = np.empty(0, dtype=work)
    for start in range(0, n_q, batch):
        stop = min(start + batch, n_q)
        sims = p_n[start:stop] @ g_n.T
        is_mate = p_code[start:stop, None] == g_code[None, :]
        top1[start:stop] = sims.max(axis=1)
        m_score = np.where(is_mate, sims, -np.inf).max(axis=1)
        ahead = np.count_nonzero((sims >= m_score[:, None]) & ~is_mate, axis=1)
        has_mate = mated[start:stop]
        mate_score[start:stop] = np.where(has_mate, m_score, -np.inf)
        rank[start:stop] = np.where(has_mate, ahead + 1, 0)
        if k_needed:
            nonmate_top = _top_k_merge(nonmate_top, sims[~is_mate], k_needed)

    return _identification_result(definition, mate_score, rank, top1, mated, nonmate_top, rank_list, fpir_list)


def identification_from_summaries(
    mate_score: Any,
    rank: Any,
    top1: Any,
    mated: Any,
    nonmate_top: Any = None,
    ranks: Sequence[int] = (1, 5, 10),
    fpirs: Sequence[float] = (1e-2, 1e-1),
    *,
    definition: str = "nist",
) -> IdentificationResult:
    """:func:`identification_metrics` from per-probe search summaries (for searches done elsewhere, e.g. FAISS).

    Per probe (all ``(Q,)``): ``mated`` whether its subject is in the gallery; ``mate_score`` its best mate
    similarity (ignored where not mated); ``rank`` = ``1 + #{non-mate gallery entries with score >= mate score}``
    (any value > max(ranks) may stand for "beyond"; ignored where not mated); ``top1`` its best similarity over
    the whole gallery.  ``nonmate_top`` (toolbox definition only): the largest non-mate similarities over all
    probes, at least ``ceil(max(fpirs)·Q)`` of them where the gallery has that many (fewer means τ = −inf).
    Definitions and thresholds exactly as :func:`identification_metrics`.
    """
    if definition not in ("nist", "toolbox"):
        raise InvalidOptionError(f"unknown definition {definition!r}; choose 'nist' or 'toolbox'")
    m = np.asarray(mated)
    if m.ndim != 1 or m.size == 0:
        raise InvalidOptionError(f"mated must be a non-empty 1-D array, got shape {m.shape}")
    m = as_labels(m, m.size, "mated")
    n_q = m.size
    ms = np.asarray(mate_score, dtype=np.float64).reshape(-1)
    rk = np.asarray(rank).reshape(-1).astype(np.int64)
    t1 = np.asarray(top1, dtype=np.float64).reshape(-1)
    for name, arr in (("mate_score", ms), ("rank", rk), ("top1", t1)):
        if arr.size != n_q:
            raise InvalidOptionError(f"{name} must have one entry per probe ({n_q}), got {arr.size}")
    rank_list = [check_int(r, "rank", 1) for r in ranks]
    fpir_list = [check_rate(f, "fpir", allow_zero=False) for f in fpirs]
    if definition == "toolbox" and int(m.sum()) < n_q:
        raise InvalidOptionError(
            f"definition='toolbox' needs every probe's subject in the gallery, but {n_q - int(m.sum())} of {n_q} "
            "probes are not; use definition='nist' for open-set searches"
        )
    top = np.empty(0) if nonmate_top is None else np.asarray(nonmate_top, dtype=np.float64).reshape(-1)
    ms = np.where(m, ms, -np.inf)
    rk = np.where(m, rk, 0)
    return _identification_result(definition, ms, rk, t1, m, top, rank_list, fpir_list)


def _identification_result(definition: str, mate_score: np.ndarray, rank: np.ndarray, top1: np.ndarray,
                           mated: np.ndarray, nonmate_top: np.ndarray, rank_list: list[int],
                           fpir_list: list[float]) -> IdentificationResult:
    n_q = mated.size
    n_mated = int(mated.sum())
    rank_accuracy = {
        r: (float(np.count_nonzero(mated & (rank <= r))) / n_mated if n_mated else float("nan")) for r in rank_list
    }
    tpir: dict = {}
    thresholds: dict = {}
    if definition == "nist":
        non_top = np.sort(top1[~mated])[::-1]
        n_non = non_top.size
        hit_rank1 = mated & (rank == 1)
        for f in fpir_list:
            if n_non == 0 or n_mated == 0:
                tpir[f], thresholds[f] = float("nan"), float("nan")
                continue
            # largest number of false alarms c with c / n_non <= f
            allowed = int(np.searchsorted(np.arange(n_non + 1) / n_non, f, side="right")) - 1
            tau = float(non_top[allowed]) if allowed < n_non else -np.inf
            thresholds[f] = tau
            tpir[f] = float(np.count_nonzero(hit_rank1 & (mate_score > tau))) / n_mated
    else:
        desc = np.sort(nonmate_top)[::-1]
        for f in fpir_list:
            kth = math.ceil(n_q * f)
            tau = float(desc[kth - 1]) if kth <= desc.size else -np.inf
            thresholds[f] = tau
            tpir[f] = float(np.count_nonzero(mate_score > tau)) / n_q
    return IdentificationResult(
        definition=definition,
        rank_accuracy=rank_accuracy,
        tpir=tpir,
        thresholds=thresholds,
        n_mated=n_mated,
        n_nonmated=n_q - n_mated,
    )
