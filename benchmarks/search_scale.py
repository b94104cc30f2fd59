"""Search at scale: exact ``RetrievalIndex`` vs faiss IVF, IVF-PQ and HNSW behind it.

Baseline: exact search (``RetrievalIndex()``, the default). For each
approximate ``method`` the table gives recall@10 against the exact top 10,
queries/s (median of alternating timings of the same queries) and its ratio
to exact search, build time and index memory (bytes of the serialised faiss
index; for exact search the descriptor matrix).

IVF-PQ appears twice: ``ivfpq`` is the compressed search alone
(``refine=1``); ``ivfpq+rerank`` is the same faiss index saved with
``refine=--refine`` and loaded back, as a deployment would, so that its
``k * refine`` candidates are re-ranked from the descriptors memory-mapped on
disk (the "disk MiB" column; warm page cache after the first round). Its
build time includes the save.

Databases:

- synthetic: ``--n`` vectors of ``--dim`` in 10,000 Gaussian clusters (a
  structureless Gaussian cloud is the worst case for any index and unlike
  real descriptors), queries are perturbed database vectors;
- real: EfficientNet-Lite0 pooled descriptors (1280-d, ImageNet weights, 64 px)
  of ``--real`` Fashion-MNIST training images, queries from the test set.

Run::

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/search_scale.py [--tiny] [--n 1000000 --dim 128]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

NEEDS = ("faiss",)  # the faiss extra; run_all.py skips this benchmark without it

sys.modules.setdefault("torch", None)  # gluoncv 0.10 refuses to import beside torch >= 2

import numpy as np  # noqa: E402

from finetune import RetrievalIndex  # noqa: E402


def synthetic(n: int, dim: int, queries: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10_000, dim)).astype(np.float32)
    db = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        db[s:s + m] = centres[rng.integers(0, len(centres), m)] + 0.3 * rng.normal(size=(m, dim))
    q = db[rng.choice(n, queries, replace=False)] + 0.1 * rng.normal(size=(queries, dim)).astype(np.float32)
    return db, q


def real(n: int, queries: int):
    import mxnet as mx

    import finetune as ft
    from finetune.data import load_fashion_mnist

    bb = ft.Backbone.from_zoo("efficientnet_lite0")
    bb.preprocess = ft.Preprocess.from_dict({**bb.preprocess.to_dict(), "size": [64, 64], "resize": 64})
    bb.hybridize(static_alloc=True)

    def describe(images):
        out = []
        for s in range(0, len(images), 64):
            batch = np.stack([bb.preprocess.transform(np.repeat(im[..., None], 3, 2), "RGB")
                              for im in images[s:s + 64]])
            out.append(bb.features(mx.nd.array(batch), "flatten_fwd")[0].asnumpy())
        return np.concatenate(out).reshape(len(images), -1)

    return describe(load_fashion_mnist("train")[0][:n]), describe(load_fashion_mnist("test")[0][:queries])


def memory(index) -> int:
    """Bytes the index holds: the descriptor matrix for exact search, else faiss's own structure."""
    if index.method == "exact":
        return int(index.vectors.nbytes)
    import faiss

    if index.method in ("ivf", "ivfpq"):  # codes + ids + centroids, counted (serialising copies it all)
        ivf = faiss.extract_index_ivf(index._ann)
        return int(ivf.ntotal * (ivf.code_size + 8) + ivf.nlist * ivf.d * 4)
    return int(faiss.serialize_index(index._ann).size)  # an index built in memory, not a mapped one


def recall(approx, exact) -> float:
    return float(np.mean([len(set(a) & set(e)) / exact.shape[1] for a, e in zip(approx, exact)]))


def disk(index) -> int:
    """Bytes of the descriptors a re-ranking index reads from its memory map."""
    return int(index.vectors.nbytes) if isinstance(index.vectors, np.memmap) else 0


def reranking(index, refine: int, folder: str):
    """The built IVF-PQ ``index`` saved with ``refine`` and loaded back (descriptors memory-mapped),
    with the bytes of its faiss file."""
    path = os.path.join(folder, "ivfpq.npz")
    index.refine = refine
    try:
        index.save(path)
    finally:
        index.refine = 1
    return RetrievalIndex.load(path), os.path.getsize(path + ".faiss")


def bench(label: str, data: list, methods: dict, repeats: int, refine: int) -> list:
    """Build each of ``methods`` ("exact" first) on ``data = [db, queries]`` and :func:`measure` them.

    ``data`` is emptied and the later indexes are filled from the exact
    index's (normalised) copy, so ``db`` itself is freed once that is built:
    at 10 M x 128 each copy is 5 GB.
    """
    db, q = data
    data.clear()
    indexes, build, size = {}, {}, {}
    folder = tempfile.mkdtemp(prefix="search_scale_")
    try:
        for name, kwargs in methods.items():
            t = time.perf_counter()
            index = RetrievalIndex(**kwargs)
            index.add(db)
            index.build()
            if name == "exact":
                db = index.vectors
            build[name] = time.perf_counter() - t
            indexes[name], size[name] = index, memory(index)
            if name == "ivfpq" and refine > 1:
                t = time.perf_counter()
                indexes["ivfpq+rerank"], size["ivfpq+rerank"] = reranking(index, refine, folder)
                build["ivfpq+rerank"] = build[name] + time.perf_counter() - t
        return measure(label, indexes, build, size, q, repeats)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def measure(label: str, indexes: dict, build: dict, size: dict, q, repeats: int) -> list:
    _, truth = indexes["exact"].search(q, k=10, return_indices=True)
    speed = {name: [] for name in indexes}
    found = {}
    for _ in range(repeats):
        for name, index in indexes.items():
            t = time.perf_counter()
            _, found[name] = index.search(q, k=10, return_indices=True)
            speed[name].append(len(q) / (time.perf_counter() - t))
    med = {name: statistics.median(v) for name, v in speed.items()}
    rows = []
    for name, index in indexes.items():
        rows.append((f"{label} {name}", recall(found[name], truth), med[name], med[name] / med["exact"],
                     build[name], size[name] / 2**20, disk(index) / 2**20))
    return rows


def run(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="smoke test: 5,000 x 32 synthetic, no real descriptors")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--real", type=int, default=10_000, help="real descriptors (0: skip)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--nlist", type=int, default=1024, help="IVF cells")
    p.add_argument("--nprobe", type=int, default=32)
    p.add_argument("--ef-search", type=int, default=128)
    p.add_argument("--refine", type=int, default=10,
                   help="IVF-PQ re-ranking factor of the ivfpq+rerank row (1: no such row)")
    p.add_argument("--hnsw-max", type=int, default=10_000_000,
                   help="skip HNSW on databases larger than this (its build is the slowest)")
    p.add_argument("--methods", default="exact,ivf,ivfpq,hnsw",
                   help="comma-separated methods (exact is always run: it is the baseline); every index keeps "
                        "its own copy of the descriptors, so at 10 M x 128 each costs 5 GB of RAM")
    args = p.parse_args(argv)
    if args.tiny:
        args.n, args.dim, args.queries, args.real, args.repeats = 5000, 32, 50, 0, 1
    methods = {
        "exact": {},
        "ivf": {"method": "ivf", "nlist": args.nlist, "nprobe": args.nprobe},
        "ivfpq": {"method": "ivfpq", "nlist": args.nlist, "nprobe": args.nprobe, "refine": 1},
        "hnsw": {"method": "hnsw", "ef_search": args.ef_search},
    }
    unknown = set(args.methods.split(",")) - set(methods)
    if unknown:
        p.error(f"unknown method(s) {', '.join(sorted(unknown))}; choose from {', '.join(methods)}")
    methods = {k: v for k, v in methods.items() if k == "exact" or k in args.methods.split(",")}
    if args.tiny:
        for k in ("ivf", "ivfpq"):
            if k in methods:
                methods[k]["nlist"] = 64

    def chosen(n):
        return {k: v for k, v in methods.items() if k != "hnsw" or n <= args.hnsw_max}

    rows = bench(f"synthetic {args.n}x{args.dim}", list(synthetic(args.n, args.dim, args.queries)), chosen(args.n),
                 args.repeats, args.refine)
    if args.real:
        db, q = real(args.real, args.queries)
        label, real_methods = f"lite0 {len(db)}x{db.shape[1]}", chosen(len(db))
        for k in ("ivf", "ivfpq"):
            if k in real_methods:
                real_methods[k] = dict(real_methods[k], nlist=None, pq_m=64 if k == "ivfpq" else None)
        rows += bench(label, [db, q], real_methods, args.repeats, args.refine)
    return rows


def ratio_rows(argv=None) -> list:
    """``(measure, value, ratio, baseline, target)`` rows for ``run_all.py``."""
    return [(f"{name} queries/s (recall@10 {rec:.3f}, {mib:.1f} MiB" + (f" + {on_disk:.1f} on disk)" if on_disk
                                                                        else ")"),
             qps, ratio, "exact RetrievalIndex", "" if name.endswith("exact") else "recall >= 0.95 at >= 10x")
            for name, rec, qps, ratio, build, mib, on_disk in run(argv)]


def main(argv=None) -> None:
    rows = run(argv)
    print(f"{'database / method':<38} {'recall@10':>9} {'queries/s':>10} {'vs exact':>8} {'build s':>8} {'MiB':>8} "
          f"{'disk MiB':>8}")
    for name, rec, qps, ratio, build, mib, on_disk in rows:
        print(f"{name:<38} {rec:9.3f} {qps:10.0f} {ratio:8.2f} {build:8.1f} {mib:8.1f} {on_disk:8.1f}")


if __name__ == "__main__":
    main()
