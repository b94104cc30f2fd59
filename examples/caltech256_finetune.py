"""MXNet's fine-tuning tutorial on Caltech-256.

The tutorial keeps 60 training images per class (the rest is validation),
packs both at 256 px, loads a pretrained symbolic ResNet-50 checkpoint
(``resnet-50-symbol.json`` + ``resnet-50-0000.params``), cuts the graph at the
layer before the classifier (``flatten0``), adds a new fully connected layer
(Xavier init) and a softmax, drops the old classifier's weights, and trains
with SGD at 0.01 for 8 epochs on 8 GPUs with ``kvstore='device'``, random crop
and mirror (ResNet-50: 77.4 %; ResNet-152 ImageNet-11k: 86.4 %).

Full run (Caltech-256 folder and MXNet's ResNet-50 checkpoint)::

    python examples/caltech256_finetune.py --data 256_ObjectCategories/ \\
        --checkpoint resnet-50 --epoch 0 --per-class 60 --pack-size 256 --size 224 \\
        --epochs 8 --ctx gpu:0,1,2,3,4,5,6,7

Small mode (the default, under a minute on 2 CPU cores): the checkpoint is made
by exporting EfficientNet-Lite0 with its offline ImageNet weights (the same
``-symbol.json`` / ``-0000.params`` pair MXNet's model zoo ships), and the data
are 10 Fashion-MNIST classes with 10 training images each, packed at 72 px.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))

import argparse  # noqa: E402
import logging  # noqa: E402
import pathlib  # noqa: E402

import mxnet as mx  # noqa: E402

import finetune as ft  # noqa: E402
from finetune.data import write_fashion_mnist_folder  # noqa: E402

log = logging.getLogger("caltech256_finetune")


def small_checkpoint(prefix):
    """Write ``prefix-symbol.json`` + ``prefix-0000.params`` from a zoo network, as a stand-in."""
    ft.create_model("efficientnet_lite0").export(prefix)  # its offline ImageNet weights
    return ft.Preprocess.load(f"{prefix}-preprocess.json")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="class-per-folder tree (default: Fashion-MNIST sample)")
    p.add_argument("--out", default="runs/caltech256", help="output folder (default: %(default)s)")
    p.add_argument("--checkpoint", help="prefix of an MXNet checkpoint (default: export EfficientNet-Lite0)")
    p.add_argument("--epoch", type=int, default=0, help="epoch number of the checkpoint")
    p.add_argument("--cut-at", help="layer before the classifier (default: the checkpoint's, e.g. flatten0)")
    p.add_argument("--per-class", type=int, default=10, help="training images per class (the seed: 60)")
    p.add_argument("--pack-size", type=int, default=72, help="shorter side of the records (the seed: 256)")
    p.add_argument("--size", type=int, default=64, help="network input (the seed: 224)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9, help="the seed used plain SGD (0)")
    p.add_argument("--ctx", default="cpu*2", help="devices (default: %(default)s)")
    p.add_argument("--kvstore", default="device")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. N training images per class, the rest for validation; records at --pack-size
    data = args.data or write_fashion_mnist_folder(out / "images", 2 * args.per_class, seed=args.seed).root
    images = ft.ImageList.from_folder(data)
    train, val = images.split(per_class=args.per_class, seed=args.seed)
    for name, part in (("train", train), ("val", val)):
        part.write_lst(out / f"{name}.lst", shuffle=name == "train", seed=args.seed)
        ft.pack(part, out / name, resize=args.pack_size)

    # 2. the pretrained symbolic checkpoint
    if args.checkpoint:
        prefix, preprocess = args.checkpoint, None  # MXNet's ResNets: raw RGB, normalised in the graph
    else:
        prefix = str(out / "checkpoint" / "lite0")
        preprocess = small_checkpoint(prefix)
    backbone = ft.Backbone.from_checkpoint(prefix, args.epoch, preprocess=preprocess)
    log.info("checkpoint %s: classifier %r, cut at %r", prefix, backbone.classifier,
             args.cut_at or backbone.feature_layer)

    # 3. cut before the old classifier (its weights are dropped), new FC with Xavier init
    xavier = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)
    model = ft.HeadReplacer(len(images.class_names), cut_at=args.cut_at, init=xavier) \
        .apply(backbone, class_names=images.class_names)
    model.preprocess = model.preprocess.replace(size=(args.size, args.size), resize=args.pack_size)

    # 4. SGD 0.01 over several devices through a 'device' kvstore, random crop + mirror
    augment = ft.Augment(random_resized_crop=False, random_crop=True, mirror=True)
    trainer = ft.Trainer(
        model, optimizer="sgd", optimizer_params={"learning_rate": args.lr, "momentum": args.momentum},
        batch_size=args.batch_size, ctx=args.ctx, kvstore=args.kvstore, seed=args.seed,
        out_dir=out / "train", progress=False)
    trainer.fit(ft.RecordDataset(out / "train", model.preprocess, train=True, augment=augment),
                ft.RecordDataset(out / "val", model.preprocess), epochs=args.epochs)
    model.save(out / "model")
    model.export(out / "export" / "finetuned")  # a checkpoint again, for MXNet alone
    last = trainer.history_[-1]
    print(f"validation top-1 {last['val_top1']:.1%} after {len(trainer.history_)} epochs "
          f"({len(train)} training / {len(val)} validation images); model in {out / 'model'}")
    return trainer.history_


if __name__ == "__main__":
    main()
