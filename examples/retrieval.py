"""Image retrieval — which layer, which pooling, what fine-tuning gains.

The seed extracts VGG16 features from several layers (fc6/fc7 before and after
ReLU, pool5, conv layers), pools convolutional maps (SUM, AVG, MAX, MOP, CroW,
R-MAC), reduces them to 128 dimensions with PCA whitening, L2-normalises, and
scores mAP on Oxford Buildings (fc6: 45.9 %). It then prepares a landmark set
(corrupt images removed, small classes augmented up to 800 images, a seeded
60/40 split), fine-tunes with the new last layer at 10x (weights) / 20x
(biases) learning rate and a step LR policy, and measures again
(fc6: 60.2 %).

Full run (a class-per-folder landmark set; VGG16 ImageNet weights as a local ``.params``)::

    python examples/retrieval.py --data landmarks/ --backbone vgg16 --weights vgg16.params \\
        --size 224 --balance 800 --layers dense0_fwd,dense0_relu_fwd,pool4_fwd --epochs 10

Small mode (the default, a minute or two on 2 CPU cores): Fashion-MNIST, 10
classes made unbalanced (24 down to 6 images) plus one corrupt file, EfficientNet-Lite0
with its offline ImageNet weights at 80 px, PCA whitening to 32 dimensions, class-level
retrieval mAP on the 40 % held-out part (every image queries all others), before and
after fine-tuning.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import pathlib  # noqa: E402

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

import finetune as ft  # noqa: E402
from finetune.features import MOP, l2_normalize  # noqa: E402
from finetune.data import write_fashion_mnist_folder  # noqa: E402

log = logging.getLogger("retrieval")

#: (layer, pooling) pairs compared; fully connected / pooled vectors need no pooling
CONFIGS = {
    "efficientnet_lite0": [("flatten_fwd", None), ("top_bn_fwd", "gem")]
    + [("top_relu_fwd", p) for p in ("sum", "avg", "max", "gem", "crow", "rmac", "mop", "gem+rmac")],
    "vgg16": [("dense0_fwd", None), ("dense0_relu_fwd", None), ("dense1_fwd", None)]
    + [("pool4_fwd", p) for p in ("sum", "avg", "max", "gem", "crow", "rmac", "mop")],
}


def small_data(folder, seed):
    """Fashion-MNIST, unbalanced on purpose (24 images in the first class, 6 in the last), one bad file."""
    classes = write_fashion_mnist_folder(folder, 24, seed=seed).class_names
    for k, name in enumerate(sorted(classes)):
        for f in sorted(os.listdir(os.path.join(folder, name)))[24 - 2 * k:]:
            os.remove(os.path.join(folder, name, f))
    (pathlib.Path(folder) / name / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    return folder


def layer_outputs(net, layers, paths):
    """One forward pass over ``paths``: ``{layer: (N, ...) array}`` for every layer."""
    outputs = {layer: [None] * len(paths) for layer in layers}
    for index, arrays in ft.FeatureExtractor(net, layers, pooling=None).iter_layer_outputs(paths):
        for layer, array in zip(layers, arrays):
            for i, row in zip(index, array.asnumpy()):
                outputs[layer][i] = row
    return {layer: np.stack(rows) for layer, rows in outputs.items()}


def pooled(pooling, train_maps, database_maps):
    """Pool ``(N, C, H, W)`` maps into L2-normalised vectors (``a+b`` concatenates two poolings)."""
    if pooling is None:  # fully connected / already pooled
        return [l2_normalize(m.reshape(len(m), -1)) for m in (train_maps, database_maps)]
    parts = []
    for name in pooling.split("+"):
        pool = ft.get_pooling(name)
        if isinstance(pool, MOP):  # VLAD codebooks are learned on the training images
            parts.append([pool.fit(train_maps).transform(m) for m in (train_maps, database_maps)])
        else:
            parts.append([pool(mx.nd.array(m)).asnumpy() for m in (train_maps, database_maps)])
    return [l2_normalize(np.concatenate([l2_normalize(p[k]) for p in parts], axis=1)) for k in (0, 1)]


def retrieval_maps(net, configs, train_paths, database, labels, dims):
    """Class-level mAP of every (layer, pooling), PCA-whitened to ``dims`` (learned on the training images)."""
    layers = sorted({layer for layer, _ in configs})
    train_out, database_out = layer_outputs(net, layers, train_paths), layer_outputs(net, layers, database)
    maps = {}
    for layer, pooling in configs:
        train_desc, database_desc = pooled(pooling, train_out[layer], database_out[layer])
        pca = ft.PCAWhitening(min(dims, train_desc.shape[1]), whiten=True).fit(train_desc)
        maps[f"{layer}:{pooling or '-'}"] = ft.class_retrieval_map(pca.transform(database_desc), labels)[0]
    return maps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="class-per-folder tree (default: unbalanced Fashion-MNIST sample)")
    p.add_argument("--out", default="runs/retrieval", help="output folder (default: %(default)s)")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--weights", default="imagenet",
                   help="'imagenet' (the default of create_model), 'none' (random) or a local .params file")
    p.add_argument("--configs", help="layer:pooling pairs, e.g. 'flatten_fwd:,top_relu_fwd:gem' "
                                     "(default: several layers x every pooling)")
    p.add_argument("--size", type=int, default=80)
    p.add_argument("--balance", type=int, default=0, help="images per class after augmentation (0: largest class)")
    p.add_argument("--pca", type=int, help="PCA-whitened dimensions (default: 128; small mode: 32, "
                                           "its training set has only ~140 images)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--head-epochs", type=int, default=1, help="first train the new layer alone (0: one stage)")
    p.add_argument("--step", type=int, default=2, help="divide the LR by 10 every N epochs")
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--ctx", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dims = args.pca or (128 if args.data else 32)
    configs = CONFIGS[args.backbone] if not args.configs else [
        (c.partition(":")[0], c.partition(":")[2] or None) for c in args.configs.split(",")]

    # 1. drop corrupt images, split 60/40 (seeded), balance the training classes by augmentation
    report = ft.check(ft.ImageList.from_folder(args.data or small_data(out / "images", args.seed)))
    log.info("check: %s", report.summary())
    train, test = report.good.split(ratios=(0.6, 0.4), seed=args.seed)
    target = args.balance or max(train.class_counts().values())
    train = ft.balance(train, target, out / "balanced", seed=args.seed)
    ft.pack(train, out / "train", resize=args.size)
    database, labels = test.paths, test.single_labels()
    if dims > len(train):
        log.warning("Only %d training images: PCA to %d dimensions instead of %d.", len(train), len(train), dims)
        dims = len(train)

    # 2. mAP of every layer/pooling with the pretrained network
    backbone = ft.create_model(args.backbone, weights=None if args.weights.lower() == "none" else args.weights)
    backbone.preprocess = backbone.preprocess.replace(size=(args.size, args.size), resize=args.size)
    before = retrieval_maps(backbone, configs, train.paths, database, labels, dims)

    # 3. fine-tune: new last layer at 10x (weights) / 20x (biases), optionally head first; step LR
    model = ft.HeadReplacer(len(train.class_names)).apply(backbone, class_names=train.class_names)
    # BatchNorm statistics stay frozen: small batches of a small set would only add noise to them
    policy = ft.LayerLRPolicy.boosted_head(10, 20, head_epochs=args.head_epochs,
                                           freeze_bn=True)
    trainer = ft.Trainer(
        model, policy=policy, optimizer="sgd",
        optimizer_params={"learning_rate": args.lr, "momentum": 0.9, "wd": 5e-4},
        schedule=ft.StepSchedule(factor=0.1, epochs=args.step),
        batch_size=args.batch_size, ctx=args.ctx, seed=args.seed, out_dir=out / "train", progress=False)
    trainer.fit(ft.RecordDataset(out / "train", model.preprocess, train=True), epochs=args.epochs)
    model.save(out / "model")

    # 4. the same measurements on the fine-tuned network
    after = retrieval_maps(model, configs, train.paths, database, labels, dims)
    table = {key: {"before": before[key], "after": after[key]} for key in before}
    (out / "map.json").write_text(json.dumps(table, indent=2))
    print(f"class-level retrieval mAP, {len(database)} images, PCA-whitened to {dims} dims")
    print(f"{'layer:pooling':32s} {'before':>8s} {'after':>8s}")
    for key, row in table.items():
        print(f"{key:32s} {row['before']:8.1%} {row['after']:8.1%}")
    return table


if __name__ == "__main__":
    main()
