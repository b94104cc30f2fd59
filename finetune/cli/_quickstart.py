"""``finetune quickstart`` — the main job, end to end, on the built-in data set.

Fashion-MNIST (Debian package ``dataset-fashion-mnist``) is written out as a
class-per-folder tree of PNGs, listed and split, packed into ``.rec`` files;
EfficientNet-Lite0 with its offline ImageNet weights gets a new 10-way head
and is fine-tuned; the result is a model directory that ``finetune predict``
and ``finetune evaluate`` read, evaluated on images of the official test set.

The recipe is the one measured in ``benchmarks/transfer_fashion_mnist.py``:
first the new head alone on cached backbone features (cheap), then the whole
network with the pretrained layers at a tenth of the head's learning rate,
BatchNorm statistics kept from ImageNet, random shifts and mirroring, cosine
schedule with a warm-up epoch.
"""

from __future__ import annotations

import json
import logging
import os

log = logging.getLogger("finetune.quickstart")


def register(sub) -> None:
    """Add the ``quickstart`` subcommand."""
    p = sub.add_parser(
        "quickstart",
        help="fine-tune a pretrained network end to end on the built-in data set (Fashion-MNIST)",
        description=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--out", default="runs/quickstart", help="output folder (default: %(default)s)")
    p.add_argument("--backbone", default="efficientnet_lite0", help="zoo backbone (default: %(default)s)")
    p.add_argument("--per-class", type=int, default=100,
                   help="training images per class taken from the training set (default: %(default)s)")
    p.add_argument("--test-per-class", type=int, default=100,
                   help="test images per class from the official test set (default: %(default)s)")
    p.add_argument("--size", type=int, default=64, help="network input size in pixels (default: %(default)s)")
    p.add_argument("--head-epochs", type=int, default=30,
                   help="epochs of the head-only stage on cached features (default: %(default)s)")
    p.add_argument("--head-lr", type=float, default=0.003, help="LR of the head-only stage (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=6, help="epochs of full fine-tuning (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default: %(default)s)")
    p.add_argument("--lr", type=float, default=0.002,
                   help="LR of the new head during full fine-tuning (default: %(default)s)")
    p.add_argument("--backbone-lr-mult", type=float, default=0.1,
                   help="LR multiplier of the pretrained layers (default: %(default)s)")
    p.add_argument("--ctx", default=None, help="devices, e.g. 'cpu' or 'cpu*2' (default: current)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.set_defaults(handler=run)


def run(args) -> int:
    """Run the quickstart pipeline; returns 0."""
    import finetune as ft
    from finetune.data import Augment, write_fashion_mnist_folder
    from finetune.train import CosineSchedule, LayerLRPolicy, Trainer

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    log.info("1/5 writing Fashion-MNIST images to %s", os.path.join(out, "images"))
    train_list = write_fashion_mnist_folder(os.path.join(out, "images", "train"), args.per_class,
                                            split="train", seed=args.seed)
    test_list = write_fashion_mnist_folder(os.path.join(out, "images", "test"), args.test_per_class,
                                           split="test", seed=args.seed)
    train, val = train_list.split(ratios=(0.9, 0.1), seed=args.seed)

    resize = args.size + args.size // 8  # evaluation: resize, then centre crop; training: random crop
    log.info("2/5 packing records (shorter side %d)", resize)
    records = os.path.join(out, "records")
    os.makedirs(records, exist_ok=True)
    for name, images in (("train", train), ("val", val), ("test", test_list)):
        images.write_lst(os.path.join(records, f"{name}.lst"), shuffle=name == "train", seed=args.seed)
        ft.pack(images, os.path.join(records, name), resize=resize)

    log.info("3/5 loading %s with its ImageNet weights and replacing the head", args.backbone)
    backbone = ft.Backbone.from_zoo(args.backbone, weights="imagenet")
    model = ft.HeadReplacer(len(train_list.class_names)).apply(backbone, class_names=train_list.class_names)
    model.preprocess = model.preprocess.replace(size=(args.size, args.size), resize=resize)

    pre = model.preprocess
    train_rec, val_rec = os.path.join(records, "train.rec"), os.path.join(records, "val.rec")
    log.info("4/5 training the new head for %d epochs on cached features", args.head_epochs)
    Trainer(model, policy=LayerLRPolicy.head_only(), optimizer_params={"learning_rate": args.head_lr},
            batch_size=args.batch_size, ctx=args.ctx, seed=args.seed, out_dir=os.path.join(out, "train_head"),
            ).fit(ft.RecordDataset(train_rec, pre), ft.RecordDataset(val_rec, pre), epochs=args.head_epochs)
    log.info("    fine-tuning the whole network for %d epochs", args.epochs)
    trainer = Trainer(
        model, policy=LayerLRPolicy.pretrained(args.backbone_lr_mult, freeze_bn=True), optimizer="sgd",
        optimizer_params={"learning_rate": args.lr, "momentum": 0.9, "wd": 5e-5},
        batch_size=args.batch_size, ctx=args.ctx, schedule=CosineSchedule(warmup_epochs=1),
        seed=args.seed, out_dir=os.path.join(out, "train"),
    )
    augment = Augment(random_resized_crop=False, random_crop=True, mirror=True)
    trainer.fit(ft.RecordDataset(train_rec, pre, train=True, augment=augment), ft.RecordDataset(val_rec, pre),
                epochs=args.epochs)
    model_dir = os.path.join(out, "model")
    model.save(model_dir)

    log.info("5/5 evaluating on %d test images", len(test_list))
    report = ft.evaluate(model, ft.RecordDataset(os.path.join(records, "test.rec"), pre))
    report.save(os.path.join(out, "test_report.json"))
    print(report)
    print(f"\nModel directory: {model_dir}")
    print(f"Try: finetune predict {model_dir} {os.path.join(out, 'images', 'test')}/*/*.png --top-k 3")
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump({"test_top1": report.top1, "model_dir": model_dir}, f, indent=2)
    return 0
