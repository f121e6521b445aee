"""A consistent in-memory snapshot of a gallery: entry ids, identity codes and the search index, with the exact
(float64-rescored) top-k search that makes every backend return the same answer."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..search import VectorIndex


class Snapshot:
    """The gallery as of database ``version``: entry ids (ascending), their identity codes, and its search index."""

    def __init__(self, *, uuid_: str, version: int, token: str, searcher: VectorIndex) -> None:
        self.uuid, self.version, self.token = uuid_, version, token
        self.searcher = searcher
        self.ids = np.zeros(0, dtype=np.int64)
        self.codes = np.zeros(0, dtype=np.int32)
        self.names: list[str] = []
        self._code_of: dict[str, int] = {}
        self._identity_count: int | None = None

    @property
    def identity_count(self) -> int:
        """Number of distinct identities among the entries held."""
        if self._identity_count is None:
            self._identity_count = len(np.unique(self.codes))
        return self._identity_count

    @property
    def max_id(self) -> int:
        return int(self.ids[-1]) if len(self.ids) else 0

    def _encode(self, identities: Sequence[str]) -> np.ndarray:
        codes = np.empty(len(identities), dtype=np.int32)
        for position, name in enumerate(identities):
            code = self._code_of.get(name)
            if code is None:
                code = self._code_of[name] = len(self.names)
                self.names.append(name)
            codes[position] = code
        return codes

    def append_labels(self, ids: np.ndarray, identities: Sequence[str]) -> None:
        """Record entries (ids larger than every id held) without touching the searcher."""
        if len(ids) and len(self.ids) and ids[0] <= self.ids[-1]:
            raise AssertionError("gallery entry ids must grow")  # pragma: no cover - AUTOINCREMENT guarantees it
        self.ids = np.concatenate([self.ids, ids])
        self.codes = np.concatenate([self.codes, self._encode(identities)])
        self._identity_count = None

    def add(self, ids: np.ndarray, identities: Sequence[str], vectors: np.ndarray) -> None:
        self.append_labels(ids, identities)
        self.searcher.add(ids, vectors)

    def remove(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self.ids, ids)
        self.ids, self.codes = self.ids[keep], self.codes[keep]
        self._identity_count = None
        self.searcher.remove(ids)

    def identity_codes(self, ids: np.ndarray) -> np.ndarray:
        return self.codes[np.searchsorted(self.ids, ids)]

    # --- search -------------------------------------------------------------------------------------------------
    def rescore(self, query: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Exact float64 inner products ``(len(ids),)`` of the stored float32 vectors with ``query`` (float32
        products are exact in float64; each row is summed the same way, so equal vectors give equal scores)."""
        scores = np.empty(len(ids), dtype=np.float64)
        query64 = query.astype(np.float64)
        for start in range(0, len(ids), 4096):
            block = self.searcher.vectors(ids[start:start + 4096]).astype(np.float64)
            scores[start:start + 4096] = np.multiply(block, query64).sum(axis=1)
        return scores

    def search(self, queries: np.ndarray, k: int, per_identity: bool, threshold: float | None,
               max_norm: float) -> list[list[tuple[int, int, float]]]:
        """Per query, up to ``k`` ``(entry id, identity code, score)``, best first (ties: smaller id first)."""
        count = len(self.ids)
        results: list[list[tuple[int, int, float]]] = [[] for _ in range(len(queries))]
        if count == 0:
            return results
        dim = queries.shape[1]
        # |float32 dot - exact dot| <= gamma_D |q| |x| for any summation order (Higham, Thm 3.1 / 3.5)
        gamma = 1.01 * dim * 2.0 ** -24
        query_norms = np.linalg.norm(queries.astype(np.float64), axis=1)
        m = min(count, 4 * k + 16 if per_identity else k + 16)
        wanted = min(k, self.identity_count if per_identity else count)  # hits there can be at most
        pending = list(range(len(queries)))
        while pending:
            approx, labels = self.searcher.search(queries[pending], m)
            unfinished = []
            for row, query_index in enumerate(pending):
                valid = labels[row] >= 0
                ids, approx_scores = labels[row][valid].astype(np.int64), approx[row][valid]
                scores = self.rescore(queries[query_index], ids)
                order = np.lexsort((ids, -scores))
                ids, scores = ids[order], scores[order]
                if threshold is not None:
                    keep = scores >= threshold
                    ids, scores = ids[keep], scores[keep]
                codes = self.identity_codes(ids)
                if per_identity:
                    _, first = np.unique(codes, return_index=True)
                    first.sort()
                    ids, scores, codes = ids[first], scores[first], codes[first]
                ids, scores, codes = ids[:k], scores[:k], codes[:k]
                done = m >= count
                if not done and self.searcher.exact:
                    # entries not returned score <= bound; the answer is final once the k-th score beats it
                    bound = float(approx_scores[-1]) + gamma * query_norms[query_index] * max_norm
                    needed = scores[-1] if len(ids) == wanted else (-math.inf if threshold is None else threshold)
                    done = needed > bound
                elif not done:  # approximate index: stop once k hits are found (or the rest fall under threshold)
                    done = len(ids) == wanted or (threshold is not None and len(approx_scores) > 0
                                             and float(approx_scores[-1]) < threshold)
                if done:
                    results[query_index] = [(int(i), int(c), float(s)) for i, c, s in zip(ids, codes, scores)]
                else:
                    unfinished.append(query_index)
            pending = unfinished
            m = min(count, 2 * m)
        return results
