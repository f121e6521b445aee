"""facesphere.evaluate.search: numpy brute force against a plain argsort, FAISS against numpy, identification
through search against facesphere.metrics.identification_metrics."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from facesphere.errors import FaceSphereError, InvalidOptionError, UnknownNameError
from facesphere.evaluate import metrics as M
from facesphere.evaluate.identification import identification_search, leave_one_in
from facesphere.infer.search import SearchIndex, search_topk


def _reference_topk(gallery, queries, k, normalize=True):
    g = np.asarray(gallery, np.float64)
    q = np.asarray(queries, np.float64)
    if normalize:
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    sims = q @ g.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # ties: lower gallery index first
    return np.take_along_axis(sims, order, axis=1), order


@pytest.mark.parametrize("batch_size", [None, 1, 7])
def test_numpy_topk_matches_argsort(batch_size):
    rng = np.random.default_rng(0)
    g = rng.normal(size=(400, 24))
    q = rng.normal(size=(50, 24))
    scores, idx = search_topk(g, q, 10, method="numpy", batch_size=batch_size)
    ref_s, ref_i = _reference_topk(g, q, 10)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(scores, ref_s, atol=1e-5)
    assert scores.dtype == np.float32 and idx.dtype == np.int64
    assert np.all(np.diff(scores, axis=1) <= 0)


@pytest.mark.parametrize("block", [None, 64, 3])
def test_numpy_topk_ties_take_lowest_index(monkeypatch, block):
    # integer vectors without normalisation: many exact ties, including across the k-th position and across
    # gallery blocks (a tiny similarity budget splits the gallery into blocks merged one after another)
    if block is not None:
        import facesphere.infer.search as search

        monkeypatch.setattr(search, "_NUMPY_BLOCK", block)
    rng = np.random.default_rng(1)
    g = rng.integers(-1, 2, size=(60, 3)).astype(np.float32)
    q = rng.integers(-1, 2, size=(40, 3)).astype(np.float32)
    q[q.sum(axis=1) == 0, 0] = 1.0
    for k in (1, 5, 17, 60, 100):
        scores, idx = search_topk(g, q, k, method="numpy", normalize=False, batch_size=None if block else 9)
        ref_s, ref_i = _reference_topk(g, q, min(k, 60), normalize=False)
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_array_equal(scores, ref_s)


def test_hand_case():
    g = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    q = np.array([[2.0, 0.1]])
    scores, idx = search_topk(g, q, 2, method="numpy")
    assert idx.tolist() == [[0, 2]]
    np.testing.assert_allclose(scores[0], [2 / np.hypot(2, 0.1), 2.1 / np.hypot(2, 0.1) / np.sqrt(2)], rtol=1e-6)


def test_faiss_flat_matches_numpy():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(2)
    g = rng.normal(size=(3000, 32))
    q = rng.normal(size=(64, 32))
    s_np, i_np = search_topk(g, q, 8, method="numpy")
    index = SearchIndex(g, method="flat")
    assert index.method == "flat" and index.size == 3000 and index.dim == 32
    s_f, i_f = index.search(q, 8, batch_size=10)
    np.testing.assert_allclose(s_f, s_np, atol=1e-5)
    assert (i_f == i_np).mean() > 0.99  # only near-ties may swap


@pytest.mark.parametrize("method, options", [("ivf", {"nlist": 16, "nprobe": 16}), ("hnsw", {"hnsw_m": 16})])
def test_faiss_approximate_methods_find_the_neighbours(method, options):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, 32))
    g = np.repeat(centres, 25, axis=0) + 0.05 * rng.normal(size=(1000, 32))
    q = centres[rng.integers(0, 40, 100)] + 0.05 * rng.normal(size=(100, 32))
    _, exact = search_topk(g, q, 1, method="numpy")
    scores, idx = search_topk(g, q, 5, method=method, **options)
    assert scores.shape == (100, 5)
    recall = np.mean(idx[:, 0] == exact[:, 0])
    assert recall >= 0.95, recall  # nprobe = nlist makes IVF exhaustive over the lists


def test_auto_and_k_clipping():
    g = np.eye(4)
    index = SearchIndex(g)  # small gallery: numpy
    assert index.method == "numpy"
    scores, idx = index.search(np.eye(4)[:2], 10)
    assert scores.shape == (2, 4)
    assert idx[:, 0].tolist() == [0, 1]


def test_errors_and_missing_faiss(monkeypatch):
    with pytest.raises(UnknownNameError, match="numpy, flat, ivf, hnsw"):
        SearchIndex(np.eye(3), method="annoy")
    with pytest.raises(InvalidOptionError, match="dimension"):
        search_topk(np.eye(3), np.ones((2, 4)), 1, method="numpy")
    with pytest.raises(InvalidOptionError, match="k must be"):
        search_topk(np.eye(3), np.eye(3), 0, method="numpy")
    with pytest.raises(InvalidOptionError, match="NaN"):
        search_topk(np.array([[np.nan, 1.0]]), np.eye(2), 1, method="numpy")
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    with pytest.raises(FaceSphereError, match=r'facesphere\[faiss\]'):
        SearchIndex(np.eye(3), method="flat")
    big = np.random.default_rng(0).normal(size=(20_000, 4))
    assert SearchIndex(big).method == "numpy"  # auto falls back without faiss


def _random_ident(seed, n_subjects=60, per_subject=(1, 3), n_probes=150, open_set=True, dim=16):
    rng = np.random.default_rng(seed)
    counts = rng.integers(per_subject[0], per_subject[1] + 1, n_subjects)
    gid = np.repeat(np.arange(n_subjects), counts)
    centres = rng.normal(size=(n_subjects + 40, dim))
    g = centres[gid] + 0.9 * rng.normal(size=(gid.size, dim))
    pid = rng.integers(0, n_subjects + (40 if open_set else 0), n_probes)
    p = centres[pid] + 0.9 * rng.normal(size=(n_probes, dim))
    return g.astype(np.float32), gid, p.astype(np.float32), pid


@pytest.mark.parametrize("method", ["numpy", "flat"])
@pytest.mark.parametrize("open_set", [True, False])
def test_identification_search_matches_metrics(method, open_set):
    if method == "flat":
        pytest.importorskip("faiss")
    g, gid, p, pid = _random_ident(4, open_set=open_set)
    definitions = ("nist",) if open_set else ("nist", "toolbox")
    ranks, fpirs = (1, 2, 5), (0.01, 0.05, 0.2)
    results, summary = identification_search(g, gid, p, pid, ranks=ranks, fpirs=fpirs, method=method)
    assert set(results) == set(definitions)  # toolbox is skipped for open-set probes
    for definition in definitions:
        ref = M.identification_metrics(g, gid, p, pid, ranks, fpirs, definition=definition)
        got = results[definition]
        assert got.rank_accuracy == pytest.approx(ref.rank_accuracy)
        assert got.tpir == pytest.approx(ref.tpir, nan_ok=True)
        assert (got.n_mated, got.n_nonmated) == (ref.n_mated, ref.n_nonmated)
    # per-probe summary against brute force
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    pn = p / np.linalg.norm(p, axis=1, keepdims=True)
    sims = pn @ gn.T
    mate = pid[:, None] == gid[None, :]
    ms = np.where(mate, sims, -np.inf).max(axis=1)
    np.testing.assert_allclose(summary["mate_score"][summary["mated"]], ms[mate.any(axis=1)], atol=1e-5)
    np.testing.assert_allclose(summary["top_nonmate"], np.where(mate, -np.inf, sims).max(axis=1), atol=1e-5)


def test_leave_one_in_against_brute_force():
    rng = np.random.default_rng(5)
    ids = np.repeat(np.arange(6), [1, 2, 3, 4, 2, 5])  # identity 0 has one image: no search
    f = rng.normal(size=(ids.size, 8)) + 2.0 * rng.normal(size=(6, 8))[ids]
    d = rng.normal(size=(300, 8))
    out = leave_one_in(f, ids, d, ranks=(1, 3), sizes=(10, 300), method="numpy")
    fn = f / np.linalg.norm(f, axis=1, keepdims=True)
    dn = d / np.linalg.norm(d, axis=1, keepdims=True)
    for size in (10, 300):
        hits = {1: 0, 3: 0}
        total = 0
        for g in range(ids.size):
            for p in range(ids.size):
                if g == p or ids[g] != ids[p]:
                    continue
                total += 1
                rank = 1 + np.sum(dn[:size] @ fn[p] >= fn[g] @ fn[p])
                for r in hits:
                    hits[r] += rank <= r
        assert out["by_distractors"][str(size)] == pytest.approx({str(r): hits[r] / total for r in hits})
    assert out["searches"] == total == 2 + 6 + 12 + 2 + 20
    assert out["identities"] == 5
    assert out["rank_accuracy"] == out["by_distractors"]["300"]
