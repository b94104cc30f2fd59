"""Exact nearest-neighbour search over descriptors, with query expansion.

A flat index: similarities are computed by batched matrix products (BLAS)
over chunks of the database; the top-k of the first chunk is found with
``np.argpartition`` (linear time), and later chunks only gather the entries
above each query's current k-th best score before a small merge. Memory stays
at ``query_batch x chunk_size`` floats whatever the database size, and no full
sort is ever done. Average query expansion (AQE, Chum et al. 2007) and
database-side augmentation (DBA, Arandjelović & Zisserman 2012) are built in.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ..errors import ConfigError, DataError, MissingFileError, ShapeError, check_choice
from ._postprocess import l2_normalize

__all__ = ["RetrievalIndex"]


def _topk_rows(sim: np.ndarray, k: int):
    """Indices and values of the ``k`` largest entries of each row, sorted descending."""
    n = sim.shape[1]
    if k < n:
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n), (sim.shape[0], n))
    vals = np.take_along_axis(sim, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


class RetrievalIndex:
    """Exact top-k search by cosine similarity or inner product.

    Parameters
    ----------
    metric : {"cosine", "ip"}
        ``"cosine"`` L2-normalises database and queries; ``"ip"`` uses them as given.
    chunk_size : int
        Database rows scored at once.
    query_batch : int
        Queries scored at once.

    Attributes
    ----------
    vectors : numpy.ndarray
        ``(N, D)`` float32 database.
    ids : numpy.ndarray
        ``(N,)`` ids (integers by default, or the strings/ints given to :meth:`add`).

    Examples
    --------
    >>> import numpy as np
    >>> index = RetrievalIndex()
    >>> index.add(np.eye(3, dtype=np.float32), ids=["a", "b", "c"])
    >>> scores, ids = index.search(np.array([[0.9, 0.1, 0.0]]), k=2)
    >>> ids.tolist()
    [['a', 'b']]
    """

    def __init__(self, metric: str = "cosine", *, chunk_size: int = 65536, query_batch: int = 1024):
        check_choice("RetrievalIndex", "metric", metric, ("cosine", "ip"))
        if int(chunk_size) < 1 or int(query_batch) < 1:
            raise ConfigError("RetrievalIndex: 'chunk_size' and 'query_batch' must be >= 1.")
        self.metric = metric
        self.chunk_size = int(chunk_size)
        self.query_batch = int(query_batch)
        self.vectors = np.zeros((0, 0), np.float32)
        self.ids = np.zeros((0,), np.int64)

    def __len__(self) -> int:
        return len(self.vectors)

    def __repr__(self) -> str:
        dim = self.vectors.shape[1] if len(self) else None
        return f"RetrievalIndex(metric={self.metric!r}, size={len(self)}, dim={dim})"

    @property
    def dim(self) -> int | None:
        """Descriptor dimension (``None`` while empty)."""
        return self.vectors.shape[1] if len(self) else None

    def _prepare(self, x, what: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2:
            raise ShapeError(f"RetrievalIndex: {what} must be (N, D). Got shape {x.shape}.")
        if self.dim is not None and x.shape[1] != self.dim:
            raise ShapeError(f"RetrievalIndex: {what} have {x.shape[1]} dimensions, the index {self.dim}.")
        return l2_normalize(x) if self.metric == "cosine" else np.ascontiguousarray(x)

    def add(self, vectors, ids=None) -> None:
        """Append ``(N, D)`` descriptors with their ids (default: running integers)."""
        x = self._prepare(vectors, "vectors")
        if ids is None:
            if len(self) and self.ids.dtype.kind not in "iu":
                raise ConfigError("RetrievalIndex.add: this index has explicit ids; give 'ids' for the new vectors too.")
            ids = np.arange(len(self), len(self) + len(x))
        ids = np.asarray(ids)
        if ids.shape != (len(x),):
            raise ShapeError(f"RetrievalIndex.add: {len(x)} vectors but ids of shape {ids.shape}.")
        if ids.dtype.kind == "O":
            ids = ids.astype(str)
        if len(self):
            self.vectors = np.concatenate([self.vectors, x])
            self.ids = np.concatenate([self.ids, ids])
        else:
            self.vectors, self.ids = x, ids

    def _search_idx(self, q: np.ndarray, k: int):
        """Top-k database row indices and scores for prepared queries.

        The first block of the database is reduced with ``argpartition``; after
        that each row's current k-th best score is a threshold, and only the
        (few) entries above it are gathered and merged — a comparison instead
        of a selection for most of the database.
        """
        n = len(self)
        first = min(n, max(8 * k, min(8192, self.chunk_size)))
        bounds = [0] + list(range(first, n, self.chunk_size)) + [n]
        best_i = best_s = None
        for start, stop in zip(bounds[:-1], bounds[1:]):
            sim = q @ self.vectors[start:stop].T
            if best_i is not None and best_i.shape[1] >= k:
                mask = sim > best_s[:, -1:]
                counts = mask.sum(axis=1)
                width = int(counts.max())
                if width == 0:
                    continue
                if width <= sim.shape[1] // 4:
                    rows, cols = np.nonzero(mask)
                    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
                    cand_s = np.full((len(q), width), -np.inf, np.float32)
                    cand_i = np.zeros((len(q), width), np.int64)
                    cand_s[rows, slot] = sim[rows, cols]
                    cand_i[rows, slot] = cols + start
                    best_i, best_s = self._merge(best_i, best_s, cand_i, cand_s, k)
                    continue
            idx, val = _topk_rows(sim, min(k, sim.shape[1]))
            if best_i is None:
                best_i, best_s = idx + start, val
            else:
                best_i, best_s = self._merge(best_i, best_s, idx + start, val, k)
        return best_i, best_s

    @staticmethod
    def _merge(best_i, best_s, idx, val, k):
        idx, val = np.concatenate([best_i, idx], 1), np.concatenate([best_s, val], 1)
        sel, val = _topk_rows(val, min(k, val.shape[1]))
        return np.take_along_axis(idx, sel, axis=1), val

    def search(self, queries, k: int = 10, *, aqe: int = 0, return_indices: bool = False):
        """The ``k`` most similar database items of each query.

        Parameters
        ----------
        queries : numpy.ndarray
            ``(Q, D)`` (or ``(D,)``) query descriptors.
        k : int
            Results per query (at most the database size).
        aqe : int
            Average query expansion: when > 0, each query is replaced by the
            normalised mean of itself and its ``aqe`` top results, then searched again.
        return_indices : bool
            Return database row numbers instead of ids.

        Returns
        -------
        scores : numpy.ndarray
            ``(Q, k)`` similarities, descending.
        ids : numpy.ndarray
            ``(Q, k)`` ids (or row numbers).
        """
        if not len(self):
            raise ConfigError("RetrievalIndex.search: the index is empty; add() descriptors first.")
        if int(k) < 1:
            raise ConfigError(f"The 'k' parameter of RetrievalIndex.search must be >= 1. Got {k!r} instead.")
        if int(aqe) < 0:
            raise ConfigError(f"The 'aqe' parameter of RetrievalIndex.search must be >= 0. Got {aqe!r} instead.")
        k = min(int(k), len(self))
        q_all = self._prepare(queries, "queries")
        out_i = np.empty((len(q_all), k), np.int64)
        out_s = np.empty((len(q_all), k), np.float32)
        for start in range(0, len(q_all), self.query_batch):
            q = q_all[start:start + self.query_batch]
            if aqe:
                first, _ = self._search_idx(q, min(int(aqe), len(self)))
                q = self._expand(q, first)
            idx, val = self._search_idx(q, k)
            out_i[start:start + len(q)], out_s[start:start + len(q)] = idx, val
        return out_s, (out_i if return_indices else self.ids[out_i])

    def _expand(self, q: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
        expanded = q + self.vectors[neighbours].sum(axis=1)
        expanded /= neighbours.shape[1] + 1
        return l2_normalize(expanded) if self.metric == "cosine" else expanded

    def rank(self, queries, *, aqe: int = 0) -> np.ndarray:
        """Full ranking ``(Q, N)`` of database row numbers, most similar first."""
        _, idx = self.search(queries, len(self), aqe=aqe, return_indices=True)
        return idx

    def augment(self, k: int = 2) -> "RetrievalIndex":
        """Database-side augmentation: replace each vector by the mean of itself and
        its ``k`` nearest neighbours (then re-normalise). Returns ``self``.

        Examples
        --------
        >>> import numpy as np
        >>> index = RetrievalIndex()
        >>> index.add(np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]))
        >>> [round(float(v), 3) for v in index.augment(1).vectors[0]]
        [0.949, 0.316]
        """
        if int(k) < 1:
            raise ConfigError(f"The 'k' parameter of RetrievalIndex.augment must be >= 1. Got {k!r} instead.")
        k = min(int(k) + 1, len(self))
        new = np.empty_like(self.vectors)
        for start in range(0, len(self), self.query_batch):
            q = self.vectors[start:start + self.query_batch]
            idx, _ = self._search_idx(q, k)
            # the item itself is normally its own first neighbour; force it in
            idx[:, 0] = np.arange(start, start + len(q))
            new[start:start + len(q)] = self.vectors[idx].mean(axis=1)
        self.vectors = l2_normalize(new) if self.metric == "cosine" else new
        return self

    # ------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Save to ``path`` (an ``.npz`` file; no pickle)."""
        path = os.fspath(path)
        meta = {"metric": self.metric, "chunk_size": self.chunk_size, "query_batch": self.query_batch}
        with open(path, "wb") as f:
            np.savez(f, vectors=self.vectors, ids=self.ids, meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path) -> "RetrievalIndex":
        """Load what :meth:`save` wrote."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise MissingFileError(f"Index file {path!r} does not exist.")
        try:
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                obj = cls(meta["metric"], chunk_size=meta["chunk_size"], query_batch=meta["query_batch"])
                obj.vectors, obj.ids = f["vectors"], f["ids"]
        except (KeyError, ValueError, OSError) as exc:
            raise DataError(f"{path!r} is not a RetrievalIndex file: {exc}") from None
        return obj
