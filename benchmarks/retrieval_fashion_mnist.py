"""Class-level retrieval on Fashion-MNIST: which layer and pooling, and what fine-tuning gains.

The analogue of the classic retrieval experiment (fc6 45.9 % -> 60.2 % mAP on Oxford
after fine-tuning) on the real data set we have here:

* queries: 1,000 official test images (100 per class);
* database: 4,000 *other* test images (400 per class) — a query is never in
  its own database; positives are the database images of the query's class;
* PCA-whitening and MOP codebooks are learned on 1,000 training images
  (100 per class) that are in neither set;
* EfficientNet-Lite0 with its offline ImageNet weights; images (28x28 grey,
  replicated to RGB) resized to ``--size`` px, whole image;
* layers: ``top_relu_fwd`` (last conv map, 1280 x 2 x 2 at the default
  64 px, 3 x 3 at 96 px; after ReLU6) with every pooling, the network's own pooled output
  (``flatten_fwd``) and the logits;
* fine-tuning: a new 10-way head (HeadReplacer) trained with the library's
  Trainer on 5,000 other training images (500 per class, 2 epochs) at 64 px,
  pretrained layers at 0.1x the head's LR, SGD + momentum, cosine schedule.

Extraction and fine-tuning use the same input size by default (64 px): a run
extracting at 96 px from a network fine-tuned at 64 px lost mAP to the
resolution change. ``--tiny`` is a smoke test of the whole script on a few
images per class (its numbers mean nothing). Run (about 10 minutes of CPU on
2 cores)::

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/retrieval_fashion_mnist.py [--tiny]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

CPU0 = time.process_time()
WALL0 = time.time()


def stamp(msg: str) -> None:
    print(f"[{time.time() - WALL0:6.0f}s wall, {time.process_time() - CPU0:6.0f}s cpu] {msg}", flush=True)


def stratified(labels, per_class, rng, exclude=None):
    """``per_class`` indices of each class, seeded, avoiding ``exclude``."""
    taken = set() if exclude is None else set(int(i) for i in exclude)
    out = []
    for c in np.unique(labels):
        idx = [i for i in rng.permutation(np.flatnonzero(labels == c)) if i not in taken]
        out += idx[:per_class]
    return np.array(sorted(out))


def collect(fx, images):
    """Layer outputs of every image: ``{layer: array (N, ...)}`` (one forward pass)."""
    out = {}
    for idx, outs in fx.iter_layer_outputs(images):
        for layer, o in zip(fx.layers, outs):
            arr = o.asnumpy()
            if layer not in out:
                out[layer] = np.zeros((len(images), *arr.shape[1:]), np.float32)
            out[layer][idx] = arr
    return out


def poolings(max_patches: int = 20000):
    from finetune.features import MOP, RMAC, AvgPooling, CroW, GeM, MaxPooling, SumPooling

    return {
        "SUM (SPoC)": SumPooling(), "AVG": AvgPooling(), "MAX (MAC)": MaxPooling(), "GeM p=3": GeM(3.0),
        "CroW": CroW(), "R-MAC L=3": RMAC(3), "R-MAC + MAC": RMAC(3, global_mac=True),
        "MOP (k=16, d=64)": MOP(16, patch_dim=64, max_patches=max_patches),
    }


def describe(maps, pool, batch=500):
    import mxnet as mx

    from finetune.features import MOP, l2_normalize

    if maps.ndim == 2:
        return l2_normalize(maps)
    parts = []
    for s in range(0, len(maps), batch):
        m = maps[s:s + batch]
        parts.append(pool.transform(m) if isinstance(pool, MOP) else pool(mx.nd.array(m)).asnumpy())
    return l2_normalize(np.concatenate(parts))


def evaluate_network(name, model, sets, labels, args, conv, pooled, logits, extra=()):
    """mAP of every layer/pooling, raw and PCA-whitened; returns {row: (raw, pca)}."""
    from finetune.features import MOP, FeatureExtractor, GeM, PCAWhitening, class_retrieval_map

    fx = FeatureExtractor(model, [conv, pooled, *extra, logits], None, resize=args.size, keep_aspect=True,
                          batch_size=64)
    outs = {k: collect(fx, v) for k, v in sets.items()}
    stamp(f"{name}: layer outputs of {sum(len(v) for v in sets.values())} images at {args.size} px")
    rows = {}
    rows_spec = [(f"{conv} {p}", conv, pool) for p, pool in poolings(args.max_patches).items()]
    rows_spec += [(f"{pooled} (pooled output)", pooled, None)]
    rows_spec += [(f"new head: {layer}", layer, None) for layer in extra]
    rows_spec += [("logits", logits, None)]
    for row, layer, pool in rows_spec:
        if isinstance(pool, MOP):
            pool.fit(outs["train"][layer])
        d = {k: describe(outs[k][layer], pool) for k in outs}
        raw = class_retrieval_map(d["queries"], labels["queries"], d["database"], labels["database"])[0]
        dim = min(args.pca, d["train"].shape[1])
        scores = []
        for whiten in (True, False):
            pca = PCAWhitening(dim, whiten=whiten).fit(d["train"])
            scores.append(class_retrieval_map(pca.transform(d["queries"]), labels["queries"],
                                              pca.transform(d["database"]), labels["database"])[0])
        rows[row] = (raw, scores[0], d["train"].shape[1], dim, scores[1])
    # multi-scale GeM through the public API end to end (3 forward passes per image)
    ms = FeatureExtractor(model, conv, GeM(3.0), scales=(1.0, 2 ** -0.5, 0.5), resize=args.size,
                          keep_aspect=True, batch_size=64)
    d = {k: ms.extract(v) for k, v in sets.items()}
    scores = []
    for whiten in (True, False):
        pca = PCAWhitening(args.pca, whiten=whiten).fit(d["train"])
        scores.append(class_retrieval_map(pca.transform(d["queries"]), labels["queries"],
                                          pca.transform(d["database"]), labels["database"])[0])
    rows[f"{conv} GeM p=3, scales 1, 1/√2, 1/2"] = (
        class_retrieval_map(d["queries"], labels["queries"], d["database"], labels["database"])[0],
        scores[0], d["train"].shape[1], args.pca, scores[1])
    # sanity: the extractor's own pooling path equals the offline pooling above
    check = FeatureExtractor(model, conv, "crow", resize=args.size, keep_aspect=True).extract(sets["queries"][:32])
    ref = describe(outs["queries"][conv][:32], poolings()["CroW"])
    stamp(f"{name}: all poolings evaluated (extractor vs offline CroW max diff {np.abs(check - ref).max():.1e})")
    return rows


def fine_tune(backbone, images, labels, args):
    """New 10-way head, trained with the library's Trainer (HeadReplacer + LayerLRPolicy)."""
    import finetune as ft
    from finetune.data import FASHION_MNIST_CLASSES
    from finetune.train import CosineSchedule, LayerLRPolicy, Trainer

    hidden = (args.hidden,) if args.hidden else ()
    model = ft.HeadReplacer(10, hidden=hidden).apply(backbone, class_names=list(FASHION_MNIST_CLASSES))
    model.preprocess = model.preprocess.replace(size=(args.train_size,) * 2, resize=args.train_size)
    x = np.stack([model.preprocess.transform(img) for img in images])
    trainer = Trainer(model, policy=LayerLRPolicy.pretrained(backbone_lr_mult=0.1), optimizer="sgd",
                      optimizer_params={"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4},
                      batch_size=32, schedule=CosineSchedule(warmup_epochs=1), seed=0, progress=False)
    trainer.fit((x, labels), epochs=args.epochs)
    stamp(f"fine-tuned {args.epochs} epochs on {len(x)} images at {args.train_size} px; "
          f"last epoch: {trainer.history_[-1] if trainer.history_ else '?'}")
    model.preprocess = backbone.preprocess
    return model


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="extraction input size")
    ap.add_argument("--train-size", type=int, default=64, help="fine-tuning input size")
    ap.add_argument("--queries", type=int, default=100, help="queries per class")
    ap.add_argument("--database", type=int, default=400, help="database images per class")
    ap.add_argument("--pca-train", type=int, default=100, help="PCA/MOP training images per class")
    ap.add_argument("--finetune", type=int, default=500, help="fine-tuning images per class")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--pca", type=int, default=128)
    ap.add_argument("--save-model", help="save the fine-tuned model directory here")
    ap.add_argument("--hidden", type=int, default=0,
                    help="a hidden layer of this size in the new head (an fc6-like layer to search with)")
    ap.add_argument("--max-patches", type=int, default=20000, help="MOP codebook training patches")
    ap.add_argument("--tiny", action="store_true",
                    help="smoke test: 2 queries, 4 database, 8 PCA and 4 fine-tuning images per class, 1 epoch")
    args = ap.parse_args(argv)
    if args.tiny:
        args.queries, args.database, args.pca_train, args.finetune, args.epochs = 2, 4, 8, 4, 1
        args.pca, args.max_patches = 16, 2000

    import finetune as ft
    from finetune.data import load_fashion_mnist

    rng = np.random.default_rng(0)
    test_x, test_y = load_fashion_mnist("test")
    train_x, train_y = load_fashion_mnist("train")
    q_idx = stratified(test_y, args.queries, rng)
    db_idx = stratified(test_y, args.database, rng, exclude=q_idx)
    pca_idx = stratified(train_y, args.pca_train, rng)
    ft_idx = stratified(train_y, args.finetune, rng, exclude=pca_idx)
    sets = {"queries": test_x[q_idx], "database": test_x[db_idx], "train": train_x[pca_idx]}
    labels = {"queries": test_y[q_idx], "database": test_y[db_idx], "train": train_y[pca_idx]}
    print(f"queries {len(q_idx)} test images; database {len(db_idx)} other test images; "
          f"PCA/MOP set {len(pca_idx)} training images; fine-tuning set {len(ft_idx)} training images")

    backbone = ft.Backbone.from_zoo("efficientnet_lite0")
    names = backbone.layer_names
    conv, pooled, logits = names[names.index("pool_fwd") - 1], "flatten_fwd", names[-1]  # last conv map
    before = evaluate_network("pretrained", backbone, sets, labels, args, conv, pooled, logits)
    model = fine_tune(ft.Backbone.from_zoo("efficientnet_lite0"), train_x[ft_idx], train_y[ft_idx], args)
    if args.save_model:
        model.save(args.save_model)
    new_names = model.layer_names
    extra = [n for n in new_names[new_names.index(pooled) + 1:-1] if n.startswith("head_fc") or
             n.startswith("head_relu")] if args.hidden else []
    after = evaluate_network("fine-tuned", model, sets, labels, args, conv, pooled, new_names[-1], extra)

    print(f"\nFashion-MNIST class-level retrieval mAP (%), EfficientNet-Lite0, {args.size} px, "
          f"{len(q_idx)} queries vs {len(db_idx)} database images")
    head = (f"{'layer / pooling':46s} {'dim':>7s} {'pretrained':>10s} {'+PCAw':>6s} {'+PCA':>6s} "
            f"{'fine-tuned':>10s} {'+PCAw':>6s} {'+PCA':>6s}")
    print(head)
    print("-" * len(head))
    order = list(before) + [r for r in after if r not in before]
    order.sort(key=lambda r: (r.startswith("logits"), r.startswith(f"{conv} GeM p=3, scales")))
    for row in order:
        b, a = before.get(row), after.get(row)
        dims = [str(v[2]) for v in (b, a) if v is not None]
        dim = dims[0] if len(set(dims)) == 1 else "/".join(dims)
        left = (f"{100 * b[0]:10.1f} {100 * b[1]:6.1f} {100 * b[4]:6.1f}" if b else f"{'—':>10s} {'—':>6s} {'—':>6s}")
        right = (f"{100 * a[0]:10.1f} {100 * a[1]:6.1f} {100 * a[4]:6.1f}" if a else f"{'—':>10s} {'—':>6s} {'—':>6s}")
        print(f"{row:46s} {dim:>7s} {left} {right}")
    print(f"(+PCAw: PCA-whitening, +PCA: PCA without whitening, to min({args.pca}, dim) dims, learned on the "
          "separate training images; every descriptor L2-normalised)")
    stamp("done")


if __name__ == "__main__":
    main()
