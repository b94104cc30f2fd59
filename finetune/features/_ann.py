"""Approximate nearest-neighbour search for :class:`RetrievalIndex` through faiss.

Exact search scans every descriptor; past a few million descriptors that is
too slow or does not fit in memory. faiss (the optional ``faiss`` extra,
``pip install faiss-cpu==1.7.4``) provides the structures that avoid the
scan, and this module only chooses and builds them:

``"ivf"``    inverted file: k-means cells, each query scans ``nprobe`` cells
             (vectors stored exactly);
``"ivfpq"``  the same cells with product-quantised vectors (``pq_m`` codes of
             8 bits each, 4 bits below 10k vectors; a 4-16x smaller index);
``"hnsw"``   a navigable small-world graph (``hnsw_m`` links per vector;
             fast and accurate, the most memory).

All use inner product; with ``metric="cosine"`` the vectors are normalised
first, as for exact search. A saved index file is read back memory-mapped
(``faiss.IO_FLAG_MMAP``) where the structure allows (IVF lists), so a large
database is paged in from disk on demand instead of read whole.

Re-ranking (``refine``, IVF-PQ only): product-quantised scores are too coarse
to order near neighbours (recall@10 0.27 at 1M x 128 with 32 bytes a vector),
so the index is asked for ``k * refine`` candidates and :func:`rerank` scores
them exactly against the original descriptors. Those are gathered row by row
from the descriptor matrix, which a loaded index keeps memory-mapped on disk:
only the candidates' rows are read. faiss's ``IndexRefineFlat`` does the same
but holds a full float copy of every vector in RAM (and in its file), which
would undo what the compression saves; hence this design.
"""

from __future__ import annotations

import math
import numbers
import os

import numpy as np

from .._arrays import read_npy
from ..errors import ConfigError, DataError, MissingExtraError, MissingFileError

METHODS = ("exact", "ivf", "ivfpq", "hnsw")
REFINE = 10  # default re-ranking factor of "ivfpq": k * 10 candidates are scored exactly


def import_faiss():
    """The ``faiss`` module, or a :class:`MissingExtraError` naming the extra."""
    try:
        import faiss
    except ImportError:
        raise MissingExtraError(
            "Approximate search needs faiss, which is not installed. "
            'Install it: pip install faiss-cpu==1.7.4 (or use method="exact").'
        ) from None
    return faiss


def default_nlist(n: int) -> int:
    """Number of IVF cells for ``n`` vectors: about ``4 sqrt(n)``, at most ``n // 39``."""
    return int(max(1, min(4 * math.sqrt(max(n, 1)), n // 39 if n >= 39 else 1)))


def default_pq_m(dim: int) -> int:
    """IVF-PQ codes per vector: the largest divisor of ``dim`` up to ``dim // 4`` (at least 1)."""
    return next(m for m in range(max(1, dim // 4), 0, -1) if dim % m == 0)


def _bits(n: int) -> int:
    """Bits per IVF-PQ code: 8 when each of the 256 centroids gets 39 training points, else 4."""
    return 8 if n >= 39 * 256 else 4


def check_params(method: str, n: int, dim: int, *, nlist=None, pq_m=None) -> None:
    """Refuse settings that ``n`` descriptors of dimension ``dim`` cannot train, before faiss sees them.

    Raises
    ------
    ConfigError
        No descriptors; more IVF cells than descriptors; IVF-PQ with fewer
        descriptors than the 16 (or 256) codes of a sub-quantiser, or a
        ``pq_m`` that does not divide the dimension.

    Examples
    --------
    >>> check_params("ivf", 40, 8, nlist=100)
    Traceback (most recent call last):
    ...
    finetune.errors.ConfigError: nlist=100 (--nlist 100) needs at least 100 descriptors, one per IVF cell, got 40. \
Give a smaller nlist (None chooses 1 for 40) or index more descriptors.
    """
    if n < 1 or dim < 1:
        raise ConfigError(f"Cannot build a {method!r} index of {n} descriptors of dimension {dim}: it needs at "
                          "least one descriptor with at least one dimension.")
    if method not in ("ivf", "ivfpq"):
        return
    cells = int(nlist) if nlist else default_nlist(n)
    if cells > n:
        raise ConfigError(f"nlist={cells} (--nlist {cells}) needs at least {cells} descriptors, one per IVF cell, "
                          f"got {n}. Give a smaller nlist (None chooses {default_nlist(n)} for {n}) or index more "
                          "descriptors.")
    if method == "ivfpq":
        m = int(pq_m) if pq_m else default_pq_m(dim)
        if dim % m:
            raise ConfigError(f"The 'pq_m' parameter of RetrievalIndex (--pq-m) must divide the dimension {dim}. "
                              f"Got {m} instead.")
        codes = 2 ** _bits(n)
        if n < codes:
            raise ConfigError(f"method='ivfpq' needs at least {codes} descriptors to train the {codes} codes of its "
                              f"product quantiser, got {n}. Use method='exact', 'ivf' or 'hnsw' for so few.")


def factory_string(method: str, dim: int, n: int, *, nlist=None, pq_m=None, hnsw_m: int = 32) -> str:
    """The faiss ``index_factory`` description of a method for ``n`` vectors of ``dim``."""
    if method == "hnsw":
        return f"HNSW{int(hnsw_m)},Flat"
    cells = int(nlist) if nlist else default_nlist(n)
    if method == "ivf":
        return f"IVF{cells},Flat"
    m = int(pq_m) if pq_m else default_pq_m(dim)
    if dim % m:
        raise ConfigError(f"The 'pq_m' parameter of RetrievalIndex must divide the dimension {dim}. Got {m} instead.")
    bits = _bits(n)  # k-means of each sub-quantiser wants 39 points per centroid
    return f"IVF{cells},PQ{m}x{bits}"


def build(method: str, vectors: np.ndarray, *, nlist=None, pq_m=None, hnsw_m: int = 32, seed: int = 0):
    """Train (where needed) and fill a faiss index with ``vectors`` (inner product)."""
    faiss = import_faiss()
    n, dim = vectors.shape
    check_params(method, n, dim, nlist=nlist, pq_m=pq_m)
    desc = factory_string(method, dim, n, nlist=nlist, pq_m=pq_m, hnsw_m=hnsw_m)
    index = faiss.index_factory(dim, desc, faiss.METRIC_INNER_PRODUCT)
    if method in ("ivf", "ivfpq"):
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = seed
        ivf.cp.max_points_per_centroid = 256  # k-means on a sample: 256 points per cell
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    return index


def set_search_params(index, method: str, *, nprobe: int, ef_search: int) -> None:
    faiss = import_faiss()
    if method in ("ivf", "ivfpq"):
        faiss.extract_index_ivf(index).nprobe = int(nprobe)
    elif method == "hnsw":
        index.hnsw.efSearch = int(ef_search)


def refine_factor(method: str, refine) -> int:
    """Candidates fetched per result: ``refine``, or by default :data:`REFINE` for IVF-PQ and 1 otherwise.

    Raises :class:`ConfigError` for ``refine < 1``, or ``refine > 1`` with a
    method whose scores are exact already (nothing to re-rank).
    """
    if refine is None:
        return REFINE if method == "ivfpq" else 1
    if isinstance(refine, bool) or not isinstance(refine, numbers.Integral) or refine < 1:
        raise ConfigError(f"The 'refine' parameter of RetrievalIndex must be an integer >= 1 (1: no re-ranking). "
                          f"Got {refine!r} instead.")
    if refine > 1 and method != "ivfpq":
        raise ConfigError(f"The 'refine' parameter of RetrievalIndex re-ranks compressed scores, so it applies to "
                          f"method='ivfpq' only; method={method!r} scores exactly already. Got refine={refine!r}; "
                          "use refine=1 (or None), or raise nprobe / ef_search for recall.")
    return int(refine)


def rerank(queries: np.ndarray, rows: np.ndarray, vectors, k: int, *, budget: int = 1 << 24):
    """Order candidate rows by their exact inner product with each query; keep the top ``k``.

    Parameters
    ----------
    queries : numpy.ndarray
        ``(Q, D)`` float32 queries (normalised already for cosine).
    rows : numpy.ndarray
        ``(Q, C)`` candidate row numbers into ``vectors``; ``-1`` marks none.
    vectors : numpy.ndarray or numpy.memmap
        ``(N, D)`` descriptors. Only the candidates' rows are read, in
        ascending order, so a memory-mapped matrix is paged in sparsely.
    k : int
        Results per query (at most ``C``).
    budget : int
        Floats of gathered candidates held at once (bounds the memory).

    Returns
    -------
    rows, scores : numpy.ndarray
        ``(Q, k)`` row numbers and exact scores, descending; missing places
        are ``-1`` with score ``-inf``.

    Examples
    --------
    >>> import numpy as np
    >>> vectors = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], np.float32)
    >>> rows, scores = rerank(np.array([[0.0, 1.0]], np.float32), np.array([[0, 1, 2, -1]]), vectors, 2)
    >>> rows.tolist(), [[round(float(s), 2) for s in row] for row in scores]
    ([[2, 1]], [[1.0, 0.8]])
    """
    n_q, n_c = rows.shape
    k = min(int(k), n_c)
    out_i = np.full((n_q, k), -1, np.int64)
    out_s = np.full((n_q, k), -np.inf, np.float32)
    step = max(1, budget // max(1, n_c * vectors.shape[1]))
    for start in range(0, n_q, step):
        r = rows[start:start + step]
        valid = r >= 0
        unique, where = np.unique(r[valid], return_inverse=True)
        gathered = np.asarray(vectors[unique], dtype=np.float32)  # one sorted gather
        slots = np.zeros(r.shape, np.int64)
        slots[valid] = where
        q = np.asarray(queries[start:start + step], np.float32)
        sim = (gathered[slots] @ q[:, :, None])[:, :, 0]
        sim[~valid] = -np.inf
        order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        out_s[start:start + len(r)] = np.take_along_axis(sim, order, axis=1)
        out_i[start:start + len(r)] = np.take_along_axis(r, order, axis=1)
    out_i[out_s == -np.inf] = -1
    return out_i, out_s


def write(index, path: str) -> None:
    import_faiss().write_index(index, path)


def read(path: str, *, mmap: bool = True):
    """Read an index file, memory-mapped where faiss supports it for the structure."""
    faiss = import_faiss()
    if mmap:
        try:
            return faiss.read_index(path, faiss.IO_FLAG_MMAP)
        except RuntimeError:  # structures without mmap support (e.g. HNSW) are read whole
            pass
    try:
        return faiss.read_index(path)
    except RuntimeError as exc:  # faiss reports a truncated or foreign file as a RuntimeError
        detail = str(exc).strip().splitlines()
        raise DataError(f"{path!r} is not a readable faiss index: {detail[0] if detail else exc}") from None


def read_vectors(path: str, shape: tuple, *, mmap: bool = True) -> np.ndarray:
    """The ``(N, D)`` float32 descriptors saved beside an index for re-ranking (memory-mapped with ``mmap``)."""
    if not os.path.exists(path):
        raise MissingFileError(f"The descriptor file {path!r} of an index that re-ranks (refine > 1) is missing.")
    vectors = read_npy(path, what="descriptors", kinds="f", ndim=2, mmap=mmap)
    if vectors.shape != tuple(shape) or vectors.dtype != np.float32:
        raise DataError(f"{path!r} holds {vectors.dtype} descriptors of shape {vectors.shape}; the index has "
                        f"{shape[0]} of dimension {shape[1]} (float32).")
    return vectors
