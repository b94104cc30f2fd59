"""Nearest-neighbour search over descriptors, with query expansion.

:class:`RetrievalIndex` holds the descriptors and their ids and searches them
by cosine similarity or inner product. Exact search is the default: a chunked
scan that never sorts the whole database (:mod:`finetune.features._exact`).
For databases that outgrow a scan, ``method`` selects an approximate faiss
structure (IVF, IVF-PQ, HNSW; the optional ``faiss`` extra), see
:mod:`finetune.features._ann`. Average query expansion (AQE, Chum et al. 2007)
and database-side augmentation (DBA, Arandjelović & Zisserman 2012) are built
in, and the index saves to (and loads from) an ``.npz`` file.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .._arrays import write_npz
from .._file_writes import atomic_paths, settled
from ..errors import ConfigError, DataError, MissingFileError, ShapeError, check_choice, check_range
from . import _ann, _exact
from ._descriptors import check_file_name
from ._index_io import read_index_file
from ._postprocess import l2_normalize, warn_zero_rows

__all__ = ["RetrievalIndex"]


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
    method : {"exact", "ivf", "ivfpq", "hnsw"}
        ``"exact"`` scans every descriptor (the default, and the fastest up
        to a few million). The others are approximate faiss indexes, built
        at the first search after :meth:`add` (or by :meth:`build`); they
        need the ``faiss`` extra (``pip install faiss-cpu==1.7.4``).
    nlist : int or None
        IVF cells (``None``: about ``4 sqrt(N)``).
    nprobe : int
        IVF cells scanned per query (more: better recall, slower).
    pq_m : int or None
        IVF-PQ codes per vector; must divide the dimension (``None``: the largest divisor up to ``D // 4``).
    hnsw_m : int
        HNSW links per vector.
    ef_search : int
        HNSW candidate list length per query (more: better recall, slower).
    refine : int or None
        IVF-PQ re-ranking: the faiss index returns ``k * refine``
        candidates, which are then ordered by their exact inner product
        with the query, computed from the original descriptors (``1``: the
        compressed scores as they are). ``None``: 10 for ``"ivfpq"``, 1 for
        the other methods, whose scores are exact already. The descriptors
        are saved beside the index and memory-mapped on :meth:`load`, so
        only the candidates' rows are read from disk (faiss's
        ``IndexRefineFlat`` would keep a full copy of them in RAM).

    Raises
    ------
    MissingExtraError
        An approximate ``method`` without faiss installed.
    ConfigError
        A parameter out of range, e.g. ``refine < 1``, or ``refine > 1``
        with a method other than ``"ivfpq"``.

    Attributes
    ----------
    vectors : numpy.ndarray
        ``(N, D)`` float32 database (a read-only ``numpy.memmap`` when
        loaded from a re-ranking IVF-PQ file; empty when loaded from a file
        that holds only a faiss index).
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

    def __init__(self, metric: str = "cosine", *, chunk_size: int = 65536, query_batch: int = 1024,
                 method: str = "exact", nlist: int | None = None, nprobe: int = 16, pq_m: int | None = None,
                 hnsw_m: int = 32, ef_search: int = 64, refine: int | None = None):
        check_choice("RetrievalIndex", "metric", metric, ("cosine", "ip"))
        check_choice("RetrievalIndex", "method", method, _ann.METHODS)
        for name, value in (("chunk_size", chunk_size), ("query_batch", query_batch), ("nprobe", nprobe),
                            ("hnsw_m", hnsw_m), ("ef_search", ef_search),
                            ("nlist", nlist or 1), ("pq_m", pq_m or 1)):
            check_range("RetrievalIndex", name, value, 1)
        _ann.refine_factor(method, refine)  # validates
        if method != "exact":
            _ann.import_faiss()  # fail now, not at the first search
        self.metric = metric
        self.chunk_size = int(chunk_size)
        self.query_batch = int(query_batch)
        self.method = method
        self.nlist, self.nprobe, self.pq_m = nlist, int(nprobe), pq_m
        self.hnsw_m, self.ef_search = int(hnsw_m), int(ef_search)
        self.refine = None if refine is None else int(refine)
        self.vectors = np.zeros((0, 0), np.float32)  # may be memory-mapped after load()
        self.ids = np.zeros((0,), np.int64)
        self._ann = None  # the faiss index, built from self.vectors (or read from a file)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        method = "" if self.method == "exact" else f", method={self.method!r}"
        if self.method == "ivfpq":
            method += f", refine={self._refine()}"
        return f"RetrievalIndex(metric={self.metric!r}{method}, size={len(self)}, dim={self.dim})"

    @property
    def dim(self) -> int | None:
        """Descriptor dimension (``None`` while empty)."""
        if not self._has_vectors:
            return int(self._ann.d)
        return self.vectors.shape[1] if len(self) else None

    @property
    def _has_vectors(self) -> bool:
        """False for an approximate index loaded from a file that holds only the faiss index."""
        return len(self.vectors) == len(self.ids)

    def _refine(self) -> int:
        return _ann.refine_factor(self.method, self.refine)

    def _ann_params(self) -> dict:
        return {"method": self.method, "nlist": self.nlist, "nprobe": self.nprobe, "pq_m": self.pq_m,
                "hnsw_m": self.hnsw_m, "ef_search": self.ef_search, "refine": self.refine}

    def build(self) -> "RetrievalIndex":
        """Build the approximate index now (otherwise done at the first search); returns ``self``."""
        if self.method != "exact" and self._ann is None:
            if not len(self):
                raise ConfigError("RetrievalIndex.build: the index is empty; add() descriptors first.")
            _ann.check_params(self.method, *self.vectors.shape, nlist=self.nlist, pq_m=self.pq_m)
            self._ann = _ann.build(self.method, self.vectors, nlist=self.nlist, pq_m=self.pq_m, hnsw_m=self.hnsw_m)
        return self

    def _need_vectors(self, what: str) -> None:
        if not self._has_vectors:
            raise ConfigError(f"RetrievalIndex.{what} needs the descriptors, and this {self.method!r} index was "
                              "loaded from a file that holds only the faiss index; rebuild it from the vectors.")

    def _prepare(self, x, what: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2:
            raise ShapeError(f"RetrievalIndex: {what} must be (N, D). Got shape {x.shape}.")
        if self.dim is not None and x.shape[1] != self.dim:
            raise ShapeError(f"RetrievalIndex: {what} have {x.shape[1]} dimensions, the index {self.dim}.")
        if x.shape[1] == 0 or not np.isfinite(x).all():
            bad = "have no dimension" if x.shape[1] == 0 else (
                f"hold NaN or infinite values (row {int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])} first)")
            raise DataError(f"RetrievalIndex: the {what} {bad}; they would rank as noise. Extract them again.")
        if not len(x) and what == "queries":
            raise DataError(f"RetrievalIndex: no queries were given (shape {x.shape}); nothing to search for.")
        if self.metric == "cosine":
            warn_zero_rows(x, what)
            return l2_normalize(x)
        return np.ascontiguousarray(x)

    def add(self, vectors, ids=None) -> None:
        """Append ``(N, D)`` descriptors with their ids (default: running integers)."""
        self._need_vectors("add")
        x = self._prepare(vectors, "vectors")
        self._ann = None
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

    def _search_ann(self, q: np.ndarray, k: int):
        """Top-k through the faiss index; rows faiss could not fill are -1 with score -inf.

        With re-ranking, ``k * refine`` candidates are fetched and ordered by
        their exact scores against the (possibly memory-mapped) descriptors.
        """
        self.build()
        _ann.set_search_params(self._ann, self.method, nprobe=self.nprobe, ef_search=self.ef_search)
        q = np.ascontiguousarray(q, np.float32)
        factor = self._refine()
        if factor > 1:
            self._need_vectors("search(refine > 1)")  # before the search, not after it
        scores, rows = self._ann.search(q, min(k * factor, len(self)))
        rows = rows.astype(np.int64)
        if factor > 1:
            return _ann.rerank(q, rows, self.vectors, k)
        scores[rows < 0] = -np.inf
        return rows, scores

    def _search_idx(self, q: np.ndarray, k: int):
        """Top-k database row indices and scores for prepared queries."""
        if self.method != "exact":
            return self._search_ann(q, k)
        return _exact.search(q, self.vectors, k, self.chunk_size)

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
            ``(Q, k)`` ids (or row numbers). An approximate index may find
            fewer than ``k`` items (IVF with a small ``nprobe``): the missing
            places have score ``-inf`` and row ``-1`` (id ``-1``, or ``""``
            for string ids).
        """
        if not len(self):
            raise ConfigError("RetrievalIndex.search: the index is empty; add() descriptors first.")
        check_range("RetrievalIndex.search", "k", k, 1)
        check_range("RetrievalIndex.search", "aqe", aqe, 0)
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
        if return_indices:
            return out_s, out_i
        found = self.ids[np.maximum(out_i, 0)]
        if (out_i < 0).any():
            found[out_i < 0] = "" if found.dtype.kind == "U" else -1
        return out_s, found

    def _expand(self, q: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
        self._need_vectors("search(aqe=...)")
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
        check_range("RetrievalIndex.augment", "k", k, 1)
        self._need_vectors("augment")
        self._ann = None
        k = min(int(k) + 1, len(self))
        new = np.empty(self.vectors.shape, np.float32)
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
        """Save to ``path`` (an ``.npz`` file; no pickle).

        An approximate index writes its ids and settings to ``path`` and the
        faiss index (built now if needed) beside it, to ``path + ".faiss"``;
        the descriptors themselves are not kept (for IVF-PQ that is the point),
        except for re-ranking (IVF-PQ with ``refine > 1``): then they go to
        ``path + ".vectors.npy"``, a plain ``.npy`` that :meth:`load`
        memory-maps. The files are replaced together, as one unit (see
        :func:`finetune._file_writes.atomic_paths`).
        """
        path = check_file_name(path, "The index file")
        if not len(self):
            raise ConfigError(f"RetrievalIndex.save: the index is empty; add() descriptors before saving to {path!r}.")
        meta = {"metric": self.metric, "chunk_size": self.chunk_size, "query_batch": self.query_batch,
                **self._ann_params()}
        vectors = self.vectors
        exact = self.method == "exact"
        paths = [path]
        if not exact:
            self.build()
            vectors = np.zeros((0, 0), np.float32)
            paths.append(path + ".faiss")
            if self._refine() > 1:
                self._need_vectors("save")
                paths.append(path + ".vectors.npy")
        with atomic_paths(paths) as temps:
            if not exact:
                _ann.write(self._ann, temps[1])
            if len(temps) == 3:
                with open(temps[2], "wb") as f:
                    np.save(f, self.vectors)
            with open(temps[0], "wb") as f:
                write_npz(f, vectors=vectors, ids=self.ids, meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path, *, mmap: bool = True) -> "RetrievalIndex":
        """Load what :meth:`save` wrote.

        An approximate index's faiss file is memory-mapped (``mmap=True``)
        where faiss supports it (IVF lists), so a large database is read
        from disk on demand; so are the descriptors kept for re-ranking
        (IVF-PQ with ``refine > 1``). An index saved without its descriptors
        searches, but cannot :meth:`add`, :meth:`augment` or expand queries.
        Files written before re-ranking existed load with ``refine=1``.
        """
        path = os.fspath(path)
        settled([path, path + ".faiss", path + ".vectors.npy"], what="index")  # finish a killed save; one save's parts
        if not os.path.exists(path):
            raise MissingFileError(f"Index file {path!r} does not exist.")
        meta, vectors, ids = read_index_file(path)
        params = {k: meta[k] for k in ("method", "nlist", "nprobe", "pq_m", "hnsw_m", "ef_search") if k in meta}
        params["refine"] = meta.get("refine", 1)  # files from before re-ranking: none
        obj = cls(meta["metric"], chunk_size=meta["chunk_size"], query_batch=meta["query_batch"], **params)
        obj.vectors, obj.ids = vectors, ids
        if obj.method == "exact" and len(obj.ids) != len(obj.vectors):
            raise DataError(f"{path!r} has {len(obj.ids)} ids for {len(obj.vectors)} descriptors; "
                            "the file is damaged. Rebuild the index.")
        if obj.method != "exact":
            if not os.path.exists(path + ".faiss"):
                raise MissingFileError(f"The faiss file {path + '.faiss'!r} of the index {path!r} is missing.")
            obj._ann = _ann.read(path + ".faiss", mmap=mmap)
            if obj._ann.ntotal != len(obj.ids):
                raise DataError(f"{path + '.faiss'!r} holds {obj._ann.ntotal} descriptors but {path!r} has "
                                f"{len(obj.ids)} ids: the files do not belong together. Rebuild the index.")
            if obj._refine() > 1:
                obj.vectors = _ann.read_vectors(path + ".vectors.npy", (len(obj.ids), obj._ann.d), mmap=mmap)
        return obj
