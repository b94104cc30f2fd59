"""Search throughput of RetrievalIndex on 100,000 x 512 float32 descriptors.

Compared with a straightforward numpy baseline (similarity matrix, full
``argsort`` of every row) and, when it is installed, with faiss-cpu's exact
flat inner-product index (``IndexFlatIP``). All three return the same exact
top-k; the script checks that they agree.

``--tiny`` is a smoke test: 2,000 x 64, 50 queries, top-10.

Run::

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/retrieval.py [--n 100000] [--queries 1000] [--tiny]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from finetune.features import RetrievalIndex, l2_normalize


def baseline(db: np.ndarray, q: np.ndarray, k: int, batch: int = 256):
    """Full sort of every similarity row (what one writes first)."""
    out = np.empty((len(q), k), np.int64)
    for s in range(0, len(q), batch):
        sim = q[s:s + batch] @ db.T
        out[s:s + batch] = np.argsort(-sim, axis=1)[:, :k]
    return out


def timed(fn, repeat: int = 2):
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def run(argv=None) -> list:
    """``(measure, value, ratio, baseline, target)`` rows; the report is printed on the way."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--tiny", action="store_true", help="smoke test: 2,000 x 64, 50 queries, top-10")
    args = ap.parse_args(argv)
    if args.tiny:
        args.n, args.dim, args.queries, args.k = 2000, 64, 50, 10

    rng = np.random.default_rng(0)
    db = l2_normalize(rng.normal(size=(args.n, args.dim)).astype(np.float32))
    q = l2_normalize(rng.normal(size=(args.queries, args.dim)).astype(np.float32))
    print(f"database {args.n} x {args.dim} float32, {args.queries} queries, top-{args.k}")

    index = RetrievalIndex("ip", chunk_size=32768, query_batch=256)
    index.add(db)
    t_ours, (_, ours) = timed(lambda: index.search(q, args.k, return_indices=True))
    t_base, base = timed(lambda: baseline(db, q, args.k), repeat=1)
    rows = [("numpy full sort (baseline)", t_base), ("finetune RetrievalIndex", t_ours)]
    agree = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(ours, base)])
    print(f"top-{args.k} overlap with the baseline: {100 * agree:.2f} %")

    try:
        import faiss  # noqa: F401
    except ImportError:
        faiss = None
        print('faiss-cpu: not installed (pip install faiss-cpu==1.7.4) -- skipped')
    if faiss is not None:
        fidx = faiss.IndexFlatIP(args.dim)
        fidx.add(db)
        t_faiss, (_, fi) = timed(lambda: fidx.search(q, args.k))
        rows.append(("faiss IndexFlatIP", t_faiss))

    print(f"{'method':32s} {'seconds':>9s} {'queries/s':>10s} {'vs baseline':>12s}")
    for name, t in rows:
        print(f"{name:32s} {t:9.3f} {args.queries / t:10.1f} {t_base / t:11.2f}x")
    peak = index.query_batch * index.chunk_size * 4 / 2 ** 20
    print(f"RetrievalIndex working memory per step: {peak:.0f} MiB "
          f"(query_batch {index.query_batch} x chunk {index.chunk_size} float32)")
    label = f"{args.n}x{args.dim} top-{args.k}"
    return [(f"{label} {name} queries/s", args.queries / t, t_base / t, "numpy full sort", "")
            for name, t in rows[1:]]


def ratio_rows(argv=None) -> list:
    """``(measure, value, ratio, baseline, target)`` rows for ``run_all.py``."""
    return run(argv)


def main(argv=None) -> None:
    run(argv)


if __name__ == "__main__":
    main()
