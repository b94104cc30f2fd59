"""Approximate search (faiss IVF / IVF-PQ / HNSW) behind RetrievalIndex, IVF-PQ re-ranking, the missing-extra error."""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest

from finetune import RetrievalIndex
from finetune.errors import ConfigError, DataError, MissingExtraError, MissingFileError
from finetune.features._ann import rerank
from tests.listing import listing


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
    with pytest.raises(MissingExtraError, match=r'pip install faiss-cpu') as info:
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
# IVF-PQ without re-ranking the test asks that its top 10 lie among the exact top 50: the
# query's own cluster.
@pytest.mark.parametrize("method, kwargs, pool, floor", [
    ("ivf", {"nlist": 40, "nprobe": 8}, 10, 0.95),
    ("ivfpq", {"nlist": 40, "nprobe": 8, "pq_m": 8, "refine": 1}, 50, 0.85),
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


# ------------------------------------------------------------------ IVF-PQ re-ranking
PQ = {"method": "ivfpq", "nlist": 40, "nprobe": 8, "pq_m": 8}


@pytest.fixture(scope="module")
def pq_pair(clustered):
    """The same IVF-PQ index with the default re-ranking and with none (``refine=1``)."""
    pytest.importorskip("faiss")
    db, _ = clustered
    pair = RetrievalIndex(**PQ), RetrievalIndex(**PQ, refine=1)
    for index in pair:
        index.add(db)
        index.build()
    return pair


def test_reranking_lifts_ivfpq_recall_to_that_of_exact_search(clustered, pq_pair):
    db, queries = clustered
    exact = RetrievalIndex()
    exact.add(db)
    _, want = exact.search(queries, k=10)
    reranked, plain = pq_pair
    assert "refine=10" in repr(reranked)  # the default for ivfpq
    scores, got = reranked.search(queries, k=10)
    low, high = recall_at(10, plain.search(queries, k=10)[1], want), recall_at(10, got, want)
    assert low < 0.5 and high >= 0.95 and high - low >= 0.5, (low, high)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ reranked.vectors.T, got, axis=1), rtol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_refine_1_is_the_compressed_search_as_before(clustered, pq_pair):
    _, queries = clustered
    plain = pq_pair[1]
    scores, rows = plain.search(queries, k=10, return_indices=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    faiss_scores, faiss_rows = plain._ann.search(np.ascontiguousarray(q, np.float32), 10)
    np.testing.assert_array_equal(rows, faiss_rows)
    np.testing.assert_array_equal(scores, faiss_scores)


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "ivfpq", "refine": 0}, "'refine'.*Got 0 instead"),
    ({"method": "ivfpq", "refine": 2.5}, "'refine'.*Got 2.5"),
    ({"method": "ivfpq", "refine": "10"}, "'refine'.*Got '10'"),
    ({"method": "ivf", "refine": 5}, "method='ivfpq' only"),
    ({"refine": 2}, "method='ivfpq' only"),
])
def test_bad_refine_values_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RetrievalIndex(**kwargs)  # checked before faiss is needed


def test_refine_1_and_none_are_accepted_by_every_method():
    for method in ("exact", "ivf", "hnsw"):
        for refine in (None, 1):
            if method == "exact" or importlib.util.find_spec("faiss"):
                assert RetrievalIndex(method=method, refine=refine)._refine() == 1


def test_rerank_keeps_the_best_candidates_in_bounded_batches():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(30, 4)).astype(np.float32)
    queries = rng.normal(size=(5, 4)).astype(np.float32)
    rows = np.stack([rng.choice(30, 8, replace=False) for _ in range(5)])
    rows[0, 3:] = -1  # faiss found only three candidates for the first query
    got, scores = rerank(queries, rows, vectors, 4)
    small = rerank(queries, rows, vectors, 4, budget=1)  # one query at a time
    np.testing.assert_array_equal(got, small[0])
    for i in range(5):
        cand = rows[i][rows[i] >= 0]
        best = cand[np.argsort(-(vectors[cand] @ queries[i]), kind="stable")][:4]
        assert got[i][got[i] >= 0].tolist() == best.tolist()
    assert got[0, 3] == -1 and scores[0, 3] == -np.inf


def test_a_reranking_index_saves_its_descriptors_and_maps_them_on_load(clustered, pq_pair, tmp_path):
    db, queries = clustered
    index = pq_pair[0]
    path = tmp_path / "pq.npz"
    index.save(path)
    assert listing(tmp_path) == ["pq.npz", "pq.npz.faiss", "pq.npz.vectors.npy"]
    again = RetrievalIndex.load(path)
    assert again.refine is None and again._refine() == 10 and isinstance(again.vectors, np.memmap)
    s1, i1 = index.search(queries, k=10)
    s2, i2 = again.search(queries, k=10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, rtol=1e-6)
    assert not isinstance(RetrievalIndex.load(path, mmap=False).vectors, np.memmap)
    assert again.search(queries, k=5, aqe=2)[1].shape == (50, 5)  # the descriptors allow expansion
    again.add(db[:3])  # ... and adding (the faiss index is rebuilt from them)
    assert len(again) == len(db) + 3 and not isinstance(again.vectors, np.memmap)
    (tmp_path / "pq.npz.vectors.npy").write_bytes(b"not an array")
    with pytest.raises(DataError, match="does not belong"):  # not the file the index was saved with
        RetrievalIndex.load(path)
    (tmp_path / "pq.npz.vectors.npy").unlink()
    with pytest.raises(MissingFileError, match="vectors.npy"):
        RetrievalIndex.load(path)


def test_refine_is_remembered_and_files_from_before_reranking_load_with_none(clustered, pq_pair, tmp_path):
    import json

    index = pq_pair[1]
    index.save(tmp_path / "plain.npz")
    assert listing(tmp_path) == ["plain.npz", "plain.npz.faiss"]  # no descriptors
    assert RetrievalIndex.load(tmp_path / "plain.npz").refine == 1
    with np.load(tmp_path / "plain.npz") as f:
        arrays = dict(f)
    meta = json.loads(str(arrays["meta"]))
    del meta["refine"]
    arrays["meta"] = np.array(json.dumps(meta))
    with open(tmp_path / "plain.npz", "wb") as f:
        np.savez(f, **arrays)
    os.remove(tmp_path / ".plain.npz.finetune")  # files from before re-ranking had no manifest either
    old = RetrievalIndex.load(tmp_path / "plain.npz")
    assert old.refine == 1 and old.search(clustered[1], k=3)[1].shape == (50, 3)
