"""Approximate nearest-neighbour search for :class:`RetrievalIndex` through faiss.

Exact search scans every descriptor; past a few million descriptors that is
too slow or does not fit in memory. faiss (the optional ``faiss`` extra,
``pip install "finetune[faiss]"``) provides the structures that avoid the
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
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError, MissingExtraError

METHODS = ("exact", "ivf", "ivfpq", "hnsw")


def import_faiss():
    """The ``faiss`` module, or a :class:`MissingExtraError` naming the extra."""
    try:
        import faiss
    except ImportError:
        raise MissingExtraError(
            "Approximate search needs faiss, which is not installed. "
            'Install the extra: pip install "finetune[faiss]" (or use method="exact").'
        ) from None
    return faiss


def default_nlist(n: int) -> int:
    """Number of IVF cells for ``n`` vectors: about ``4 sqrt(n)``, at most ``n // 39``."""
    return int(max(1, min(4 * math.sqrt(max(n, 1)), n // 39 if n >= 39 else 1)))


def factory_string(method: str, dim: int, n: int, *, nlist=None, pq_m=None, hnsw_m: int = 32) -> str:
    """The faiss ``index_factory`` description of a method for ``n`` vectors of ``dim``."""
    if method == "hnsw":
        return f"HNSW{int(hnsw_m)},Flat"
    cells = int(nlist) if nlist else default_nlist(n)
    if method == "ivf":
        return f"IVF{cells},Flat"
    m = int(pq_m) if pq_m else max(1, dim // 4)
    if dim % m:
        raise ConfigError(f"The 'pq_m' parameter of RetrievalIndex must divide the dimension {dim}. Got {m} instead.")
    bits = 8 if n >= 39 * 256 else 4  # k-means of each sub-quantiser wants 39 points per centroid
    return f"IVF{cells},PQ{m}x{bits}"


def build(method: str, vectors: np.ndarray, *, nlist=None, pq_m=None, hnsw_m: int = 32, seed: int = 0):
    """Train (where needed) and fill a faiss index with ``vectors`` (inner product)."""
    faiss = import_faiss()
    n, dim = vectors.shape
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
    return faiss.read_index(path)
