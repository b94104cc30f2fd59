"""``finetune quickstart`` — the main job, end to end, on the built-in data set.

Fashion-MNIST (Debian package ``dataset-fashion-mnist``): a seeded sample of
the official training images (``--per-class`` per class, 90 % for training,
10 % for validation) and the official test images (all 10,000 by default) are
written out as class-per-folder PNG trees, listed and packed into ``.rec``
files. EfficientNet-Lite0 with its offline ImageNet weights gets a new 10-way
head and is fine-tuned with the library's default recipe
(:class:`finetune.train.Recipe`, its plan printed); the result is a model
directory that ``finetune predict`` and ``finetune evaluate`` read. The model
is evaluated on the test images next to the linear probe (logistic regression
on the same backbone's frozen features), and a report folder gets the
training curves, the confusion matrix, the most confident errors with their
file names and a per-class table.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import time

from .._file_writes import atomic_open
from .._outputs import RUN, adopt_folder, hold_folder
from ._options import add_alias, add_shared, count, ctx_of

log = logging.getLogger("finetune.quickstart")
_EARLIER_FILES = ("images", "records", "train", "model", "report", "summary.json", "test_report.json")


def register(sub) -> None:
    """Add the ``quickstart`` subcommand."""
    p = sub.add_parser(
        "quickstart",
        help="fine-tune a pretrained network end to end on the built-in data set (Fashion-MNIST)",
        description=__doc__.split("\n\n", 1)[1],
    )
    add_shared(p, "out", default="runs/quickstart", metavar="DIR", help="output folder (default: %(default)s)")
    p.add_argument("--backbone", default="efficientnet_lite0", help="zoo backbone (default: %(default)s)")
    p.add_argument("--per-class", type=count(1), default=100,
                   help="training images per class taken from the training set (default: %(default)s)")
    p.add_argument("--test-per-class", type=count(1), default=1000,
                   help="test images per class from the official test set (default: %(default)s, i.e. all)")
    p.add_argument("--unlabeled", type=count(0), default=0, metavar="N",
                   help="also learn from N other training images without their labels (self-training; "
                   "default: %(default)s, labelled images only)")
    p.add_argument("--epochs", type=count(0), help="fine-tuning epochs (default: the recipe's)")
    p.add_argument("--head-epochs", type=count(0), help="head warm-up epochs (default: the recipe's)")
    add_alias(p, "--size", add_shared(p, "input_size"))
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="change one Recipe field, e.g. --set input_size=128 (repeatable)")
    p.add_argument("--no-baseline", action="store_true", help="skip the linear-probe baseline")
    add_shared(p, "weights")
    add_shared(p, "ctx")
    add_shared(p, "seed")
    add_shared(p, "progress")
    p.set_defaults(handler=run)


def _recipe(args):
    from ..train import Recipe
    from ._train import _value

    changes = {"seed": args.seed}
    for field, value in (("epochs", args.epochs), ("head_epochs", args.head_epochs)):
        if value is not None:
            changes[field] = value
    if args.input_size != "auto":
        changes["input_size"] = args.input_size
    for item in args.set:
        k, _, v = item.partition("=")
        changes[k.strip().replace("-", "_")] = _value(v)
    return Recipe().replace(**changes)


def _write_report(folder, report, history_path, probe) -> None:
    from .. import use as plots

    os.makedirs(folder, exist_ok=True)
    report.save(os.path.join(folder, "test_report.json"))
    if os.path.isfile(history_path):
        plots.plot_history(history_path, os.path.join(folder, "training_curves.png"), title="fine-tuning")
    plots.plot_confusion_matrix(report, path=os.path.join(folder, "confusion_matrix.png"))
    plots.plot_errors(report, os.path.join(folder, "most_confident_errors.png"), n=16)
    with atomic_open(os.path.join(folder, "most_confident_errors.csv"), "w", newline="", encoding="utf-8") as f:
        rows = report.most_confident_errors(50)
        w = csv.DictWriter(f, fieldnames=["source", "label_name", "predicted_name", "probability"],
                           extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with atomic_open(os.path.join(folder, "per_class.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["class", "images", "accuracy"])
        for c in report.per_class:
            w.writerow([c["name"], c["support"], f"{c['accuracy']:.4f}"])


def run(args) -> int:
    """Run the quickstart pipeline; returns 0."""
    with hold_folder(args.out, what="quickstart output folder"):  # one process writes the folder at a time
        return _run(args)


def _run(args) -> int:
    import finetune as ft
    from finetune.data import write_fashion_mnist_folder, write_fashion_mnist_unlabeled
    from finetune.train import linear_probe

    t_start = time.time()
    recipe = _recipe(args)
    out = adopt_folder(os.path.abspath(args.out), RUN, what="quickstart output folder", legacy=_EARLIER_FILES)
    log.info("1/6 writing Fashion-MNIST images to %s", os.path.join(out, "images"))
    shutil.rmtree(os.path.join(out, "images"), ignore_errors=True)  # ours; an earlier sample must not stay
    train_list = write_fashion_mnist_folder(os.path.join(out, "images", "train"), args.per_class,
                                            split="train", seed=args.seed)
    test_list = write_fashion_mnist_folder(os.path.join(out, "images", "test"), args.test_per_class,
                                           split="test", seed=args.seed)
    train, val = train_list.split(ratios=(0.9, 0.1), seed=args.seed)
    unlabeled = None
    if args.unlabeled:
        unlabeled = os.path.join(out, "images", "unlabeled")
        log.info("1/6 writing %d other training images, without labels, to %s", args.unlabeled, unlabeled)
        write_fashion_mnist_unlabeled(unlabeled, args.unlabeled, per_class=args.per_class, seed=args.seed)

    log.info("2/6 packing records at the images' own size")
    records = os.path.join(out, "records")
    os.makedirs(records, exist_ok=True)
    for name, images in (("train", train), ("val", val), ("test", test_list)):
        if not len(images):  # no validation images with --per-class 1 or 2 (below)
            continue
        images.write_lst(os.path.join(records, f"{name}.lst"), shuffle=name == "train", seed=args.seed)
        ft.pack(images, os.path.join(records, name), encoding=".png")
    train_rec, val_rec, test_rec = (os.path.join(records, f"{n}.rec") for n in ("train", "val", "test"))
    if not len(val):  # too few images per class to hold one out: train without validation
        log.info("no validation images with --per-class %d; training without validation", args.per_class)
        val_rec = None

    log.info("3/6 loading %s (weights: %s) and replacing the head", args.backbone, args.weights or "random")
    model = recipe.build_model(ft.create_model(args.backbone, weights=args.weights), train_list.class_names)
    plan = recipe.plan(model, train_rec, val_rec, unlabeled=unlabeled)

    log.info("4/6 fine-tuning (%d head warm-up epochs, then %d epochs of fine-tuning%s)",
             recipe.head_epochs, plan.epochs, "; then the same for a student on the labelled and "
             "pseudo-labelled images" if unlabeled else "")
    t_train = time.time()
    trainer = recipe.fit(model, train_rec, val_rec, ctx=ctx_of(args), out_dir=os.path.join(out, "train"),
                         progress=args.progress, unlabeled=unlabeled)
    train_s = time.time() - t_train
    model_dir = os.path.join(out, "model")
    model.save(model_dir)

    log.info("5/6 evaluating on %d official test images", len(test_list))
    report = ft.evaluate(model, test_list, tta=recipe.tta)
    probe = None
    if val_rec is None and not args.no_baseline:
        log.info("6/6 skipped: the linear probe chooses its regularisation on validation images, and there are none")
    elif not args.no_baseline:
        log.info("6/6 the baseline: a linear probe on the pretrained backbone's frozen features")
        fresh = recipe.build_model(ft.create_model(args.backbone, weights=args.weights), train_list.class_names)
        probe = linear_probe(fresh, train_rec, val_rec, test_rec, size=plan.size)
    total_s = time.time() - t_start
    _write_report(os.path.join(out, "report"), report, os.path.join(out, "train", "fine_tune", "history.json"), probe)
    print(report)
    summary = {"test_top1": report.top1, "test_images": report.num_images, "train_seconds": round(train_s, 1),
               "total_seconds": round(total_s, 1), "model_dir": model_dir, "recipe": repr(recipe),
               "linear_probe_top1": probe["test_top1"] if probe else None,
               "sample": {"per_class": args.per_class, "seed": args.seed, "unlabeled": args.unlabeled},
               "pseudo_labels": getattr(trainer, "pseudo_labels_", None)}
    with atomic_open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    draw = f"{args.per_class} labelled per class, draw --seed {args.seed}" + (
        f", {args.unlabeled} unlabelled" if args.unlabeled else "")
    line = (f"\nResult: {100 * report.top1:.1f} % top-1 on {report.num_images} official test images "
            f"({draw}; fine-tuned {train_s / 60:.1f} min, whole run {total_s / 60:.1f} min)")
    if probe:
        line += f"; linear probe on the same backbone {100 * probe['test_top1']:.1f} % " \
                f"({100 * (report.top1 - probe['test_top1']):+.1f} points)"
    print(line)
    print(f"Report: {os.path.join(out, 'report')}   Model directory: {model_dir}")
    print(f"Try: finetune predict {model_dir} {os.path.join(out, 'images', 'test')}/*/*.png --top-k 3")
    return 0
