"""The persistent gallery: exactness against a slow reference, FAISS == numpy, persistence across processes,
concurrency (two writers; readers during writes), crash safety (exceptions and SIGKILL mid-write), error messages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from facesphere.errors import (
    DataError,
    FaceSphereError,
    InvalidOptionError,
    OutputError,
    UnknownNameError,
)
from facesphere.infer import gallery as gallery_module
from facesphere.infer.gallery import (
    INDEX_NAME,
    Gallery,
    GalleryWarning,
    Match,
    model_fingerprint,
)
from facesphere.infer.gallery.storage import read_index_file
from facesphere.infer.search import VectorIndex

try:
    import faiss  # noqa: F401

    HAVE_FAISS = True
except ImportError:  # pragma: no cover - faiss-cpu is a test dependency
    HAVE_FAISS = False

needs_faiss = pytest.mark.skipif(not HAVE_FAISS, reason="faiss is not installed")
BACKENDS = [pytest.param("faiss", marks=needs_faiss), "numpy"]
PACKAGE_DIR = str(Path(gallery_module.__file__).resolve().parents[2])  # the facesphere package folder


def unit_rows(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    rows = rng.standard_normal((count, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def batch_vectors(seed: int, batch: int, count: int, dim: int) -> np.ndarray:
    """The vectors a worker process adds as batch ``batch`` (the worker computes the same ones)."""
    return np.random.default_rng([seed, batch]).standard_normal((count, dim)).astype(np.float32)


def reference_search(vectors: np.ndarray, ids: np.ndarray, identities: list[str], query: np.ndarray, k: int,
                     per_identity: bool, threshold: float | None) -> list[tuple[str, float, int]]:
    """Slow, independent exact search: every score by its own float64 dot product, sorted by (-score, id)."""
    q = np.asarray(query, dtype=np.float64)
    q = (q / np.linalg.norm(q)).astype(np.float32).astype(np.float64)
    scored = sorted((-float(np.dot(vectors[row].astype(np.float64), q)), int(ids[row]), identities[row])
                    for row in range(len(ids)))
    out: list[tuple[str, float, int]] = []
    seen: set[str] = set()
    for negative, entry, identity in scored:
        if threshold is not None and -negative < threshold:
            break
        if per_identity and identity in seen:
            continue
        seen.add(identity)
        out.append((identity, -negative, entry))
        if len(out) == k:
            break
    return out


def as_tuples(matches: list[Match]) -> list[tuple[str, float, int]]:
    return [(m.identity, m.score, m.id) for m in matches]


def run_worker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WORKER, PACKAGE_DIR, *args], capture_output=True, text=True,
                          timeout=timeout)


def start_worker(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, PACKAGE_DIR, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


# A worker process. It loads facesphere.infer.gallery without running facesphere/__init__.py (which imports torch,
# seconds of start-up per process); the gallery module itself needs only numpy, sqlite3 and (optionally) faiss.
WORKER = r'''
import json, os, signal, sys, time, types
package = types.ModuleType("facesphere")
package.__path__ = [sys.argv[1]]
sys.modules["facesphere"] = package
import numpy as np
from facesphere.infer import gallery as G

mode, directory, rest = sys.argv[2], sys.argv[3], sys.argv[4:]

def batch_vectors(seed, batch, count, dim):
    return np.random.default_rng([seed, batch]).standard_normal((count, dim)).astype(np.float32)

if mode == "imports":
    print(json.dumps(sorted(m for m in ("faiss", "torch", "cv2", "onnxruntime") if m in sys.modules)))
elif mode == "roundtrip":
    g = G.Gallery.open(directory, backend=rest[0])
    queries = np.asarray(json.loads(rest[1]), dtype=np.float32)
    hits = [[[m.identity, m.score, m.id, m.path] for m in row] for row in g.search(queries, k=3)]
    entries = [[e.id, e.identity, e.path, e.extra] for e in g.entries()]
    print(json.dumps({"identities": g.identities(), "hits": hits, "entries": entries, "model": g.model}))
    g.add(batch_vectors(7, 0, 3, g.dim), "from_child", paths=["c0.jpg", "c1.jpg", "c2.jpg"], model=g.model)
elif mode == "writer":
    seed, prefix, batches, size = int(rest[0]), rest[1], int(rest[2]), int(rest[3])
    g = G.Gallery.open(directory)
    for batch in range(batches):
        g.add(batch_vectors(seed, batch, size, g.dim), f"{prefix}{batch}")
    print(json.dumps({"done": batches}))
elif mode == "reader":
    # search every batch's first vector; the batches visible must be a prefix that only grows
    seed, batches, size, reopen = int(rest[0]), int(rest[1]), int(rest[2]), rest[3] == "reopen"
    dim = int(rest[4])
    probes = np.stack([batch_vectors(seed, b, size, dim)[0] for b in range(batches)])
    g = G.Gallery.open(directory, readonly=True)
    history = []
    deadline = time.time() + 40
    while time.time() < deadline:
        if reopen:
            g.close()
            g = G.Gallery.open(directory, readonly=True)
        hits = g.search(probes, k=1)
        count = len(g)
        visible = [bool(row) and row[0].identity == f"w{b}" and row[0].score > 0.999999 for b, row in enumerate(hits)]
        prefix = visible.index(False) if False in visible else batches
        if any(visible[prefix:]):
            print(json.dumps({"error": f"visible batches are not a prefix: {visible}"}))
            sys.exit(1)
        history.append([count, prefix])
        if prefix == batches:
            break
    print(json.dumps({"history": history}))
elif mode == "create_and_add":
    # wait at the barrier (every sibling started), then create-or-open the gallery and add, all at once
    index, barrier, dim, size = int(rest[0]), rest[1], int(rest[2]), int(rest[3])
    open(os.path.join(barrier, f"ready{index}"), "w").close()
    while not os.path.exists(os.path.join(barrier, "go")):
        time.sleep(0.001)
    with G.Gallery.open_or_create(directory, dim, backend="numpy") as g:
        g.add(batch_vectors(index, 0, size, dim), f"w{index}", update_index=False)
    print(json.dumps({"added": size}))
elif mode == "kill_index_write":
    g = G.Gallery.open(directory)
    from facesphere.infer.search import VectorIndex
    real_write = VectorIndex.write
    def half_then_die(index, path):
        real_write(index, path)
        os.truncate(path, os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    VectorIndex.write = half_then_die
    g.add(batch_vectors(5, 0, 4, g.dim), "committed_before_kill")
elif mode == "kill_transaction":
    g = G.Gallery.open(directory)
    calls = []
    real_blob = G.store._vector_blob
    def blob_then_die(vector):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_blob(vector)
    G.store._vector_blob = blob_then_die
    g.add(batch_vectors(6, 0, 5, g.dim), "never_committed")
'''


# ------------------------------------------------------------------------------------------------------------------
# search semantics


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_identity_hand_case(tmp_path, backend):
    g = Gallery.create(tmp_path / "g", 3, backend=backend)
    ids = g.add([[1, 0, 0], [0.6, 0.8, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0, 2]],
                ["alice", "alice", "bob", "carol", "carol"], paths=["a1.jpg", "a2.jpg", "b.jpg", "c1.jpg", None])
    assert ids.tolist() == [1, 2, 3, 4, 5]
    # query e1: alice 1.0 (id 1) / 0.6 (id 2), bob 0.8, carol 0 and 0 (tie: the smaller id, 4, represents carol)
    (hits,) = g.search([5, 0, 0], k=3)
    assert [(m.identity, m.id, m.path) for m in hits] == [("alice", 1, "a1.jpg"), ("bob", 3, "b.jpg"),
                                                         ("carol", 4, "c1.jpg")]
    np.testing.assert_allclose([m.score for m in hits], [1.0, 0.8, 0.0], atol=1e-6)
    (entries,) = g.search([1, 0, 0], k=5, per_identity=False)
    assert [m.id for m in entries] == [1, 3, 2, 4, 5]
    assert [m.path for m in entries][-1] is None
    assert [m.identity for m in g.search([1, 0, 0], k=5, threshold=0.7)[0]] == ["alice", "bob"]
    assert [m.identity for m in g.search([1, 0, 0], k=1)[0]] == ["alice"]
    # query (0.6, 0.8, 0): alice's best is now id 2 (1.0); bob 0.96; carol 0.8 by id 4
    hits = g.search(np.array([[0.6, 0.8, 0.0], [0, 0, -1]]), k=5)
    assert [(m.identity, m.id) for m in hits[0]] == [("alice", 2), ("bob", 3), ("carol", 4)]
    np.testing.assert_allclose([m.score for m in hits[0]], [1.0, 0.96, 0.8], atol=1e-6)
    # second query: carol's id 5 scores -1, everything else 0 -> alice (id 1), bob (id 3), carol (id 4)
    assert [(m.identity, m.id) for m in hits[1]] == [("alice", 1), ("bob", 3), ("carol", 4)]


def make_hard_gallery(directory: Path, backend: str, index: str = "flat") -> tuple[Gallery, np.ndarray, list[str]]:
    """1,000 entries of 24 identities: one identity of 400 near-identical entries (forces the candidate set to
    grow), duplicated vectors across identities (exact ties), singletons."""
    rng = np.random.default_rng(11)
    dim = 24
    base = unit_rows(rng, 600, dim)
    crowd = base[0] + 0.01 * rng.standard_normal((400, dim)).astype(np.float32)
    vectors = np.concatenate([crowd, base[1:401], base[1:101], base[401:501]])
    names = (["crowd"] * 400 + [f"p{i % 20}" for i in range(400)] + [f"dup{i % 3}" for i in range(100)]
             + ["last"] * 100)
    g = Gallery.create(directory, dim, backend=backend, index=index)
    g.add(vectors[:500], names[:500])
    g.add(vectors[500:], names[500:])
    return g, vectors, names


def test_exact_search_matches_reference_and_both_backends_agree(tmp_path):
    numpy_gallery, vectors, names = make_hard_gallery(tmp_path / "numpy", "numpy")
    stored = numpy_gallery.vectors(np.arange(1, len(vectors) + 1))
    ids = np.arange(1, len(vectors) + 1)
    galleries = [numpy_gallery]
    if HAVE_FAISS:
        galleries.append(make_hard_gallery(tmp_path / "faiss", "faiss")[0])
        assert galleries[1].backend == "faiss" and numpy_gallery.backend == "numpy"
    rng = np.random.default_rng(3)
    queries = np.concatenate([vectors[[0, 450, 820, 999]], rng.standard_normal((4, vectors.shape[1]))])
    for per_identity in (True, False):
        for k in (1, 5, 30):
            for threshold in (None, 0.1):
                results = [g.search(queries, k=k, per_identity=per_identity, threshold=threshold) for g in galleries]
                for q, query in enumerate(queries):
                    expected = reference_search(stored, ids, names, query, k, per_identity, threshold)
                    got = as_tuples(results[0][q])
                    assert [(n, i) for n, _, i in got] == [(n, i) for n, _, i in expected], (per_identity, k, q)
                    np.testing.assert_allclose([s for _, s, _ in got], [s for _, s, _ in expected], atol=1e-12)
                    if len(results) == 2:  # FAISS and numpy: identical entries, scores and order
                        assert as_tuples(results[1][q]) == got
    # ties: entries 801..900 (dup*) repeat the vectors of entries 401..500 (p*): the smaller id ranks first
    for g in galleries:
        (hits,) = g.search(vectors[805], k=2, per_identity=False)
        assert [m.id for m in hits] == [406, 806] and hits[0].score == hits[1].score


@pytest.mark.parametrize("backend", BACKENDS)
def test_inner_product_metric_keeps_norms(tmp_path, backend):
    g = Gallery.create(tmp_path / "g", 2, metric="ip", backend=backend)
    g.add([[3, 0], [0, 1], [1, 1]], ["a", "b", "c"])
    (hits,) = g.search([2, 1], k=3)
    assert [(m.identity, round(m.score, 6)) for m in hits] == [("a", 6.0), ("c", 3.0), ("b", 1.0)]


# ------------------------------------------------------------------------------------------------------------------
# changes and persistence


@pytest.mark.parametrize("backend,index", [("numpy", "flat")] + [
    pytest.param("faiss", kind, marks=needs_faiss) for kind in ("flat", "ivf", "hnsw")])
def test_remove_by_identity_and_ids(tmp_path, backend, index):
    rng = np.random.default_rng(5)
    vectors = unit_rows(rng, 120, 16)
    names = [f"id{i % 12}" for i in range(120)]
    g = Gallery.create(tmp_path / "g", 16, backend=backend, index=index)
    g.add(vectors, names)
    assert len(g) == 120 and g.identities()["id3"] == 10
    assert g.remove(identity="id3") == 10
    assert g.remove(ids=[1, 2, 2, 999]) == 2  # ids 1 and 2 (id0, id1); 999 does not exist
    assert g.remove(identity=["nobody"]) == 0
    with pytest.raises(InvalidOptionError, match="identity= and/or ids="):
        g.remove()
    assert len(g) == 108 and "id3" not in g.identities() and g.identities()["id0"] == 9
    alive = [e.id for e in g.entries()]
    assert 1 not in alive and 4 not in alive and len(alive) == 108
    hits = g.search(vectors, k=3, per_identity=False)
    for row, matches in enumerate(hits):
        assert all(m.identity != "id3" and m.id not in (1, 2) for m in matches)
        if row + 1 in alive and index != "hnsw":  # a live entry finds itself first
            assert matches[0].id == row + 1
    g.close()
    reopened = Gallery.open(tmp_path / "g", backend=backend)
    assert [as_tuples(row) for row in reopened.search(vectors, k=3, per_identity=False)] == \
        [as_tuples(row) for row in hits]
    assert reopened.remove(identity=[f"id{i}" for i in range(12)]) == 108
    assert len(reopened) == 0 and reopened.search(vectors[:2], k=3) == [[], []]
    reopened.add(vectors[:2], "again")
    assert [m.id for m in reopened.search(vectors[:2], k=1)[0]] == [121]  # ids are never reused


def test_round_trip_in_a_new_process(tmp_path):
    backend = "faiss" if HAVE_FAISS else "numpy"
    rng = np.random.default_rng(2)
    vectors = unit_rows(rng, 30, 8)
    g = Gallery.create(tmp_path / "g", 8, backend=backend, model="tiny | 112x112 RGB")
    g.add(vectors, [f"p{i % 4}" for i in range(30)], paths=[f"/faces/{i}.jpg" for i in range(30)],
          extra=[{"i": i} for i in range(30)])
    queries = vectors[:3]
    expected = [[[m.identity, m.score, m.id, m.path] for m in row] for row in g.search(queries, k=3)]
    g.close()

    child = run_worker("roundtrip", str(tmp_path / "g"), backend, json.dumps(queries.tolist()))
    assert child.returncode == 0, child.stderr
    seen = json.loads(child.stdout)
    assert seen["hits"] == expected
    assert seen["identities"] == {"p0": 8, "p1": 8, "p2": 7, "p3": 7}
    assert seen["entries"][5] == [6, "p1", "/faces/5.jpg", {"i": 5}]
    assert seen["model"] == "tiny | 112x112 RGB"
    # and what the child added survives its exit
    again = Gallery.open(tmp_path / "g", readonly=True)
    assert again.identities()["from_child"] == 3 and len(again) == 33
    (hits,) = again.search(batch_vectors(7, 0, 3, 8)[1], k=1)
    assert (hits[0].identity, hits[0].path, hits[0].id) == ("from_child", "c1.jpg", 32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_readers_see_new_entries_or_keep_their_snapshot(tmp_path, backend):
    rng = np.random.default_rng(8)
    vectors = unit_rows(rng, 20, 8)
    writer = Gallery.create(tmp_path / "g", 8, backend=backend)
    writer.add(vectors[:10], "old")
    live = Gallery.open(tmp_path / "g", readonly=True, backend=backend)
    frozen = Gallery.open(tmp_path / "g", readonly=True, backend=backend, auto_refresh=False)
    assert live.search(vectors[15], k=1)[0][0].identity == "old"
    assert frozen.search(vectors[15], k=1)[0][0].identity == "old"
    writer.add(vectors[10:], "new")
    assert live.search(vectors[15], k=1)[0][0].identity == "new"
    assert frozen.search(vectors[15], k=1)[0][0].identity == "old"  # its snapshot, until refresh()
    frozen.refresh()
    assert frozen.search(vectors[15], k=1)[0][0].identity == "new"
    writer.remove(identity="new")
    assert live.search(vectors[15], k=1)[0][0].identity == "old"
    with pytest.raises(InvalidOptionError, match="read-only"):
        live.add(vectors[:1], "x")


@needs_faiss
def test_index_cache_tracks_the_database(tmp_path):
    rng = np.random.default_rng(4)
    vectors = unit_rows(rng, 40, 8)
    g = Gallery.create(tmp_path / "g", 8)
    g.add(vectors[:20], "a")
    header, _ = read_index_file(tmp_path / "g" / INDEX_NAME)
    assert (header["version"], header["ntotal"], header["max_id"]) == (1, 20, 20)
    g.add(vectors[20:30], "b", update_index=False)  # the cache stays at version 1
    assert read_index_file(tmp_path / "g" / INDEX_NAME)[0]["version"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # catching up a stale cache is normal: no warning
        reader = Gallery.open(tmp_path / "g", readonly=True)
        assert reader.search(vectors[25], k=1)[0][0].identity == "b"
    assert g.save_index()
    header, _ = read_index_file(tmp_path / "g" / INDEX_NAME)
    assert (header["version"], header["ntotal"]) == (2, 30)
    g.add(vectors[30:], "c")
    assert read_index_file(tmp_path / "g" / INDEX_NAME)[0]["ntotal"] == 40
    plain = faiss.read_index(str(tmp_path / "g" / INDEX_NAME))  # a genuine FAISS file (the trailer is ignored)
    scores, labels = plain.search(vectors[35:36], 1)
    assert labels[0, 0] == 36 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)


# ------------------------------------------------------------------------------------------------------------------
# approximate indexes


@needs_faiss
def test_ivf_and_hnsw_recall_against_exact(tmp_path):
    rng = np.random.default_rng(0)
    dim, count = 32, 4000
    centres = unit_rows(rng, 100, dim)
    vectors = centres[rng.integers(0, 100, count)] + 0.35 * unit_rows(rng, count, dim)
    queries = vectors[rng.choice(count, 100, replace=False)] + 0.1 * unit_rows(rng, 100, dim)
    names = [f"n{i}" for i in range(count)]
    exact = Gallery.create(tmp_path / "flat", dim, backend="numpy")
    exact.add(vectors, names)
    truth = [{m.id for m in row} for row in exact.search(queries, k=10, per_identity=False)]
    for kind in ("ivf", "hnsw"):
        g = Gallery.create(tmp_path / kind, dim, index=kind)
        lists = []
        for start in range(0, count, 1000):  # grown in steps: IVF retrains when its list count should double
            g.add(vectors[start:start + 1000], names[start:start + 1000])
            lists.append((g._state.searcher.nlist, g._state.searcher.trained_on))
        found = g.search(queries, k=10, per_identity=False)
        recall = np.mean([len(truth[q] & {m.id for m in found[q]}) / 10 for q in range(len(queries))])
        assert recall >= 0.9, (kind, recall)
        # every hit's score is exact, whatever index found it
        for q in (0, 1):
            for m in found[q]:
                assert m.score == pytest.approx(float(exact.vectors([m.id])[0].astype(np.float64)
                                                      @ (queries[q] / np.linalg.norm(queries[q]))), abs=1e-6)
        if kind == "ivf":
            # nlist = min(4 sqrt(N), N / 39): 25, 51, (76 < 2 x 51: kept), 102
            assert lists == [(25, 1000), (51, 2000), (51, 2000), (102, 4000)]
            g.nprobe = 102  # visiting every list makes IVF exact
            assert [as_tuples(r) for r in g.search(queries[:10], k=5)] == \
                [as_tuples(r) for r in exact.search(queries[:10], k=5)]


# ------------------------------------------------------------------------------------------------------------------
# crash safety


@needs_faiss
def test_index_write_failure_keeps_the_old_file_and_loses_nothing(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    vectors = unit_rows(rng, 30, 8)
    g = Gallery.create(tmp_path / "g", 8)
    g.add(vectors[:20], "before")
    index_path = tmp_path / "g" / INDEX_NAME
    old_bytes = index_path.read_bytes()

    real_write = VectorIndex.write

    def half_then_fail(index, path):
        real_write(index, path)
        os.truncate(path, os.path.getsize(path) // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(VectorIndex, "write", half_then_fail)
    with pytest.warns(GalleryWarning, match="could not write the index cache"):
        ids = g.add(vectors[20:], "after")
    assert ids.tolist() == list(range(21, 31))  # committed to SQLite, the source of truth
    assert index_path.read_bytes() == old_bytes  # the old cache, untouched
    assert [p.name for p in (tmp_path / "g").iterdir() if "tmp" in p.name] == []
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reopened = Gallery.open(tmp_path / "g")
        assert len(reopened) == 30 and reopened.search(vectors[25], k=1)[0][0].id == 26
    # the database itself is all-or-nothing: a failure inside the transaction adds nothing
    monkeypatch.setattr(gallery_module.store, "_vector_blob", lambda vector: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        reopened.add(vectors[:3], "lost")
    assert len(reopened) == 30 and "lost" not in reopened.identities()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_full_disk_during_an_add_is_a_clean_error_and_loses_nothing(tmp_path, backend):
    vectors = unit_rows(np.random.default_rng(12), 2020, 16)
    g = Gallery.create(tmp_path / "g", 16, backend=backend)
    g.add(vectors[:20], "before")
    expected = [as_tuples(row) for row in g.search(vectors[:3], k=2)]
    # SQLite's answer to ENOSPC is SQLITE_FULL: cap the database at its current size, the same answer
    pages = g._connection.execute("PRAGMA page_count").fetchone()[0]
    g._connection.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(OutputError) as info:
        g.add(vectors[20:], "lost")
    assert str(info.value) == (f"{tmp_path / 'g' / 'gallery.sqlite'}: cannot write to the gallery (database or disk "
                               "is full); the change was rolled back and the gallery is as it was")
    assert len(g) == 20 and g.version == 1 and "lost" not in g.identities()
    assert [as_tuples(row) for row in g.search(vectors[:3], k=2)] == expected
    g.close()
    reopened = Gallery.open(tmp_path / "g", backend=backend)  # a new connection: the disk has room again
    assert len(reopened) == 20 and reopened.identities() == {"before": 20}
    assert reopened.add(vectors[20:], "after").tolist() == list(range(21, 2021))


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@needs_faiss
def test_sigkill_mid_index_write_and_mid_transaction(tmp_path):
    rng = np.random.default_rng(9)
    vectors = unit_rows(rng, 25, 8)
    g = Gallery.create(tmp_path / "g", 8)
    g.add(vectors, "base")
    g.close()
    killed = run_worker("kill_index_write", str(tmp_path / "g"))
    assert killed.returncode == -signal.SIGKILL
    assert any(p.name.startswith(f".{INDEX_NAME}.") and p.name.endswith(".tmp")
               for p in (tmp_path / "g").iterdir())  # the stray half file
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = Gallery.open(tmp_path / "g")
        assert len(g) == 29  # the rows were committed before the index write began
        assert g.search(batch_vectors(5, 0, 4, 8)[2], k=1)[0][0].identity == "committed_before_kill"
    killed = run_worker("kill_transaction", str(tmp_path / "g"))
    assert killed.returncode == -signal.SIGKILL
    assert len(g) == 29 and "never_committed" not in g.identities() and g.version == 2
    g.add(vectors[:1], "next")  # the next writer clears the stray temporary file
    assert not any("tmp" in p.name for p in (tmp_path / "g").iterdir())
    assert read_index_file(tmp_path / "g" / INDEX_NAME)[0]["ntotal"] == 30


@needs_faiss
@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "delete"])
def test_corrupt_or_missing_index_is_rebuilt_with_a_warning(tmp_path, damage):
    rng = np.random.default_rng(10)
    vectors = unit_rows(rng, 50, 8)
    g = Gallery.create(tmp_path / "g", 8, index="ivf")
    g.add(vectors, [f"p{i % 5}" for i in range(50)])
    expected = [as_tuples(r) for r in g.search(vectors[:5], k=3)]
    g.close()
    index_path = tmp_path / "g" / INDEX_NAME
    if damage == "truncate":
        index_path.write_bytes(index_path.read_bytes()[:-100])
    elif damage == "flip":  # one payload byte changed: the CRC-32 notices
        data = bytearray(index_path.read_bytes())
        data[len(data) // 3] ^= 0x40
        index_path.write_bytes(bytes(data))
    elif damage == "garbage":
        index_path.write_bytes(b"\0" * 1000)
    else:
        index_path.unlink()
    message = "missing" if damage == "delete" else "corrupt"
    readonly = Gallery.open(tmp_path / "g", readonly=True)
    with pytest.warns(GalleryWarning, match=message):
        assert [as_tuples(r) for r in readonly.search(vectors[:5], k=3)] == expected
    assert index_path.exists() == (damage != "delete")  # a read-only gallery writes nothing
    writable = Gallery.open(tmp_path / "g")
    with pytest.warns(GalleryWarning, match=message):
        assert [as_tuples(r) for r in writable.search(vectors[:5], k=3)] == expected
    assert read_index_file(index_path)[0]["ntotal"] == 50  # rewritten
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [as_tuples(r) for r in Gallery.open(tmp_path / "g").search(vectors[:5], k=3)] == expected


# ------------------------------------------------------------------------------------------------------------------
# concurrency


@pytest.mark.slow
def test_two_writer_processes_never_corrupt(tmp_path):
    Gallery.create(tmp_path / "g", 8).close()
    workers = [start_worker("writer", str(tmp_path / "g"), str(seed), prefix, "25", "4")
               for seed, prefix in ((1, "x"), (2, "y"))]
    for worker in workers:
        out, err = worker.communicate(timeout=90)
        assert worker.returncode == 0, err
    g = Gallery.open(tmp_path / "g")
    assert len(g) == 200 and g.version == 50
    entries = g.entries()
    assert [e.id for e in entries] == list(range(1, 201))
    for seed, prefix in ((1, "x"), (2, "y")):
        for batch in (0, 13, 24):
            vectors = batch_vectors(seed, batch, 4, 8)
            hits = g.search(vectors, k=1, per_identity=False)
            assert {row[0].identity for row in hits} == {f"{prefix}{batch}"}
            assert all(row[0].score > 0.999999 for row in hits)
    if HAVE_FAISS:  # the cache reflects the last committed version
        assert read_index_file(tmp_path / "g" / INDEX_NAME)[0]["version"] == 50


@pytest.mark.slow
def test_readers_during_writes_see_growing_consistent_snapshots(tmp_path):
    batches, size, dim = 30, 3, 8
    Gallery.create(tmp_path / "g", dim).close()
    readers = [start_worker("reader", str(tmp_path / "g"), "4", str(batches), str(size), how, str(dim))
               for how in ("keep", "reopen")]
    time.sleep(0.3)
    writer = start_worker("writer", str(tmp_path / "g"), "4", "w", str(batches), str(size))
    _, err = writer.communicate(timeout=90)
    assert writer.returncode == 0, err
    for reader in readers:
        out, err = reader.communicate(timeout=90)
        assert reader.returncode == 0, out + err
        history = json.loads(out.splitlines()[-1])["history"]
        counts = [count for count, _ in history]
        prefixes = [prefix for _, prefix in history]
        assert counts == sorted(counts) and prefixes == sorted(prefixes)  # monotonic
        assert prefixes[-1] == batches  # and finally everything
        assert all(prefix * size <= count for count, prefix in history)  # search never runs ahead of the database


@pytest.mark.slow
def test_writers_starting_together_on_a_gallery_that_does_not_exist_all_succeed(tmp_path):
    count, dim, size = 24, 8, 3
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    workers = [start_worker("create_and_add", str(tmp_path / "g"), str(i), str(barrier), str(dim), str(size))
               for i in range(count)]
    deadline = time.time() + 120
    while len(list(barrier.glob("ready*"))) < count and time.time() < deadline:
        time.sleep(0.01)
    (barrier / "go").touch()
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err[-2000:]  # nobody was told to pass overwrite=True
    g = Gallery.open(tmp_path / "g", backend="numpy")
    assert len(g) == count * size and g.version == count  # one gallery, nothing lost, nothing added twice
    assert g.identities() == {f"w{i}": size for i in range(count)}
    for i in (0, count // 2, count - 1):
        hits = g.search(batch_vectors(i, 0, size, dim), k=1, per_identity=False)
        assert {row[0].identity for row in hits} == {f"w{i}"} and all(row[0].score > 0.999999 for row in hits)


# ------------------------------------------------------------------------------------------------------------------
# errors and small things


def test_error_messages(tmp_path):
    with pytest.raises(DataError, match="no such gallery directory"):
        Gallery.open(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"not a facesphere gallery \(no gallery.sqlite"):
        Gallery.open(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "gallery.sqlite").write_text("hello, I am not a database" * 50)
    with pytest.raises(DataError, match="junk.*not a facesphere gallery database"):
        Gallery.open(tmp_path / "junk")
    (tmp_path / "other").mkdir()
    import sqlite3

    sqlite3.connect(tmp_path / "other" / "gallery.sqlite").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(DataError, match="not a facesphere gallery database"):
        Gallery.open(tmp_path / "other")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        Gallery.create(tmp_path / "file", 4)
    with pytest.raises(UnknownNameError, match="valid: cosine, ip"):
        Gallery.create(tmp_path / "g", 4, metric="euclid")
    with pytest.raises(UnknownNameError, match="valid: flat, ivf, hnsw"):
        Gallery.create(tmp_path / "g", 4, index="lsh")
    with pytest.raises(UnknownNameError, match="unknown gallery index option 'nlists'"):
        Gallery.create(tmp_path / "g", 4, index="ivf", index_options={"nlists": 4})
    with pytest.raises(InvalidOptionError, match="dim must be a positive integer"):
        Gallery.create(tmp_path / "g", 0)

    g = Gallery.create(tmp_path / "g", 4, model="model A")
    with pytest.raises(DataError, match="a gallery already exists"):
        Gallery.create(tmp_path / "g", 4)
    with pytest.raises(DataError, match=r"embeddings are 3-d but the gallery .*g holds 4-d"):
        g.add(np.ones((2, 3)), ["a", "b"])
    with pytest.raises(DataError, match=r"queries are 5-d"):
        g.search(np.ones(5))
    with pytest.raises(DataError, match="row 1 contains NaN"):
        g.add([[1, 0, 0, 0], [np.nan, 0, 0, 0]], ["a", "b"])
    with pytest.raises(DataError, match="row 0 is all zeros"):
        g.add(np.zeros((1, 4)), "a")
    with pytest.raises(DataError, match="3 identities for 2 embeddings"):
        g.add(np.ones((2, 4)), ["a", "b", "c"])
    with pytest.raises(DataError, match="1 image paths for 2 embeddings"):
        g.add(np.ones((2, 4)), "a", paths=["x.jpg"])
    with pytest.raises(DataError, match="identity #1 must be a non-empty string"):
        g.add(np.ones((2, 4)), ["a", ""])
    with pytest.raises(InvalidOptionError, match="JSON"):
        g.add(np.ones((1, 4)), "a", extra={"x": object()})
    with pytest.raises(DataError, match="holds embeddings of model 'model A'; refusing to add embeddings of model "
                                        "'model B'"):
        g.add(np.ones((1, 4)), "a", model="model B")
    with pytest.raises(DataError, match="refusing to search with embeddings of model 'model B'"):
        g.search(np.ones(4), model="model B")
    with pytest.raises(InvalidOptionError, match="k must be a positive integer"):
        g.search(np.ones(4), k=0)
    assert len(g) == 0  # nothing of the above was added
    g.add(np.ones((1, 4)), "a", model="model A")
    with pytest.raises(DataError, match="holds 4-d embeddings, these are 8-d"):
        Gallery.open_or_create(tmp_path / "g", 8)
    assert len(Gallery.open_or_create(tmp_path / "g", 4)) == 1
    assert len(Gallery.create(tmp_path / "g", 6, overwrite=True)) == 0
    assert all(issubclass(e, FaceSphereError) for e in (DataError, InvalidOptionError, UnknownNameError))


def test_model_fingerprint_is_recorded_on_first_add(tmp_path):
    embedder = SimpleNamespace(name="r50.onnx", input_size=(112, 112), color="bgr", mean=127.5, std=127.5)
    fingerprint = model_fingerprint(embedder, flip="sum")
    assert fingerprint == "r50.onnx | 112x112 BGR (p - 127.5) / 127.5 | flip=sum"
    assert model_fingerprint(embedder, flip="none") != fingerprint
    g = Gallery.create(tmp_path / "g", 2)
    assert g.model is None
    g.add([[1, 0]], "a")  # no fingerprint given: nothing to check or record
    g.add([[0, 1]], "b", model=fingerprint)
    assert Gallery.open(tmp_path / "g").model == fingerprint
    with pytest.raises(DataError, match="refusing"):
        g.add([[0, 1]], "c", model=model_fingerprint(embedder, flip="none"))
    g.set_model("renamed.onnx")
    assert g.model == "renamed.onnx"


def test_numpy_fallback_without_faiss(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # "import faiss" now raises ImportError
    with pytest.raises(FaceSphereError, match=r'pip install "facesphere\[faiss\]"'):
        Gallery.create(tmp_path / "g", 4, backend="faiss")
    g = Gallery.create(tmp_path / "g", 4, index="hnsw")  # approximate kinds fall back to exact numpy search
    assert g.backend == "numpy"
    g.add(np.eye(4), ["a", "b", "c", "d"])
    assert [m.identity for m in g.search([0, 1, 0.5, 0], k=2)[0]] == ["b", "c"]
    assert not (tmp_path / "g" / INDEX_NAME).exists()


def test_module_import_is_cheap():
    child = run_worker("imports", "unused")
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout) == []


def test_entries_vectors_info_and_context_manager(tmp_path):
    with Gallery.open_or_create(tmp_path / "g", 3, index="hnsw") as g:
        assert g.index_kind == "hnsw" and g.info()["entries"] == 0
        g.add([[0, 0, 2], [0, 3, 0]], ["b", "a"], paths=[tmp_path / "b.png", None], extra={"source": "test"})
        assert [(e.id, e.identity, e.path, e.extra) for e in g.entries()] == [
            (1, "b", str(tmp_path / "b.png"), {"source": "test"}), (2, "a", None, {"source": "test"})]
        assert [e.id for e in g.entries(identity="a")] == [2] and [e.id for e in g.entries([2, 7])] == [2]
        np.testing.assert_array_equal(g.vectors([2, 1]), [[0, 1, 0], [0, 0, 1]])  # stored normalised
        with pytest.raises(DataError, match="no gallery entry 7"):
            g.vectors([7])
        info = g.info()
        assert (info["entries"], info["identities"], info["dim"], info["version"]) == (2, 2, 3, 1)
        assert "2 entries" in repr(g) and len(g) == 2 and g.identities() == {"a": 1, "b": 1}
        assert g.add(np.zeros((0, 3)), []).tolist() == []
    assert "closed" in repr(g)


def test_face_recognizer_searches_a_gallery(tmp_path):
    import torch

    import facesphere as fs

    torch.manual_seed(0)
    backbone = fs.build_backbone("sfnet4", embed_dim=16, channels=(8, 16, 32, 64)).eval()
    recognizer = fs.FaceRecognizer(fs.load_embedder(backbone, input_mean=127.5, input_std=128.0))
    faces = np.random.default_rng(1).integers(0, 256, (4, 112, 112, 3), dtype=np.uint8)
    fingerprint = model_fingerprint(recognizer.embedder, flip=recognizer.flip)
    g = Gallery.create(tmp_path / "g", 16, model=fingerprint)
    g.add(recognizer.embed(list(faces)), ["a", "a", "b", "c"], paths=["0.png", "1.png", "2.png", "3.png"],
          model=fingerprint)
    matches = recognizer.search(faces[2], g, k=2)
    assert (matches[0].identity, matches[0].index, matches[0].path) == ("b", 3, "2.png")
    assert matches[0].score == pytest.approx(1.0, abs=1e-5) and len(matches) == 2
