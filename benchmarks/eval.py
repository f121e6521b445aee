"""Evaluation speed: the exact 10-fold accuracy against an InsightFace-style grid search, and 1:N search with FAISS
against numpy brute force.

    python benchmarks/eval.py                                  # 6k / 600k / 6M pairs; 10,000 probes x 1,000,000
    python benchmarks/eval.py --quick                          # 6k / 600k pairs; 1,000 probes x 100,000
    python benchmarks/eval.py --markdown docs/benchmarks.md    # also rewrite the eval section of that page

10-fold accuracy (docs/methods.md §8.2) on synthetic LFW-like scores (10 contiguous folds, half genuine; genuine cosines
~ N(0.45, 0.2), impostors ~ N(0.1, 0.2)):

* ``exact`` — ``facesphere.evaluate.metrics.kfold_accuracy`` (sort-based exact optimum per training split);
* ``InsightFace routine`` — written below with the control flow of InsightFace's ``verification.py`` ROC routine:
  squared distance ``d = 2 - 2·cos``, thresholds ``np.arange(0, 4, 0.01)``; per fold, for every threshold the
  training split is indexed out and TP / FP / TN / FN counted by summing boolean masks; first argmax; test accuracy
  on the held-out fold, plus the held-out fold's TPR / FPR at every threshold (the ROC that routine returns);
* ``lean grid`` — the same search written lean (training split indexed once, ``count_nonzero``, no ROC): what a
  careful grid implementation costs;
* ``facesphere insightface`` — ``kfold_accuracy(method="insightface")``: the same definition, vectorised with
  sorted scores and ``searchsorted`` (identical thresholds and accuracies).

1:N: ``P`` probes against ``G`` random unit 512-d gallery vectors, top-10 by inner product: facesphere's numpy
brute force (``SearchIndex(method="numpy")``), FAISS ``IndexFlatIP`` (exact) and, with ``--approx`` / ``--hnsw``,
IVF / HNSW with their recall@1 against the exact answer. Random vectors have no cluster structure, the worst case
for IVF.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from facesphere.infer.search import SearchIndex, faiss_available  # noqa: E402
from facesphere.evaluate.metrics import kfold_accuracy  # noqa: E402
from heads import machine, write_section  # noqa: E402

GRID = np.arange(0, 4, 0.01)


def lfw_like_scores(n_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` cosines in 10 contiguous folds, each half genuine (N(0.45, 0.2)) and half impostor (N(0.1, 0.2))."""
    rng = np.random.default_rng(seed)
    block = n_pairs // 10
    issame = np.tile(np.r_[np.ones(block // 2, bool), np.zeros(block - block // 2, bool)], 10)
    scores = np.where(issame, rng.normal(0.45, 0.2, issame.size), rng.normal(0.1, 0.2, issame.size))
    return np.clip(scores, -1.0, 1.0), issame


def insightface_rates(threshold: float, dist: np.ndarray, issame: np.ndarray) -> tuple[float, float, float]:
    """(TPR, FPR, accuracy) of "same iff d < threshold", counted as InsightFace's routine counts them: four
    boolean masks summed with ``np.sum``."""
    predicted = np.less(dist, threshold)
    tp = np.sum(np.logical_and(predicted, issame))
    fp = np.sum(np.logical_and(predicted, np.logical_not(issame)))
    tn = np.sum(np.logical_and(np.logical_not(predicted), np.logical_not(issame)))
    fn = np.sum(np.logical_and(np.logical_not(predicted), issame))
    tpr = 0.0 if tp + fn == 0 else float(tp) / float(tp + fn)
    fpr = 0.0 if fp + tn == 0 else float(fp) / float(fp + tn)
    return tpr, fpr, float(tp + tn) / dist.size


def insightface_routine(scores: np.ndarray, issame: np.ndarray, n_folds: int = 10) -> tuple[float, float]:
    """The InsightFace grid search with the control flow of its ``verification.py`` ROC routine: per fold, for every
    one of the 400 thresholds the training split is indexed out and its accuracy counted; the first argmax is
    applied to the held-out fold; the held-out fold's TPR / FPR are also computed at every threshold (the ROC the
    routine returns). Returns (mean test accuracy, mean training accuracy of the chosen thresholds)."""
    dist = 2.0 - 2.0 * scores
    folds = np.array_split(np.arange(scores.size), n_folds)
    test_acc, train_acc = [], []
    tprs = np.zeros((n_folds, GRID.size))
    fprs = np.zeros((n_folds, GRID.size))
    for f, test in enumerate(folds):
        train = np.setdiff1d(np.arange(scores.size), test)
        accuracies = np.zeros(GRID.size)
        for i, threshold in enumerate(GRID):
            _, _, accuracies[i] = insightface_rates(threshold, dist[train], issame[train])
        best = int(np.argmax(accuracies))
        for i, threshold in enumerate(GRID):
            tprs[f, i], fprs[f, i], _ = insightface_rates(threshold, dist[test], issame[test])
        train_acc.append(accuracies[best])
        test_acc.append(insightface_rates(GRID[best], dist[test], issame[test])[2])
    return float(np.mean(test_acc)), float(np.mean(train_acc))


def lean_grid(scores: np.ndarray, issame: np.ndarray, n_folds: int = 10) -> float:
    """The same grid search written lean: training split indexed once, ``count_nonzero``, no ROC. Mean test
    accuracy."""
    dist = 2.0 - 2.0 * scores
    test_acc = []
    for test in np.array_split(np.arange(scores.size), n_folds):
        train = np.ones(scores.size, bool)
        train[test] = False
        d, y = dist[train], issame[train]
        correct = [np.count_nonzero(np.less(d, t) == y) for t in GRID]
        best = GRID[int(np.argmax(correct))]
        test_acc.append(np.count_nonzero(np.less(dist[test], best) == issame[test]) / test.size)
    return float(np.mean(test_acc))


def timed(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def kfold_rows(sizes: list[int]) -> list[dict]:
    rows = []
    for n in sizes:
        scores, issame = lfw_like_scores(n)
        repeats = 5 if n <= 10_000 else (3 if n <= 1_000_000 else 2)
        t_exact, exact = timed(lambda: kfold_accuracy(scores, issame), repeats)
        t_fs_grid, fs_grid = timed(lambda: kfold_accuracy(scores, issame, method="insightface"), repeats)
        t_lean, lean_test = timed(lambda: lean_grid(scores, issame), 1 if n > 10_000 else 3)
        t_grid, (grid_test, grid_train) = timed(lambda: insightface_routine(scores, issame), 1 if n > 10_000 else 3)
        for name, value in (("the InsightFace routine", grid_test), ("the lean grid", lean_test)):
            if abs(value - fs_grid.mean) > 1e-12:  # every implementation of one definition must agree
                raise AssertionError(f"{name} gives {value}, kfold_accuracy(method='insightface') {fs_grid.mean}")
        rows.append({"pairs": n, "exact_s": t_exact, "grid_s": t_grid, "lean_s": t_lean, "fs_grid_s": t_fs_grid,
                     "exact_acc": exact.mean, "grid_acc": grid_test,
                     "exact_train": float(np.mean(exact.train_accuracies)), "grid_train": grid_train})
        print(f"  {n:>10,} pairs: exact {t_exact * 1e3:9.1f} ms, InsightFace routine {t_grid * 1e3:10.1f} ms "
              f"(x{t_grid / t_exact:,.0f}), lean grid {t_lean * 1e3:9.1f} ms (x{t_lean / t_exact:,.0f}), "
              f"facesphere insightface {t_fs_grid * 1e3:8.1f} ms", file=sys.stderr)
        del scores, issame
        gc.collect()
    return rows


def search_rows(n_gallery: int, n_probes: int, dim: int, k: int, approx: bool, hnsw: bool,
                threads: int) -> list[dict]:
    rng = np.random.default_rng(1)
    gallery = rng.standard_normal((n_gallery, dim), dtype=np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    probes = rng.standard_normal((n_probes, dim), dtype=np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    rows = []
    start = time.perf_counter()
    index = SearchIndex(gallery, method="numpy", normalize=False)
    build = time.perf_counter() - start
    start = time.perf_counter()
    _, exact = index.search(probes, k)
    rows.append({"method": "numpy brute force (facesphere)", "build_s": build, "search_s": time.perf_counter() - start,
                 "recall": 1.0})
    print(f"  numpy: {rows[-1]['search_s']:.1f} s", file=sys.stderr)
    del index
    gc.collect()
    if not faiss_available():
        print("  faiss is not installed: FAISS rows skipped", file=sys.stderr)
        return rows
    cases = [("FAISS IndexFlatIP (exact)", "flat", {})]
    if approx:
        cases.append(("FAISS IVF (nlist 1024, nprobe 32)", "ivf", {"nlist": 1024, "nprobe": 32}))
    if hnsw:
        cases.append(("FAISS HNSW (M 32, efSearch 128)", "hnsw", {"hnsw_m": 32, "ef_search": 128}))
    for label, method, options in cases:
        start = time.perf_counter()
        index = SearchIndex(gallery, method=method, normalize=False, threads=threads, **options)
        build = time.perf_counter() - start
        start = time.perf_counter()
        _, found = index.search(probes, k)
        elapsed = time.perf_counter() - start
        recall = float(np.mean(found[:, 0] == exact[:, 0]))
        rows.append({"method": label, "build_s": build, "search_s": elapsed, "recall": recall})
        print(f"  {label}: build {build:.1f} s, search {elapsed:.1f} s, recall@1 {recall:.4f}", file=sys.stderr)
        del index
        gc.collect()
    return rows


def format_text(kfold: list[dict], search: list[dict], n_gallery: int, n_probes: int, dim: int, k: int) -> str:
    lines = [f"Machine: {machine()}; numpy {np.__version__}; 1-min load average at the end "
             f"{os.getloadavg()[0]:.2f}.", "",
             "10-fold verification accuracy (best of repeated runs; accuracy = mean test accuracy over the folds, "
             "train = mean accuracy of the chosen thresholds on their 9 training folds):", "",
             "| pairs | exact ms | InsightFace routine ms | speed-up | lean grid ms | speed-up | "
             "facesphere `insightface` ms | exact acc % (train) | grid acc % (train) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in kfold:
        lines.append(f"| {r['pairs']:,} | {r['exact_s'] * 1e3:,.1f} | {r['grid_s'] * 1e3:,.0f} | "
                     f"{r['grid_s'] / r['exact_s']:,.0f}x | {r['lean_s'] * 1e3:,.0f} | "
                     f"{r['lean_s'] / r['exact_s']:,.1f}x | {r['fs_grid_s'] * 1e3:,.1f} | "
                     f"{100 * r['exact_acc']:.3f} ({100 * r['exact_train']:.3f}) | "
                     f"{100 * r['grid_acc']:.3f} ({100 * r['grid_train']:.3f}) |")
    lines += ["", f"1:N search, {n_probes:,} probes x {n_gallery:,} random unit {dim}-d gallery vectors, top-{k} "
              "by inner product (recall@1 against the exact answer):", "",
              "| method | build s | search s | probes/s | recall@1 |", "|---|---:|---:|---:|---:|"]
    for r in search:
        lines.append(f"| {r['method']} | {r['build_s']:.1f} | {r['search_s']:.1f} | "
                     f"{n_probes / r['search_s']:,.0f} | {r['recall']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=None,
                        help="pair counts (default 6,000 600,000 6,000,000; --quick: 6,000 600,000)")
    parser.add_argument("--gallery", type=int, default=None, help="gallery size (default 1,000,000; --quick 100,000)")
    parser.add_argument("--probes", type=int, default=None, help="probes (default 10,000; --quick 1,000)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--approx", action="store_true", help="also time FAISS IVF")
    parser.add_argument("--hnsw", action="store_true", help="also time FAISS HNSW (its graph build is slow: minutes "
                        "per 100,000 vectors on 2 cores)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="FAISS threads")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a quick look")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--markdown", type=Path, help="also write the table into this markdown file's eval section")
    args = parser.parse_args(argv)
    pairs = args.pairs or ([6_000, 600_000] if args.quick else [6_000, 600_000, 6_000_000])
    n_gallery = args.gallery or (100_000 if args.quick else 1_000_000)
    n_probes = args.probes or (1_000 if args.quick else 10_000)
    print("10-fold accuracy:", file=sys.stderr)
    kfold = kfold_rows(pairs)
    search = []
    if not args.skip_search:
        print(f"1:N search ({n_probes:,} x {n_gallery:,}):", file=sys.stderr)
        search = search_rows(n_gallery, n_probes, args.dim, args.k, args.approx, args.hnsw, args.threads)
    text = format_text(kfold, search, n_gallery, n_probes, args.dim, args.k)
    print(text)
    if args.markdown:
        write_section(args.markdown, "eval", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
