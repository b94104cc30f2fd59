"""Class-level retrieval with the descriptors of a model fine-tuned by the default recipe.

Queries: 1,000 official Fashion-MNIST test images (100 per class, seeded);
database: the other 9,000 test images; positives are the database images of
the query's class. Descriptors are L2-normalised outputs of a layer of the
model (its pooled backbone output and its logits), computed with the model's
own preprocessing; the same layers of the pretrained network (before
fine-tuning) are the baseline.

``--tiny`` is a smoke test of the script: 100 test images at 32 px and, without
``MODEL_DIR``, Lite0 with a new untrained 10-way head in place of a fine-tuned
model (its numbers mean nothing).

Usage::

    OMP_NUM_THREADS=2 python benchmarks/retrieval_recipe.py MODEL_DIR [--tiny] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 2))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import finetune as ft  # noqa: E402
from finetune.data import load_fashion_mnist  # noqa: E402
from transfer_fashion_mnist import machine  # noqa: E402


def split(labels, per_class, seed):
    rng = np.random.RandomState(seed)
    q = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                                for c in np.unique(labels)]))
    return q, np.setdiff1d(np.arange(len(labels)), q)


def scores(model, layers, images, labels, q, d):
    out = {}
    for layer in layers:
        t = time.time()
        fx = ft.FeatureExtractor(model, layer, pooling="avg", keep_aspect=False, batch_size=64)
        desc = fx.extract(images)
        m = ft.class_retrieval_map(desc[q], labels[q], desc[d], labels[d])[0]
        out[layer] = (float(m), time.time() - t)
    return out


def untrained_model(size: int):
    """``--tiny`` without a model: Lite0 (ImageNet weights) with a new, untrained 10-way head at ``size`` px."""
    from finetune.data import FASHION_MNIST_CLASSES

    model = ft.HeadReplacer(10).apply(ft.Backbone.from_zoo("efficientnet_lite0"),
                                      class_names=list(FASHION_MNIST_CLASSES))
    model.preprocess = model.preprocess.replace(size=(size, size), resize=size)
    return model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", help="a model directory (e.g. one written by finetune quickstart)")
    p.add_argument("--queries", type=int, default=100, help="queries per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="use only the first N test images (smoke runs)")
    p.add_argument("--tiny", action="store_true",
                   help="smoke test: 100 test images, 4 queries per class, 32 px; MODEL optional")
    p.add_argument("--json", help="also write the results (mAP and seconds per descriptor, settings, machine) here")
    args = p.parse_args(argv)
    if args.model is None and not args.tiny:
        p.error("MODEL is required (except with --tiny)")
    if args.tiny:
        args.limit, args.queries = min(args.limit or 100, 100), min(args.queries, 4)
    model = ft.load_model(args.model) if args.model else untrained_model(32)
    if args.tiny:
        model.preprocess = model.preprocess.replace(size=(32, 32), resize=32)
    images, labels = load_fashion_mnist("test")
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    images = np.repeat(images[..., None], 3, axis=3)
    q, d = split(labels, min(args.queries, np.bincount(labels).min() // 2), args.seed)
    head = [n for n in model.layer_names if n.startswith("head_")]
    pooled = [n for n in model.layer_names if not n.startswith("head_")][-1]
    layers = [pooled] + head[-1:]
    size = model.preprocess.size[0]
    base = ft.HeadReplacer(len(model.class_names)).apply(ft.Backbone.from_zoo("efficientnet_lite0"),
                                                         class_names=model.class_names)
    base.preprocess = model.preprocess
    print(f"{len(q)} queries vs {len(d)} database images, {size} px")
    print("| descriptor | pretrained mAP | fine-tuned mAP |")
    print("|---|---|---|")
    before = scores(base, [pooled], images, labels, q, d)
    after = scores(model, layers, images, labels, q, d)
    for layer in layers:
        b = f"{before[layer][0]:.3f}" if layer in before else "-"
        print(f"| {layer} | {b} | {after[layer][0]:.3f} |")
    if args.json:
        result = {"script": "benchmarks/retrieval_recipe.py", "date": datetime.date.today().isoformat(),
                  "machine": machine(), "threads": os.environ.get("OMP_NUM_THREADS"),
                  "model": os.path.basename(os.path.normpath(args.model)) if args.model else "untrained head",
                  "queries": len(q), "database": len(d), "input_size": size,
                  "map": {f"pretrained {pooled}": round(before[pooled][0], 4),
                          **{f"fine-tuned {layer}": round(after[layer][0], 4) for layer in layers}},
                  "seconds": {f"pretrained {pooled}": round(before[pooled][1], 1),
                              **{f"fine-tuned {layer}": round(after[layer][1], 1) for layer in layers}}}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return after


if __name__ == "__main__":
    main()
