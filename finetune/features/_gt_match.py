"""Scoring descriptors against a ground truth only once they are known to be its queries and images.

A ranking is scored by matching names: the query descriptors' ids against
the ground truth's query names, the database ids (file stems) against the
images it marks. :func:`query_rows` refuses ids that are not its queries
(rows are taken in order only when there are no ids and the counts match,
and that is said), and :func:`check_database` refuses a database that holds
none of the images the ground truth marks relevant (and warns about those
missing), so a mAP is never computed on mismatched data.
"""

from __future__ import annotations

import collections
import logging
import os

import numpy as np

from ..errors import DataError
from ._oxford import OxfordGroundTruth

__all__ = ["check_database", "evaluate_ground_truth", "positional_rows", "query_rows"]

log = logging.getLogger(__name__)

_EXTRACT = "extract them with 'finetune extract MODEL IMAGES --queries-of GT'"


def _some(names, n: int = 3) -> str:
    names = list(names)
    return ", ".join(repr(s) for s in names[:n]) + (", ..." if len(names) > n else "")


def query_rows(query_ids, names, *, source: str = "the queries") -> list:
    """The row of each ground-truth query among the query descriptors, in ``names`` order.

    Parameters
    ----------
    query_ids : list of str
        The ids of the query rows.
    names : list of str
        The ground truth's query names, in its order.
    source : str
        The query file, for messages.

    Raises
    ------
    DataError
        Ids that repeat, or that are not exactly the ground truth's queries.

    Examples
    --------
    >>> query_rows(["b", "a"], ["a", "b"])
    [1, 0]
    >>> query_rows(["a", "x"], ["a", "b"])
    Traceback (most recent call last):
    ...
    finetune.errors.DataError: The query ids of the queries are not the ground truth's queries: 1 of its 2 queries \
are missing ('b') and 1 id(s) are none of its queries ('x'). Give the query descriptors of this ground truth \
(extract them with 'finetune extract MODEL IMAGES --queries-of GT').
    """
    names = [str(n) for n in names]
    query_ids = [str(q) for q in query_ids]
    repeated = [q for q, c in collections.Counter(query_ids).items() if c > 1]
    if repeated:
        raise DataError(f"The query ids of {source} repeat ({_some(repeated)}): each query must appear once.")
    missing = [n for n in names if n not in set(query_ids)]
    unknown = [q for q in query_ids if q not in set(names)]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of its {len(names)} queries are missing ({_some(missing)})")
        if unknown:
            parts.append(f"{len(unknown)} id(s) are none of its queries ({_some(unknown)})")
        raise DataError(f"The query ids of {source} are not the ground truth's queries: {' and '.join(parts)}. "
                        f"Give the query descriptors of this ground truth ({_EXTRACT}).")
    row = {q: i for i, q in enumerate(query_ids)}
    return [row[n] for n in names]


def positional_rows(n_rows: int, names, *, source: str) -> list:
    """Rows ``0 .. Q-1`` for query descriptors without ids: only when there are as many as queries (said)."""
    if n_rows != len(names):
        raise DataError(f"{source} has {n_rows} query descriptors and no ids file, and the ground truth has "
                        f"{len(names)} queries, so they cannot be matched. Give the query descriptors of this "
                        f"ground truth, with their ids ({_EXTRACT}).")
    log.warning("%s has no ids file: its %d rows are taken as the ground truth's queries in its order (%s).",
                source, n_rows, _some(names))
    return list(range(n_rows))


def check_database(db_names, wanted, *, source: str = "the index") -> None:
    """Refuse a database holding none of the ``wanted`` images; warn about the ones it lacks.

    Parameters
    ----------
    db_names : sequence of str
        The database's image names (id stems).
    wanted : collection of str
        The images the ground truth marks relevant.
    source : str
        The index file, for messages.

    Raises
    ------
    DataError
        None of ``wanted`` is in the database.
    """
    have = set(db_names)
    wanted = sorted(set(wanted))
    missing = [w for w in wanted if w not in have]
    if wanted and len(missing) == len(wanted):
        rows = all(str(n).isdigit() for n in list(db_names)[:50])
        hint = (" Its ids are row numbers: there is no ids file beside the descriptors, so their images are unknown; "
                "extract the database with 'finetune extract', which writes one." if rows else
                f" Its ids are e.g. {_some(db_names)}: the ground truth names images by file name without extension.")
        raise DataError(f"None of the {len(wanted)} images the ground truth marks relevant are in {source} "
                        f"({len(have)} images), so every AP would be 0.{hint}")
    if missing:
        log.warning("%d of the %d images the ground truth marks relevant are not in %s (%s): they can never be "
                    "found, so the mAP is lower than the descriptors deserve.", len(missing), len(wanted), source,
                    _some(missing))


def _stem(name) -> str:
    return os.path.splitext(os.path.basename(str(name)))[0]


def evaluate_ground_truth(gt, index, queries, query_ids=None, *, aqe: int = 0, source: str = "the queries",
                          index_source: str = "the index") -> dict:
    """Rank ``index`` for the ground truth's queries and score it, once the names are checked.

    Parameters
    ----------
    gt : OxfordGroundTruth or RevisitedGroundTruth
    index : RetrievalIndex
        The database; its ids are image paths or names (matched by file stem).
    queries : numpy.ndarray
        ``(Q, D)`` query descriptors.
    query_ids : list of str or None
        Their ids (the ground truth's query names); ``None``: in the ground truth's order.
    aqe : int
        Average query expansion.
    source, index_source : str
        The query and index files, for messages.

    Returns
    -------
    dict
        Oxford: ``{"mAP", "aps"}``; revisited: ``{setup: {"mAP", "mP@k"}}``.
    """
    oxford = isinstance(gt, OxfordGroundTruth)
    names = gt.query_names if oxford else gt.qimlist
    rows = (positional_rows(len(queries), names, source=source) if query_ids is None
            else query_rows(query_ids, names, source=source))
    db_names = [_stem(i) for i in index.ids]
    if oxford:
        check_database(db_names, set().union(*(q.positives for q in gt.queries)), source=index_source)
        ranks = index.rank(np.asarray(queries)[rows], aqe=aqe)
        res = gt.evaluate([[db_names[j] for j in row] for row in ranks])
        return {"mAP": res["mAP"], "aps": res["aps"]}
    pos = {n: i for i, n in enumerate(gt.imlist)}
    strangers = [n for n in db_names if n not in pos]
    if strangers:
        raise DataError(f"{len(strangers)} of the {len(db_names)} images of {index_source} are not in the ground "
                        f"truth's image list ({_some(strangers)}); the revisited protocol scores its own database.")
    check_database(db_names, gt.imlist, source=index_source)
    ranks = index.rank(np.asarray(queries)[rows], aqe=aqe)
    res = gt.evaluate(np.array([pos[n] for n in db_names])[ranks])
    return {k: {"mAP": v["mAP"], "mP@k": v["mP@k"]} for k, v in res.items()}
