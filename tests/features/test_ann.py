"""Approximate search (faiss IVF / IVF-PQ / HNSW) behind RetrievalIndex, and the missing-extra error."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from finetune import RetrievalIndex
from finetune.errors import ConfigError, MissingExtraError


@pytest.fixture(scope="module")
def clustered():
    """2,000 vectors in 40 tight clusters (so IVF cells match them) and 50 queries near them."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 32)).astype(np.float32)
    db = centres[rng.integers(0, 40, 2000)] + 0.05 * rng.normal(size=(2000, 32)).astype(np.float32)
    queries = db[rng.choice(2000, 50, replace=False)] + 0.01 * rng.normal(size=(50, 32)).astype(np.float32)
    return db, queries


def recall_at(k, approx, exact) -> float:
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx, exact)]))


def test_missing_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    with pytest.raises(MissingExtraError, match=r'pip install "finetune\[faiss\]"') as info:
        RetrievalIndex(method="hnsw")
    assert isinstance(info.value, ImportError)
    index = RetrievalIndex()  # exact search needs nothing
    index.add(np.eye(3))
    assert index.search(np.eye(3)[:1], k=1)[1].tolist() == [[0]]


def test_unknown_method_and_bad_options():
    with pytest.raises(ConfigError, match="method"):
        RetrievalIndex(method="annoy")
    with pytest.raises(ConfigError, match="nprobe"):
        RetrievalIndex(nprobe=0)


# PQ codes cannot order the near-equal members of one tight cluster (about 50 each), so for
# IVF-PQ the test asks that its top 10 lie among the exact top 50: the query's own cluster.
@pytest.mark.parametrize("method, kwargs, pool, floor", [
    ("ivf", {"nlist": 40, "nprobe": 8}, 10, 0.95),
    ("ivfpq", {"nlist": 40, "nprobe": 8, "pq_m": 8}, 50, 0.85),
    ("hnsw", {"hnsw_m": 16, "ef_search": 64}, 10, 0.95),
])
def test_recall_against_exact(clustered, method, kwargs, pool, floor):
    pytest.importorskip("faiss")
    db, queries = clustered
    exact = RetrievalIndex()
    exact.add(db)
    approx = RetrievalIndex(method=method, **kwargs)
    approx.add(db)
    _, want = exact.search(queries, k=pool)
    scores, got = approx.search(queries, k=10)
    assert got.shape == (50, 10)
    assert np.all(np.diff(scores, axis=1) <= 1e-5)
    assert recall_at(10, got, want) >= floor
    assert "method=" in repr(approx)


@pytest.mark.parametrize("method", ["ivf", "hnsw"])
def test_save_and_memory_mapped_load(clustered, tmp_path, method):
    pytest.importorskip("faiss")
    db, queries = clustered
    index = RetrievalIndex(method=method, nlist=40, nprobe=8)
    index.add(db, ids=[f"img{i}" for i in range(len(db))])
    path = tmp_path / "db.npz"
    index.save(path)
    assert (tmp_path / "db.npz.faiss").is_file()
    again = RetrievalIndex.load(path)
    assert (len(again), again.dim, again.method) == (len(db), 32, method)
    s1, i1 = index.search(queries, k=5)
    s2, i2 = again.search(queries, k=5)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, rtol=1e-5)
    with pytest.raises(ConfigError, match="descriptors"):
        again.add(db[:2], ids=["x", "y"])


def test_add_rebuilds_and_missing_faiss_file(clustered, tmp_path):
    pytest.importorskip("faiss")
    db, _ = clustered
    index = RetrievalIndex(method="hnsw")
    index.add(db[:100])
    assert index.search(db[:1], k=1, return_indices=True)[1].tolist() == [[0]]
    index.add(db[100:200])
    assert index.search(db[150:151], k=1, return_indices=True)[1].tolist() == [[150]]
    index.save(tmp_path / "h.npz")
    (tmp_path / "h.npz.faiss").unlink()
    from finetune.errors import MissingFileError

    with pytest.raises(MissingFileError, match="faiss"):
        RetrievalIndex.load(tmp_path / "h.npz")
