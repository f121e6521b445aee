"""1:N identification through the shared top-k search: rank-k and TPIR@FPIR without the full score matrix, and
MegaFace-style leave-one-in search among distractors."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..errors import InvalidOptionError
from ..infer.search import SearchIndex, normalize_rows
from . import metrics as M
from .verification import far_key

RANKS = (1, 5, 10)
FPIRS = (1e-2, 1e-1)
IDENT_DEFINITIONS = {
    "rank": "rank-k over mated probes; rank = 1 + #non-mate gallery entries scoring >= the mate (ties count against)",
    "nist": "NIST open-set: FPIR = non-mated probes whose top-1 score >= τ; TPIR = mated probes with mate at rank 1 "
            "and score > τ (needs non-mated probes)",
    "toolbox": "insightface ijb_1n / opensphere: τ = ceil(FPIR·N_q)-th largest of all non-mate similarities, "
               "TPIR = probes whose mate score > τ (needs every probe mated)",
}

__all__ = ["RANKS", "FPIRS", "IDENT_DEFINITIONS", "identification_search", "leave_one_in", "ident_json",
           "mean_ident"]


def ident_json(result: M.IdentificationResult) -> dict[str, Any]:
    return {
        "rank_accuracy": {str(k): v for k, v in result.rank_accuracy.items()},
        "tpir_at_fpir": {far_key(f): v for f, v in result.tpir.items()},
        "thresholds": {far_key(f): v for f, v in result.thresholds.items()},
        "mated_probes": result.n_mated,
        "nonmated_probes": result.n_nonmated,
    }


def mean_ident(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Average of per-gallery results (IJB 1:N: G1 and G2 searched separately, then averaged)."""
    out: dict[str, Any] = {}
    for key in ("rank_accuracy", "tpir_at_fpir"):
        out[key] = {k: float(np.mean([r[key][k] for r in results])) for k in results[0][key]}
    return out


def identification_search(gallery_feats: np.ndarray, gallery_ids: Any, probe_feats: np.ndarray, probe_ids: Any, *,
                          ranks: Sequence[int] = RANKS, fpirs: Sequence[float] = FPIRS,
                          definitions: Sequence[str] = ("nist", "toolbox"), method: str = "auto",
                          batch_size: int | None = None, index: Any = None, missing_probe_ids: Any = None
                          ) -> tuple[dict[str, M.IdentificationResult], dict[str, np.ndarray]]:
    """1:N metrics through a top-k search (:mod:`facesphere.infer.search`), so large galleries never need the full score matrix.

    Same definitions and answers as :func:`facesphere.evaluate.metrics.identification_metrics` (exact with ``method="numpy"``
    or ``"flat"``): each probe is searched for its top ``K = max(ranks) + m`` entries (``m`` = the most gallery
    entries one subject has), plus ``ceil(max(fpirs)·Q)`` for the toolbox definition; the mate's rank is exact
    whenever it is <= max(ranks). ``definitions`` that do not apply are skipped (``toolbox`` needs every probe mated).
    ``index``: a prebuilt :class:`~facesphere.infer.search.SearchIndex` over ``gallery_feats``.

    ``missing_probe_ids``: ids of probes that have no image (e.g. photos an alignment dropped): each counts as a
    search that found nothing (a miss at every rank and threshold when mated, never a false alarm); they are not in
    the per-probe ``summary``.

    Returns ``({definition: IdentificationResult}, summary)`` with per-probe arrays ``mated``, ``mate_score``
    (-inf where unmated), ``rank`` and ``top_nonmate`` (best non-mate score).
    """
    g_ids = np.asarray(gallery_ids)
    p_ids = np.asarray(probe_ids)
    g = np.asarray(gallery_feats, dtype=np.float32)
    p = np.asarray(probe_feats, dtype=np.float32)
    if g.ndim != 2 or p.ndim != 2 or g.shape[1] != p.shape[1]:
        raise InvalidOptionError(f"gallery {g.shape} and probe {p.shape} features must be 2-D of one dimension")
    if g_ids.shape != (g.shape[0],) or p_ids.shape != (p.shape[0],):
        raise InvalidOptionError("one id per gallery row and per probe row is needed")
    _, codes = np.unique(np.concatenate([g_ids, p_ids]), return_inverse=True)
    codes = codes.reshape(-1)
    g_code, p_code = codes[: g.shape[0]], codes[g.shape[0]:]
    n_q = p.shape[0]
    index = index if index is not None else SearchIndex(g, method=method)
    g_n, p_n = index.gallery, normalize_rows(p)
    # mates of every probe: gallery rows of its subject (padded with -1)
    order = np.argsort(g_code, kind="stable")
    sorted_codes = g_code[order]
    first = np.searchsorted(sorted_codes, p_code, side="left")
    count = np.searchsorted(sorted_codes, p_code, side="right") - first
    mated = count > 0
    m = int(count.max()) if n_q else 0
    fpir_list = [float(f) for f in fpirs]
    want = [d for d in definitions if d != "toolbox" or mated.all()]
    k = max(ranks) + m
    if "toolbox" in want and fpir_list:
        k = max(k, math.ceil(max(fpir_list) * n_q) + m)
    scores, rows = index.search(p_n, k, batch_size=batch_size)
    valid = rows >= 0
    is_mate = valid & (g_code[np.where(valid, rows, 0)] == p_code[:, None])
    # mate score: from the list when the mate is there (same arithmetic as the non-mates), else computed directly
    direct = np.full(n_q, -np.inf, dtype=np.float32)
    for j in range(m):
        has = count > j
        r = order[np.minimum(first + j, order.size - 1)]
        s = np.einsum("ij,ij->i", p_n, g_n[r])
        direct = np.where(has, np.maximum(direct, s), direct)
    listed = np.where(is_mate, scores, -np.inf).max(axis=1)
    mate_score = np.where(is_mate.any(axis=1), listed, direct)
    mate_score = np.where(mated, mate_score, -np.inf)
    nonmate = valid & ~is_mate
    rank = 1 + np.count_nonzero(nonmate & (scores >= mate_score[:, None]), axis=1)
    top1 = scores[:, 0].astype(np.float64)
    nonmate_scores = np.where(nonmate, scores, -np.inf)
    top_nonmate = nonmate_scores.max(axis=1)
    flat = scores[nonmate]
    summary = {"mated": mated, "mate_score": mate_score.astype(np.float64), "rank": rank,
               "top_nonmate": top_nonmate.astype(np.float64)}
    if missing_probe_ids is not None and len(missing_probe_ids):
        absent = np.isin(np.asarray(missing_probe_ids), g_ids)
        mated = np.concatenate([mated, absent])
        mate_score = np.concatenate([mate_score, np.full(absent.size, -np.inf, dtype=mate_score.dtype)])
        rank = np.concatenate([rank, np.full(absent.size, g.shape[0] + 1, dtype=rank.dtype)])
        top1 = np.concatenate([top1, np.full(absent.size, -np.inf)])
        want = [d for d in want if d != "toolbox" or mated.all()]
    results: dict[str, M.IdentificationResult] = {}
    for definition in want:
        results[definition] = M.identification_from_summaries(
            mate_score, np.where(mated, rank, 0), top1, mated, flat if definition == "toolbox" else None,
            ranks, fpir_list, definition=definition)
    return results, summary


def leave_one_in(features: np.ndarray, identity_ids: Any, distractors: np.ndarray, *, ranks: Sequence[int] = RANKS,
                 sizes: Sequence[int] | None = None, method: str = "auto") -> dict[str, Any]:
    """MegaFace-style identification (docs/methods.md §8.5): for every identity with >= 2 images, each image in turn is
    the single gallery mate among the distractors and every *other* image of the identity is a probe.

    ``features`` (n, D) of the identities' images with ``identity_ids`` (n,); ``distractors`` (N, D). A search is
    a hit at rank k iff fewer than k distractors score >= the mate (ties count against). ``sizes``: distractor
    counts to report (nested prefixes of ``distractors``; default 10, 100, … up to N, and N).

    Returns ``{"searches": S, "identities": I, "by_distractors": {str(n): {str(k): rank-k}}, "rank_accuracy":
    {str(k): …} at the largest size}``.
    """
    f = normalize_rows(features)
    d = np.asarray(distractors, dtype=np.float32)
    ids = np.asarray(identity_ids)
    n_d = d.shape[0]
    if sizes is None:
        sizes = [10 ** e for e in range(1, 7) if 10 ** e < n_d] + [n_d]
    sizes = sorted({int(s) for s in sizes if 1 <= int(s) <= n_d})
    kmax = max(ranks)
    _, codes = np.unique(ids, return_inverse=True)
    codes = codes.reshape(-1)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.r_[True, codes[order][1:] != codes[order][:-1], True])
    groups = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b - a >= 2]
    searches = sum(len(gr) * (len(gr) - 1) for gr in groups)
    by_size: dict[str, dict[str, float]] = {}
    for size in sizes:
        index = SearchIndex(d[:size], method=method)
        kth, _ = index.search(f, min(kmax, size))  # (n, k) best distractor scores of every image
        hits = {r: 0 for r in ranks}
        for group in groups:
            sims = f[group] @ f[group].T  # [gallery image, probe image]
            off = ~np.eye(len(group), dtype=bool)
            for r in ranks:
                if r > size:
                    hits[r] += int(off.sum())
                    continue
                hits[r] += int(np.count_nonzero(off & (sims > kth[group, r - 1][None, :])))
        by_size[str(size)] = {str(r): (hits[r] / searches if searches else float("nan")) for r in ranks}
    return {"searches": int(searches), "identities": len(groups), "distractors": int(n_d),
            "by_distractors": by_size, "rank_accuracy": by_size[str(sizes[-1])] if sizes else {}}
