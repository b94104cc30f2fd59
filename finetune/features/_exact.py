"""Exact top-k search for :class:`RetrievalIndex`: a chunked brute-force scan.

Similarities are computed by batched matrix products (BLAS) over chunks of
the database; the top-k of the first chunk is found with ``np.argpartition``
(linear time), and later chunks only gather the entries above each query's
current k-th best score before a small merge. Memory stays at
``len(queries) x chunk_size`` floats whatever the database size (the index
passes ``query_batch`` queries at a time), and no full sort is ever done. The
approximate counterpart is :mod:`finetune.features._ann`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["search", "topk_rows"]


def topk_rows(sim: np.ndarray, k: int):
    """Indices and values of the ``k`` largest entries of each row, sorted descending.

    Examples
    --------
    >>> import numpy as np
    >>> idx, val = topk_rows(np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.7]]), 2)
    >>> idx.tolist(), val.tolist()
    ([[1, 2], [2, 0]], [[0.9, 0.5], [0.7, 0.3]])
    """
    n = sim.shape[1]
    if k < n:
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n), (sim.shape[0], n))
    vals = np.take_along_axis(sim, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def _merge(best_i, best_s, idx, val, k):
    """The top ``k`` of two sets of candidates per row (indices and scores)."""
    idx, val = np.concatenate([best_i, idx], 1), np.concatenate([best_s, val], 1)
    sel, val = topk_rows(val, min(k, val.shape[1]))
    return np.take_along_axis(idx, sel, axis=1), val


def search(queries: np.ndarray, vectors: np.ndarray, k: int, chunk_size: int):
    """Top-k rows of ``vectors`` by inner product with each of ``queries``, and their scores.

    The first block of the database is reduced with ``argpartition``; after
    that each row's current k-th best score is a threshold, and only the
    (few) entries above it are gathered and merged — a comparison instead
    of a selection for most of the database.

    Parameters
    ----------
    queries : numpy.ndarray
        ``(Q, D)`` float32.
    vectors : numpy.ndarray
        ``(N, D)`` float32 database (may be memory-mapped: read a chunk at a time).
    k : int
        Results per query, ``1 <= k <= N``.
    chunk_size : int
        Database rows scored at once.

    Returns
    -------
    rows : numpy.ndarray
        ``(Q, k)`` int64 row numbers of ``vectors``, most similar first.
    scores : numpy.ndarray
        ``(Q, k)`` the matching inner products, descending.

    Examples
    --------
    >>> import numpy as np
    >>> rows, scores = search(np.array([[1.0, 0.0]], np.float32), np.eye(2, dtype=np.float32), 2, chunk_size=1)
    >>> rows.tolist(), scores.tolist()
    ([[0, 1]], [[1.0, 0.0]])
    """
    n = len(vectors)
    first = min(n, max(8 * k, min(8192, chunk_size)))
    bounds = [0] + list(range(first, n, chunk_size)) + [n]
    best_i = best_s = None
    for start, stop in zip(bounds[:-1], bounds[1:]):
        sim = queries @ vectors[start:stop].T
        if best_i is not None and best_i.shape[1] >= k:
            mask = sim > best_s[:, -1:]
            counts = mask.sum(axis=1)
            width = int(counts.max())
            if width == 0:
                continue
            if width <= sim.shape[1] // 4:
                rows, cols = np.nonzero(mask)
                slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
                cand_s = np.full((len(queries), width), -np.inf, np.float32)
                cand_i = np.zeros((len(queries), width), np.int64)
                cand_s[rows, slot] = sim[rows, cols]
                cand_i[rows, slot] = cols + start
                best_i, best_s = _merge(best_i, best_s, cand_i, cand_s, k)
                continue
        idx, val = topk_rows(sim, min(k, sim.shape[1]))
        if best_i is None:
            best_i, best_s = idx + start, val
        else:
            best_i, best_s = _merge(best_i, best_s, idx + start, val, k)
    return best_i, best_s
