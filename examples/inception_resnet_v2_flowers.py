"""Inception-ResNet-v2 in MXNet on the Oxford flower sets.

The seed builds Inception-ResNet-v2 by hand (a conv+BN+ReLU factory,
``block35/block17/block8`` with residual scaling) with **global pooling** so no
input shape has to be threaded through, trains it on the 17- and 102-class
flower sets split 9:1, and predicts with OpenCV decoding, BGR→RGB, resize,
HWC→CHW and subtraction of the training mean image. Its pitfalls: unshuffled
``.lst`` files, BGR vs RGB, and the mean image used silently in training but
forgotten at prediction time. Here the model carries its preprocessing (mean
image included) into the saved model directory, and the Predictor applies it
to BGR arrays from ``cv2.imread``.

Full run (a class-per-folder flower set; ``--weights`` a local ImageNet ``.params``
for ``inception_resnet_v2``, else random initialisation as in the seed)::

    python examples/inception_resnet_v2_flowers.py --data jpg17/ --size 299 --epochs 100

Small mode (the default, 1–3 minutes on 2 CPU cores): 3 Fashion-MNIST classes x 20
images at 80 px, one epoch from random weights — the network is heavy on a CPU.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))

import argparse  # noqa: E402
import logging  # noqa: E402
import pathlib  # noqa: E402
import shutil  # noqa: E402

import cv2  # noqa: E402

import finetune as ft  # noqa: E402
from finetune.data import write_fashion_mnist_folder  # noqa: E402

log = logging.getLogger("inception_resnet_v2_flowers")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="class-per-folder flower images (default: Fashion-MNIST sample)")
    p.add_argument("--out", default="runs/irv2_flowers", help="output folder (default: %(default)s)")
    p.add_argument("--weights", default="none",
                   help="local .params / .pth for inception_resnet_v2, or 'none' (default: none, random init: "
                        "no ImageNet weights ship for it)")
    p.add_argument("--size", type=int, default=80, help="input size, at least 75 (the seed used 299)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--classes", type=int, default=3, help="small mode: Fashion-MNIST classes")
    p.add_argument("--per-class", type=int, default=20, help="small mode: images per class")
    p.add_argument("--ctx", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. split 9:1 and write *shuffled* .lst files (the seed's first pitfall), pack records
    data = args.data or write_fashion_mnist_folder(out / "images", args.per_class, seed=args.seed,
                                                       classes=args.classes).root
    images = ft.ImageList.from_folder(data)
    train, val = images.split(ratios=(0.9, 0.1), seed=args.seed)
    for name, part in (("train", train), ("val", val)):
        part.write_lst(out / f"{name}.lst", shuffle=True, seed=args.seed)
        ft.pack(ft.ImageList.from_lst(out / f"{name}.lst", root=data, class_names=images.class_names),
                out / name, resize=args.size)

    # 2. Inception-ResNet-v2 with global pooling: any input size from 75 px gives logits
    backbone = ft.create_model("inception_resnet_v2",
                               weights=None if args.weights.lower() == "none" else args.weights)
    for s in (75, args.size, 299):
        log.info("input %d px -> output %s", s, backbone.output_shape(size=(s, s)))
    model = ft.HeadReplacer(len(images.class_names)).apply(backbone, class_names=images.class_names)

    # 3. the training mean image becomes part of the model's preprocessing (RGB, then / 127.5)
    mean = ft.MeanImage.compute(out / "train", size=(args.size, args.size), resize=args.size)
    mean.save(out / "mean.bin")
    model.preprocess = mean.to_preprocess((args.size, args.size), resize=args.size,
                                          std=backbone.preprocess.std)

    # 4. train
    augment = ft.Augment(random_resized_crop=False, random_crop=True, mirror=True)
    trainer = ft.Trainer(
        model, optimizer="sgd", optimizer_params={"learning_rate": args.lr, "momentum": 0.9},
        batch_size=args.batch_size, ctx=args.ctx, seed=args.seed, out_dir=out / "train", progress=False)
    trainer.fit(ft.RecordDataset(out / "train", model.preprocess, train=True, augment=augment),
                ft.RecordDataset(out / "val", model.preprocess), epochs=args.epochs)
    model.save(out / "model")

    # 5. predict as the seed did — cv2.imread gives BGR — but let the saved model do the rest:
    # BGR->RGB, resize, centre crop, HWC->CHW and the mean image all come from its Preprocess.
    predictor = ft.Predictor.load(out / "model")
    log.info("saved preprocessing: %s (mean image %s)", predictor.preprocess,
             predictor.preprocess.mean_image.shape)
    paths = val.paths
    bgr = [cv2.imread(path) for path in paths]
    predictions = predictor.predict(bgr, top_k=1, color="BGR")
    truth = [images.class_names[label] for label in val.single_labels()]
    correct = sum(pred.name == name for pred, name in zip(predictions, truth))
    for path, pred in zip(paths, predictions):
        print(f"{os.path.basename(path)}: {pred.name} {pred.probability:.3f}")
    print(f"validation top-1 from cv2.imread + Predictor: {correct}/{len(paths)}")
    return {"correct": correct, "total": len(paths), "history": trainer.history_}


if __name__ == "__main__":
    main()
