"""Fine-tune VGG16 on Caltech-101, report, predict and explain.

The seed (PyTorch) splits every class 50 % train / 25 % validation / 25 % test,
estimates the RGB mean/std of the training images, augments (random crop of
80–100 % of the area, flip, ±15° rotation, colour jitter), replaces VGG16's last
layer by ``Linear(4096,256)-ReLU-Dropout(0.4)-Linear(256,101)``, freezes part of
the network, trains with Adam, divides the LR by 5 whenever the validation
accuracy drops and stops after the third drop; it saves logs, plots the curves,
reports test top-1/top-5 of the best and the final model (70.8 % / 84.8 %),
predicts new images with top-5 Chinese class names and probabilities, and draws
Grad-CAM heat maps.

Full run (Caltech-101 folder, VGG16 ImageNet weights as a local Gluon ``.params``)::

    python examples/caltech101_transfer.py --data 101_ObjectCategories/ --backbone vgg16 \\
        --weights vgg16-e660d456.params --size 224 --resize 256 --epochs 30 --names zh.txt

Small mode (the default, under a minute on 2 CPU cores): 10 Fashion-MNIST classes,
EfficientNet-Lite0 with the ImageNet weights shipped offline, 64 px, a few epochs,
and an English→Chinese name map written for the Fashion-MNIST classes.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import pathlib  # noqa: E402

import finetune as ft  # noqa: E402
from finetune.data import write_fashion_mnist_folder  # noqa: E402

log = logging.getLogger("caltech101_transfer")

#: freeze the input side of the network up to this layer (pass --freeze-until for others)
FREEZE_UNTIL = {"efficientnet_lite0": "blocks3_project_bn_fwd", "vgg16": "pool2_fwd"}
#: Grad-CAM layer; EfficientNet-Lite0's last conv map is only 2x2 at 64 px, this stride-16 one 4x4
GRADCAM_LAYER = {"efficientnet_lite0": "blocks10_add"}
FASHION_ZH = {"T-shirt_top": "T恤", "Trouser": "裤子", "Pullover": "套头衫", "Dress": "连衣裙",
              "Coat": "外套", "Sandal": "凉鞋", "Shirt": "衬衫", "Sneaker": "运动鞋", "Bag": "包",
              "Ankle_boot": "短靴"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="class-per-folder tree (default: Fashion-MNIST sample)")
    p.add_argument("--out", default="runs/caltech101", help="output folder (default: %(default)s)")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--weights", default="imagenet",
                   help="'imagenet' (the default of create_model), 'none' (random) or a local .params file")
    p.add_argument("--freeze-until", help="last frozen layer (default: per backbone)")
    p.add_argument("--gradcam-layer", help="default: per backbone, else the last conv layer")
    p.add_argument("--names", help="class name -> display name map (default small mode: Chinese names)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--resize", type=int, default=72)
    p.add_argument("--epochs", type=int, default=6, help="at most; stops after the 3rd LR drop")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam LR (the seed used 0.01)")
    p.add_argument("--per-class", type=int, default=30, help="small mode: images per class")
    p.add_argument("--ctx", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logfile = logging.FileHandler(out / "train.log", encoding="utf-8")  # the seed's saved logs
    logfile.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    for name in ("finetune", log.name):
        logging.getLogger(name).setLevel(logging.INFO)
        logging.getLogger(name).addHandler(logfile)

    # 1. stratified 50/25/25 split, packed records
    if args.data:
        data, names = args.data, args.names
    else:
        data = write_fashion_mnist_folder(out / "images", args.per_class, seed=args.seed).root
        names = out / "zh.txt"
        names.write_text("".join(f"{en}\t{zh}\n" for en, zh in FASHION_ZH.items()), encoding="utf-8")
    images = ft.ImageList.from_folder(data)
    parts = dict(zip(("train", "val", "test"), images.split(ratios=(0.5, 0.25, 0.25), seed=args.seed)))
    for name, part in parts.items():
        ft.pack(part, out / name, resize=args.resize)

    # 2. the training set's RGB mean/std normalises the inputs
    stats = ft.MeanImage.compute(out / "train", size=(args.size, args.size), resize=args.resize)
    pre = stats.to_preprocess((args.size, args.size), use_image=False, resize=args.resize)

    # 3. new head Dense(256)-ReLU-Dropout(0.4)-Dense(K); the input side frozen
    backbone = ft.create_model(args.backbone, weights=None if args.weights.lower() == "none" else args.weights)
    model = ft.HeadReplacer(len(images.class_names), hidden=(256,), dropout=0.4) \
        .apply(backbone, class_names=images.class_names)
    model.preprocess = pre
    policy = ft.LayerLRPolicy(freeze_until=args.freeze_until or FREEZE_UNTIL.get(args.backbone))

    # 4. augmentation, Adam, LR / 5 on every drop of validation accuracy, stop after the 3rd drop
    augment = ft.Augment(scale=(0.8, 1.0), mirror=True, rotation=15,
                         brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05)
    train = ft.RecordDataset(out / "train", pre, train=True, augment=augment)
    val, test = ft.RecordDataset(out / "val", pre), ft.RecordDataset(out / "test", pre)
    trainer = ft.Trainer(
        model, policy=policy, optimizer="adam", optimizer_params={"learning_rate": args.lr},
        schedule=ft.PlateauSchedule(factor=0.2, patience=0, monitor="val_top1", stop_after=3),
        batch_size=args.batch_size, ctx=args.ctx, seed=args.seed, out_dir=out / "train", progress=False)
    trainer.fit(train, val, epochs=args.epochs)
    ft.plot_history(out / "train" / "history.json", out / "curves.png", title=args.backbone)

    # 5. test top-1 / top-5 of the final and of the best model
    results = {}
    for which in ("final", "best"):
        if which == "best":
            trainer.load_checkpoint(out / "train" / "checkpoints" / "best.ckpt")
        report = ft.evaluate(model, test, top_k=5)
        report.save(out / f"test_{which}.json")
        model.save(out / f"model_{which}")
        results[which] = {"top1": report.top1, "top5": report.topk}
    (out / "results.json").write_text(json.dumps(results, indent=2))

    # 6. top-5 predictions with translated names, and a Grad-CAM heat map
    predictor = ft.Predictor(model, names=names)
    test_paths = parts["test"].paths
    samples = test_paths[:: max(1, len(test_paths) // 4)][:4]  # a few classes
    predictions = predictor.predict(samples, top_k=5)
    ft.plot_predictions(predictions, out / "predictions.png")
    gradcam = ft.GradCAM(model, args.gradcam_layer or GRADCAM_LAYER.get(args.backbone))
    cams = [gradcam(path) for path in samples[:2]]
    cams[0].save(out / "gradcam.png")
    ft.plot_gradcam(cams, out / "gradcam_grid.png")

    for name in ("finetune", log.name):
        logging.getLogger(name).removeHandler(logfile)
    logfile.close()
    print(predictions.to_table(top_k=5))
    for which, r in results.items():
        print(f"{which} model: test top-1 {r['top1']:.1%}, top-5 {r['top5']:.1%}")
    return results


if __name__ == "__main__":
    main()
