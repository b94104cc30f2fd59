"""RetrievalIndex against brute-force numpy search; PCA whitening."""

import numpy as np
import pytest

from finetune.errors import ConfigError, DataError, ShapeError
from finetune.features import PCAWhitening, RetrievalIndex, l2_normalize


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(500, 16)).astype(np.float32), rng.normal(size=(23, 16)).astype(np.float32)


def brute(db, q, k, cosine=True):
    if cosine:
        db, q = l2_normalize(db), l2_normalize(q)
    sim = q @ db.T
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sim, order, 1), order


@pytest.mark.parametrize("chunk,qbatch", [(65536, 1024), (37, 5), (1, 1)])
@pytest.mark.parametrize("metric", ["cosine", "ip"])
def test_search_equals_brute_force(data, chunk, qbatch, metric):
    db, q = data
    index = RetrievalIndex(metric, chunk_size=chunk, query_batch=qbatch)
    index.add(db[:200])
    index.add(db[200:])
    scores, ids = index.search(q, k=7)
    ref_s, ref_i = brute(db, q, 7, metric == "cosine")
    assert np.array_equal(ids, ref_i)
    assert np.allclose(scores, ref_s, atol=1e-5)
    assert np.array_equal(index.rank(q), brute(db, q, 500, metric == "cosine")[1])


def test_threshold_path_with_duplicates_and_many_chunks():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(50, 8)).astype(np.float32)
    db = np.concatenate([base, base, base[:10] * 2, rng.normal(size=(300, 8)).astype(np.float32)])
    q = np.concatenate([base[:5], rng.normal(size=(5, 8)).astype(np.float32)])
    for metric in ("cosine", "ip"):
        index = RetrievalIndex(metric, chunk_size=16, query_batch=3)
        index.add(db)
        scores, ids = index.search(q, k=9)
        ref_s, _ = brute(db, q, 9, metric == "cosine")
        assert np.allclose(scores, ref_s, atol=1e-5)
        x = l2_normalize(db) if metric == "cosine" else db
        qq = l2_normalize(q) if metric == "cosine" else q
        assert np.allclose(np.take_along_axis(qq @ x.T, ids, 1), scores, atol=1e-5)


def test_string_ids_and_k_larger_than_database():
    index = RetrievalIndex()
    index.add(np.eye(3, dtype=np.float32), ids=["a", "b", "c"])
    scores, ids = index.search(np.array([0.1, 0.9, 0.0]), k=10)
    assert ids.shape == (1, 3) and ids[0, 0] == "b"
    with pytest.raises(ConfigError, match="explicit ids"):
        index.add(np.eye(3, dtype=np.float32))


def test_aqe_is_mean_of_query_and_top_results(data):
    db, q = data
    index = RetrievalIndex()
    index.add(db)
    _, top = index.search(q, k=3, return_indices=True)
    nq = l2_normalize(q)
    expanded = l2_normalize((nq + l2_normalize(db)[top].sum(1)) / 4)
    ref_s, ref_i = brute(db, expanded, 5)
    scores, ids = index.search(q, k=5, aqe=3)
    assert np.array_equal(ids, ref_i) and np.allclose(scores, ref_s, atol=1e-5)


def test_dba(data):
    db, _ = data
    index = RetrievalIndex(query_batch=64)
    index.add(db)
    x = l2_normalize(db)
    nn = np.argsort(-(x @ x.T), axis=1, kind="stable")[:, :3]
    ref = l2_normalize(x[nn].mean(1))
    assert np.allclose(index.augment(2).vectors, ref, atol=1e-5)


def test_save_load_roundtrip(tmp_path, data):
    db, q = data
    index = RetrievalIndex("ip", chunk_size=100)
    index.add(db, ids=[f"img{i}" for i in range(len(db))])
    index.save(tmp_path / "index.npz")
    again = RetrievalIndex.load(tmp_path / "index.npz")
    assert again.metric == "ip" and again.chunk_size == 100 and len(again) == 500
    assert np.array_equal(again.search(q, 4)[1], index.search(q, 4)[1])
    assert repr(again) == "RetrievalIndex(metric='ip', size=500, dim=16)"
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(DataError):
        RetrievalIndex.load(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        RetrievalIndex.load(tmp_path / "missing.npz")


def test_index_errors(data):
    db, q = data
    index = RetrievalIndex()
    with pytest.raises(ConfigError, match="empty"):
        index.search(q)
    index.add(db)
    with pytest.raises(ShapeError):
        index.search(q[:, :5])
    with pytest.raises(ShapeError):
        index.add(db, ids=[1, 2])
    with pytest.raises(ConfigError):
        index.search(q, k=0)
    with pytest.raises(ConfigError, match="'metric'"):
        RetrievalIndex("l2")


def test_pca_whitening_decorrelates_and_roundtrips(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(400, 10)) @ rng.normal(size=(10, 10))).astype(np.float32)
    pca = PCAWhitening(6, normalize=False).fit(x)
    y = pca.transform(x)
    assert np.allclose(np.cov(y.T), np.eye(6), atol=1e-3)
    normed = PCAWhitening(6).fit(x)
    assert np.allclose(np.linalg.norm(normed.transform(x), axis=1), 1, atol=1e-5)
    normed.save(tmp_path / "pca.npz")
    again = PCAWhitening.load(tmp_path / "pca.npz")
    assert np.allclose(again.transform(x), normed.transform(x), atol=1e-6)
    assert repr(PCAWhitening(6, whiten=False)) == "PCAWhitening(6, whiten=False)"
    with pytest.raises(ConfigError, match="not fitted"):
        PCAWhitening(4).transform(x)
    with pytest.raises(ConfigError, match="at most 10"):
        PCAWhitening(20).fit(x)


@pytest.mark.parametrize("bad", [[[1.0, float("nan")], [1.0, 2.0]], [[float("inf"), 0.0]]])
def test_non_finite_descriptors_are_refused_when_added_or_searched(bad):
    index = RetrievalIndex()
    with pytest.raises(DataError, match="NaN or infinite"):
        index.add(np.array(bad))
    index.add(np.eye(2))
    with pytest.raises(DataError, match="NaN or infinite"):
        index.search(np.array(bad), k=1)
