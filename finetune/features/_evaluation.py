"""Average precision and mean average precision for image retrieval.

The AP here is the **trapezoidal** AP of the Oxford Buildings ``compute_ap.cpp``
(Philbin et al.), also used by the revisited Oxford/Paris evaluation
(Radenović et al. 2018): junk images are removed from the ranked list, then
precision is averaged between consecutive recall points, starting from
precision 1 at recall 0::

    AP = sum over positives j (0-based) at rank r_j (0-based, junk removed)
         of  (P0_j + P1_j) / 2 / n_positives,
    P0_j = j / r_j   (1 if r_j == 0),      P1_j = (j + 1) / (r_j + 1)

scikit-learn's ``average_precision_score`` is the step (non-interpolated) AP,
which gives different numbers, so the Oxford definition is written here; it is
vectorised over queries so class-level retrieval of thousands of queries stays
fast.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from ..errors import ConfigError, ShapeError

__all__ = [
    "average_precision",
    "class_retrieval_map",
    "mean_average_precision",
    "precision_at_k",
    "ranked_ap",
]

log = logging.getLogger(__name__)


def ranked_ap(positions, n_positives: int) -> float:
    """Trapezoidal AP from the 0-based ranks of the retrieved positives (junk removed).

    Parameters
    ----------
    positions : array-like of int
        Ranks (0-based, increasing) at which positives appear in the ranked
        list once junk images have been taken out.
    n_positives : int
        Number of positives in the ground truth (positives that were never
        retrieved count as missed recall).

    Returns
    -------
    float
        The AP in [0, 1]; ``nan`` when ``n_positives`` is 0.

    Examples
    --------
    >>> ranked_ap([0, 2], 2)  # ranked list: + - +
    0.7916666666666666
    """
    pos = np.asarray(positions, dtype=np.float64).ravel()
    if n_positives <= 0:
        return float("nan")
    if pos.size == 0:
        return 0.0
    j = np.arange(pos.size, dtype=np.float64)
    p0 = np.where(pos > 0, j / np.maximum(pos, 1), 1.0)
    p1 = (j + 1) / (pos + 1)
    return float(np.sum((p0 + p1) / 2.0) / n_positives)


def _positions(ranked, positives, junk):
    """0-based ranks of positives once junk is removed (the compute_ap.cpp walk)."""
    ranked = np.asarray(ranked).ravel()
    if ranked.dtype.kind in "iu":
        pos = np.fromiter((int(p) for p in positives), dtype=np.int64, count=len(positives))
        jk = np.fromiter((int(j) for j in junk), dtype=np.int64, count=len(junk))
        kept = ranked[~np.isin(ranked, jk)]
        return np.flatnonzero(np.isin(kept, pos))
    positives, junk = set(map(str, positives)), set(map(str, junk))
    kept = [r for r in map(str, ranked.tolist()) if r not in junk]
    return np.array([i for i, r in enumerate(kept) if r in positives], dtype=np.int64)


def average_precision(ranked, positives, junk=()) -> float:
    """Oxford-protocol AP of one ranked list (``compute_ap.cpp``).

    Parameters
    ----------
    ranked : sequence
        Database ids (names or integers) from most to least similar.
    positives : collection
        Ids that count as correct (Oxford: ``good`` + ``ok``).
    junk : collection
        Ids that are ignored: removed from the list before scoring.

    Returns
    -------
    float
        AP; ``nan`` when there are no positives (such queries are skipped by
        :func:`mean_average_precision`).

    Examples
    --------
    >>> average_precision(["a", "x", "b", "y"], positives={"a", "b"})
    0.7916666666666666
    >>> average_precision(["a", "j", "x", "b"], positives={"a", "b"}, junk={"j"})
    0.7916666666666666
    """
    positives = set(positives)
    junk = set(junk) - positives
    return ranked_ap(_positions(ranked, positives, junk), len(positives))


def precision_at_k(positions, ks=(1, 5, 10)) -> np.ndarray:
    """mP@k of the revisited protocol for one query.

    ``positions`` are 0-based ranks of the retrieved positives with junk
    removed. As in the revisited evaluation code, ``k`` is capped at the rank
    of the last positive (so a query with 3 positives all at the top scores
    1 at every k).

    Examples
    --------
    >>> precision_at_k([0, 1, 4], ks=(1, 5, 10)).tolist()
    [1.0, 0.6, 0.6]
    """
    pos = np.asarray(positions, dtype=np.int64).ravel() + 1
    out = np.zeros(len(ks))
    if pos.size == 0:
        return out
    for i, k in enumerate(ks):
        kq = min(int(pos.max()), int(k))
        out[i] = np.sum(pos <= kq) / kq
    return out


def mean_average_precision(aps) -> float:
    """Mean of per-query APs, skipping queries without positives (``nan``).

    Examples
    --------
    >>> mean_average_precision([1.0, 0.5, float("nan")])
    0.75
    """
    aps = np.asarray(aps, dtype=np.float64)
    valid = ~np.isnan(aps)
    if not valid.any():
        raise ConfigError("mean_average_precision: no query has any positive; mAP is undefined.")
    if not valid.all():
        warnings.warn(f"{int((~valid).sum())} of {aps.size} queries have no positives and are skipped.",
                      stacklevel=2)
    return float(aps[valid].mean())


def _ap_rows(rel: np.ndarray, n_positives: np.ndarray) -> np.ndarray:
    """Vectorised trapezoidal AP of boolean ranked relevance rows ``(Q, N)``."""
    cum = np.cumsum(rel, axis=1, dtype=np.float64)
    r = np.arange(rel.shape[1], dtype=np.float64)[None, :]
    p1 = cum / (r + 1)
    p0 = np.where(r > 0, (cum - 1) / np.maximum(r, 1), 1.0)
    total = np.sum(np.where(rel, (p0 + p1) / 2.0, 0.0), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_positives > 0, total / np.maximum(n_positives, 1), np.nan)


def class_retrieval_map(queries, query_labels, database=None, database_labels=None, *,
                        query_ids=None, database_ids=None, chunk_size: int = 256):
    """Class-level retrieval mAP: positives are database items with the query's label.

    Similarity is the inner product (cosine for L2-normalised descriptors).
    The query itself is never part of its own database: with
    ``database=None`` the queries are searched among each other
    (leave-one-out); with a separate database, items whose id equals the
    query's id are removed when ``query_ids``/``database_ids`` are given.

    Parameters
    ----------
    queries : numpy.ndarray
        ``(Q, D)`` query descriptors.
    query_labels : array-like
        ``(Q,)`` class labels.
    database : numpy.ndarray or None
        ``(N, D)`` database descriptors; ``None`` means the queries themselves.
    database_labels : array-like or None
        ``(N,)`` labels (required with ``database``).
    query_ids, database_ids : array-like or None
        Ids to exclude a query from its own result list.
    chunk_size : int
        Queries scored at once (memory is ``chunk_size x N``).

    Returns
    -------
    mAP : float
    aps : numpy.ndarray
        ``(Q,)`` per-query AP (``nan`` for a query whose class has no other member).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]])
    >>> class_retrieval_map(x, [0, 0, 1, 1])[0]
    1.0
    """
    q = np.asarray(queries, dtype=np.float32)
    ql = np.asarray(query_labels)
    self_search = database is None
    if self_search:
        db, dl = q, ql
        query_ids = database_ids = np.arange(len(q))
    else:
        if database_labels is None:
            raise ConfigError("class_retrieval_map: 'database_labels' is required with 'database'.")
        db, dl = np.asarray(database, dtype=np.float32), np.asarray(database_labels)
    if q.ndim != 2 or db.ndim != 2 or q.shape[1] != db.shape[1]:
        raise ShapeError(f"class_retrieval_map: queries {q.shape} and database {db.shape} must be (Q, D) and (N, D).")
    if len(ql) != len(q) or len(dl) != len(db):
        raise ShapeError(f"class_retrieval_map: one label per query and per database item is needed; got "
                         f"{len(ql)} query labels for {len(q)} queries and {len(dl)} database labels for {len(db)} "
                         "database items.")
    if (query_ids is None) != (database_ids is None):
        raise ConfigError("class_retrieval_map: give both 'query_ids' and 'database_ids' or neither.")
    aps = np.empty(len(q))
    for start in range(0, len(q), chunk_size):
        stop = min(start + chunk_size, len(q))
        sim = q[start:stop] @ db.T
        order = np.argsort(-sim, axis=1, kind="stable")
        rel = dl[order] == ql[start:stop, None]
        keep = np.ones_like(rel)
        if query_ids is not None:
            keep = np.asarray(database_ids)[order] != np.asarray(query_ids)[start:stop, None]
        # drop excluded items: move them to the end as non-relevant, fix counts
        rel &= keep
        idx = np.argsort(~keep, axis=1, kind="stable")
        rel = np.take_along_axis(rel, idx, axis=1)
        aps[start:stop] = _ap_rows(rel, rel.sum(axis=1))
    valid = ~np.isnan(aps)
    if not valid.any():
        raise ConfigError("class_retrieval_map: no query has a positive in the database.")
    return float(aps[valid].mean()), aps
