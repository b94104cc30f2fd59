"""The default recipe against every simple baseline, and without each of its ingredients.

Fashion-MNIST (the Debian package ``dataset-fashion-mnist``), ``--per-class``
training images per class from the official training set (stratified,
seeded; 90 % train, 10 % validation), **all 10,000 official test images**.
One table from one run, each row with its wall time:

- ``pixels``: scikit-learn logistic regression on the raw 28x28 pixels
  (C chosen on the validation images from a small grid);
- ``probe``: the same on frozen EfficientNet-Lite0 pooled features at the
  recipe's input size (the linear probe);
- ``scratch``: the recipe on the same architecture without pretrained weights;
- ``recipe``: :class:`finetune.train.Recipe` with its defaults;
- ``-<ingredient>``: the recipe with one ingredient switched off.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/transfer_fashion_mnist.py [--rows pixels,probe,recipe] [--json out.json]

On two cores, two processes of one thread each (each with its share of
``--rows`` and its own ``--json``) finish the table sooner; ``--render a.json
b.json`` prints their rows as one table.

An interrupted run continues with ``--resume --work DIR`` (the same
``DIR`` and settings): the records are reused and each trained row picks up
from its last finished epoch.

``--dev N`` also scores every trained row on ``N`` per class of the other
official training images (never the sample, never the test set): the
held-out set the defaults are chosen on, so the test set is only reported.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import glob
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 2))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import logging  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import finetune as ft  # noqa: E402
from finetune.data import (FASHION_MNIST_CLASSES, load_fashion_mnist, write_fashion_mnist_folder,  # noqa: E402
                           write_fashion_mnist_unlabeled)
from finetune.train import Recipe  # noqa: E402

ABLATIONS = {
    "-frozen-bn": dict(batchnorm="live"),
    "-ema": dict(ema=None),
    "-head-warmup": dict(head_epochs=0),
    "-layer-decay": dict(layer_decay=None),
    "-frozen-groups": dict(frozen_groups=0),
    "+cutmix": dict(cutmix=1.0),
    "-label-smoothing": dict(label_smoothing=0.0),
    "-erasing": dict(erasing=0.0),
    "-dropout": dict(dropout=0.0),
    "-keep-best": dict(keep_best=False),
}
#: rows that also learn from ``--unlabeled`` images (self-training), and their ingredients switched off
UNLABELED = {
    "+unlabeled": {},
    "+unlabeled-threshold": dict(pseudo_threshold=0.0),
    "+unlabeled-balance": dict(pseudo_balance=False),
    "+unlabeled-2-rounds": dict(self_training_rounds=2),
}
ROWS = ["pixels", "probe", "recipe", "-tta", "scratch", *ABLATIONS, *UNLABELED]
TINY_ROWS = ["pixels", "probe", "recipe", "-tta"]  # the --tiny default: one of each kind of row


def write_dev_folder(out_dir, sample_dir, per_class, seed):
    """``per_class`` official *training* images per class outside the sample in ``sample_dir``.

    A held-out set for choosing the recipe's defaults without looking at the
    test set (the sample's file names carry their index in the training set).
    """
    used = {int(os.path.splitext(f)[0].rsplit("_", 1)[1])
            for _, _, files in os.walk(sample_dir) for f in files if f.endswith(".png")}
    images, labels = load_fashion_mnist("train")
    rng = np.random.RandomState(12345 + seed)
    for label, name in enumerate(FASHION_MNIST_CLASSES):
        members = [i for i in np.flatnonzero(labels == label) if i not in used]
        os.makedirs(os.path.join(out_dir, name), exist_ok=True)
        for i in rng.choice(members, size=per_class, replace=False):
            cv2.imwrite(os.path.join(out_dir, name, f"train_{i:05d}.png"), images[i])
    return ft.ImageList.from_folder(out_dir, exts=(".png",))


def prepare(root, per_class, seed, test_per_class=1000, dev_per_class=0, reuse=False, unlabeled=0, size=None):
    """Records of the training sample (train/val), of the whole official test set and of the dev set, at 28 px.

    With ``reuse``, the records an earlier call wrote to ``root`` with the same
    arguments are used as they are (a resumed run must train on the same
    files); otherwise, and when the arguments differ, they are written anew.
    """
    sample = {"per_class": per_class, "seed": seed, "test_per_class": test_per_class, "dev_per_class": dev_per_class,
              "unlabeled": unlabeled, "size": size}
    stamp = os.path.join(root, "sample.json")
    if reuse and os.path.isfile(stamp):
        with open(stamp, encoding="utf-8") as f:
            same = json.load(f) == sample
        paths = {name: os.path.join(root, f"{name}.rec")
                 for name in ("train", "val", "test", *(("dev",) if dev_per_class else ()))}
        if unlabeled:
            paths["unlabeled"] = os.path.join(root, "unlabeled")
        if same and all(os.path.exists(path) for path in paths.values()):
            return paths, ft.ImageList.from_folder(os.path.join(root, "train"), exts=(".png",)).class_names
    images = write_fashion_mnist_folder(os.path.join(root, "train"), per_class, split="train", seed=seed, size=size)
    train, val = images.split(ratios=(0.9, 0.1), seed=seed)
    test = write_fashion_mnist_folder(os.path.join(root, "test"), test_per_class, split="test", seed=seed,
                                      size=size)
    splits = [("train", train), ("val", val), ("test", test)]
    if dev_per_class:
        splits.append(("dev", write_dev_folder(os.path.join(root, "dev"), os.path.join(root, "train"),
                                               dev_per_class, seed)))
    paths = {}
    for name, lst in splits:
        lst.write_lst(os.path.join(root, f"{name}.lst"), shuffle=False)
        ft.pack(lst, os.path.join(root, name), encoding=".png")
        paths[name] = os.path.join(root, f"{name}.rec")
    if unlabeled:  # other official training images, written without labels (never the test set)
        paths["unlabeled"] = os.path.join(root, "unlabeled")
        write_fashion_mnist_unlabeled(paths["unlabeled"], unlabeled, per_class=per_class, seed=seed, size=size)
    with open(stamp, "w", encoding="utf-8") as f:
        json.dump(sample, f)
    return paths, images.class_names


def arrays(rec, side=28):
    """``(N, side * side) float`` pixels and labels of a record file (grey = first channel)."""
    ds = ft.RecordDataset(rec, ft.Preprocess(size=(side, side), resize=side, mean=(0, 0, 0), std=(1, 1, 1)))
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return np.stack([x[0].ravel() for x in xs]) / 255.0, np.asarray(ys, int)


def logistic(xtr, ytr, xva, yva, xte, yte, grid=(0.01, 0.1, 1.0, 10.0)):
    """Logistic regression, C picked on validation, refit on train; test top-1."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(xtr)
    xtr, xva, xte = sc.transform(xtr), sc.transform(xva), sc.transform(xte)
    best = max(grid, key=lambda c: LogisticRegression(C=c, max_iter=2000).fit(xtr, ytr).score(xva, yva))
    clf = LogisticRegression(C=best, max_iter=2000).fit(xtr, ytr)
    return float(clf.score(xte, yte)), {"C": best}


def features(model, rec, size):
    from finetune.train._cache import compute_features

    pre = model.preprocess.replace(size=(size, size), resize=size)
    ds = compute_features(model.body, ft.RecordDataset(rec, pre), [ft.resolve_ctx(None)[0]], 64, workers=2)
    x = np.stack([ds[i][0] for i in range(len(ds))])
    return x.reshape(len(x), -1), np.asarray([ds[i][1] for i in range(len(ds))], int)


def new_model(names, recipe, weights="imagenet"):
    backbone = ft.Backbone.from_zoo("efficientnet_lite0", weights=weights)
    return recipe.build_model(backbone, names)


def run_row(row, paths, names, recipe, out_dir, resume=False):
    if row == "pixels":
        side = paths.get("size") or 28
        return logistic(*arrays(paths["train"], side), *arrays(paths["val"], side), *arrays(paths["test"], side))
    if row == "probe":
        model = new_model(names, recipe)
        size = recipe.plan(model, paths["train"]).size
        parts = [features(model, paths[k], size) for k in ("train", "val", "test")]
        top1, info = logistic(*parts[0], *parts[1], *parts[2])
        return top1, {**info, "size": size}
    if row in UNLABELED and "unlabeled" not in paths:
        raise SystemExit(f"Row {row} needs --unlabeled N (how many unlabelled training images).")
    changes = {**ABLATIONS.get(row, {}), **UNLABELED.get(row, {})}
    r = recipe.replace(**changes)
    model = new_model(names, r, weights=None if row == "scratch" else "imagenet")
    started = bool(glob.glob(os.path.join(glob.escape(os.path.join(out_dir, row)), "**", "last.ckpt"),
                             recursive=True))
    trainer = r.fit(model, paths["train"], paths["val"], out_dir=os.path.join(out_dir, row), progress=False,
                    resume=resume and started,  # a row the interrupted run had not reached starts afresh
                    unlabeled=paths["unlabeled"] if row in UNLABELED else None)
    report = ft.evaluate(model, ft.RecordDataset(paths["test"], model.preprocess), tta=r.tta)
    info = {"val_top1": [round(h["val_top1"], 4) for h in trainer.history_], "size": model.preprocess.size[0],
            "epoch_seconds": [round(h["seconds"], 1) for h in trainer.history_]}
    if "dev" in paths:
        info["dev_top1"] = ft.evaluate(model, ft.RecordDataset(paths["dev"], model.preprocess), tta=r.tta).top1
    if row in UNLABELED:
        info["pseudo_labels"] = trainer.pseudo_labels_
        labelled = len(ft.RecordDataset(paths["train"]))
        info["pseudo_label_accuracy"] = [pseudo_label_accuracy(os.path.join(out_dir, row, "self_training",
                                                                             f"student_{k + 1}.rec"), labelled)
                                         for k in range(len(trainer.pseudo_labels_))]
    kept = [cb for cb in trainer._callbacks if type(cb).__name__ == "KeepBest"]
    if kept:
        info["kept_epoch"] = kept[0].best_epoch_ if kept[0].restored_ else len(trainer.history_) - 1
    if row == "recipe":
        plain = ft.evaluate(model, ft.RecordDataset(paths["test"], model.preprocess), tta=False)
        info["no_tta_top1"] = plain.top1
        model.save(os.path.join(out_dir, "recipe_model"))
    return report.top1, info


def pseudo_label_accuracy(student_rec, labelled) -> float | None:
    """The share of right pseudo-labels in a student's records (after its ``labelled`` images).

    A diagnostic of the benchmark only: it finds each image's official label by its pixels (28 px
    images only; ``None`` otherwise); training never sees these labels.
    """
    images, labels = load_fashion_mnist("train")
    truth = {images[i].tobytes(): FASHION_MNIST_CLASSES[labels[i]] for i in range(len(labels))}
    ds = ft.RecordDataset(student_rec)
    if len(ds) <= labelled or ds.image(labelled).shape[:2] != (28, 28):
        return None  # nothing kept, or resized images (--image-size): no pixel match
    names, stored = ds.class_names, ds.labels.astype(int)
    right = [truth.get(ds.image(i)[..., 0].tobytes()) == names[stored[i]] for i in range(labelled, len(ds))]
    return float(np.mean(right)) if right else None


DESCRIPTIONS = {
    "pixels": "logistic regression on the raw 28x28 pixels",
    "probe": "linear probe: frozen pretrained features + logistic regression",
    "recipe": "**the default recipe** (mirror TTA)",
    "-tta": "recipe without test-time augmentation (same model)",
    "scratch": "the recipe from random weights",
}


def merge(parts) -> dict:
    """One result from the JSON of several processes of one run (same settings, rows split between them)."""
    keys = ("per_class", "test_images", "recipe", "threads", "machine")
    for other in parts[1:]:
        if any(other[k] != parts[0][k] for k in keys):
            differ = [k for k in keys if other[k] != parts[0][k]]
            raise SystemExit(f"These results are not from one run: they differ in {differ}.")
    rows = {}
    for part in parts:
        rows.update(part["rows"])
    order = {row: i for i, row in enumerate(ROWS)}
    rows = dict(sorted(rows.items(), key=lambda kv: order.get(kv[0], len(ROWS))))
    return {**parts[0], "rows": rows, "processes": len(parts)}


def machine() -> str:
    """``"<CPU model>, <n> cores"`` (the architecture where the model name cannot be read)."""
    model = platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    return f"{model}, {os.cpu_count()} cores"


def render_rst(results) -> str:
    """The results as a reStructuredText table (for the docs)."""
    n = results.get("processes", 1)
    how = "one run" if n == 1 else f"one run in {n} processes side by side"
    load = results.get("load")
    where = f"load average {load:.1f} at the start" if load is not None else "shared"
    lines = [f"Measured {results['date']} on {results['machine']} ({where}, OMP_NUM_THREADS="
             f"{results['threads']} per process), {results['per_class']} training images per class (90 % train, "
             f"10 % validation), all {results['test_images']} official test images, {how} of "
             "``benchmarks/transfer_fashion_mnist.py``:", "",
             ".. list-table::", "   :header-rows: 1", "",
             "   * - row", "     - test top-1", "     - wall time"]
    for row, r in results["rows"].items():
        what = DESCRIPTIONS.get(row, f"recipe, {row[1:]} {'added' if row[0] == '+' else 'off'}")
        note = f" ({r['note']})" if r.get("note") else ""
        lines += [f"   * - ``{row}``: {what}{note}", f"     - {100 * r['top1']:.2f} %", f"     - {r['seconds']:.0f} s"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", help=f"comma-separated, from {ROWS} (default: all; with --tiny {TINY_ROWS})")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="override the recipe's fine-tuning epochs")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="change a field of the recipe every row starts from (repeatable)")
    p.add_argument("--json", help="write (and update after each row) the results here")
    p.add_argument("--dev", type=int, default=0, metavar="N",
                   help="also score trained rows on N other official training images per class (a held-out set "
                        "for choosing defaults without the test set; default: 0, none)")
    p.add_argument("--unlabeled", type=int, default=0, metavar="N",
                   help="N other official training images without labels for the +unlabeled rows (default: 0)")
    p.add_argument("--image-size", type=int, metavar="PX",
                   help="resize the 28 px images to PX px (e.g. 16: a low-resolution proxy; default: as they are)")
    p.add_argument("--draws", type=int, default=1, metavar="K",
                   help="repeat everything on K draws of the training sample (seeds --seed, --seed+1, ...) and "
                        "report each row's median and range (default: 1)")
    p.add_argument("--work", help="folder for records and runs (default: a temporary one)")
    p.add_argument("--resume", action="store_true",
                   help="continue the trained rows from the checkpoints an interrupted run left in --work (its "
                        "records are reused; a row's time is then this process's part, and its epoch_seconds "
                        "hold every epoch's)")
    p.add_argument("--tiny", action="store_true",
                   help="a smoke run: 6 images/class, 50 test images, 1 epoch, 32 px, rows pixels to -tta")
    p.add_argument("--render", metavar="JSON", nargs="+",
                   help="only print the results of an earlier run (its processes' JSON files) as a docs table")
    args = p.parse_args(argv)
    if args.render:
        parts = []
        for name in args.render:
            with open(name, encoding="utf-8") as f:
                parts.append(json.load(f))
        print(render_rst(merge(parts)), end="")
        return None
    logging.basicConfig(level=logging.WARNING)
    default = TINY_ROWS if args.tiny else [r for r in ROWS if args.unlabeled or r not in UNLABELED]
    rows = [r for r in (args.rows or ",".join(default)).split(",") if r]
    test_per_class = 1000
    if args.tiny:
        args.per_class, test_per_class = 6, 5
        args.set += ["epochs=1", "head_epochs=1", "input_size=32"]
    from finetune.cli._train import _value

    recipe = Recipe(seed=args.seed) if args.epochs is None else Recipe(seed=args.seed, epochs=args.epochs)
    recipe = recipe.replace(**{k: _value(v) for k, _, v in (s.partition("=") for s in args.set)})
    if args.resume and not args.work:
        p.error("--resume needs the --work folder of the interrupted run")
    if args.draws < 1:
        p.error("--draws must be at least 1")
    work = args.work or tempfile.mkdtemp(prefix="transfer_")
    draws = []
    for k in range(args.draws):
        seed = args.seed + k
        draw_work = work if args.draws == 1 else os.path.join(work, f"draw_{seed}")
        draws.append(run_draw(args, recipe.replace(seed=seed), seed, draw_work, rows, test_per_class))
    results = draws[0] if args.draws == 1 else summarise(draws)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return results


def run_draw(args, recipe, seed, work, rows, test_per_class) -> dict:
    """Every row on one draw of the training sample (seed ``seed``); prints the table, returns the results."""
    t0 = time.time()
    paths, names = prepare(os.path.join(work, "data"), args.per_class, seed, test_per_class,
                           args.dev if not args.tiny else min(args.dev, 3), reuse=args.resume,
                           unlabeled=args.unlabeled, size=args.image_size)
    paths["size"] = args.image_size
    results = {"date": datetime.date.today().isoformat(), "machine": machine(),
               "load": round(os.getloadavg()[0], 1), "threads": os.environ.get("OMP_NUM_THREADS"), "per_class": args.per_class,
               "test_images": len(ft.RecordDataset(paths["test"])), "recipe": repr(recipe), "seed": seed,
               "unlabeled": args.unlabeled, "image_size": args.image_size, "prepare_s": round(time.time() - t0, 1), "resumed": args.resume,
               "rows": {}}
    for row in rows:
        t = time.time()
        rec = results["rows"].get("recipe")
        if row == "-tta" and rec:
            results["rows"][row] = {"top1": rec["no_tta_top1"], "seconds": 0.0, "note": "the recipe's model"}
            continue
        if row == "-keep-best" and rec and rec.get("kept_epoch") == len(rec["val_top1"]) - 1:
            results["rows"][row] = {**rec, "seconds": 0.0, "note": "the recipe kept its last epoch"}
            continue
        top1, info = run_row(row, paths, names, recipe, os.path.join(work, "runs"), resume=args.resume)
        results["rows"][row] = {"top1": top1, "seconds": round(time.time() - t, 1), **info}
        print(f"{row:22s} {100 * top1:6.2f} %  {time.time() - t:7.1f} s  (draw {seed})", flush=True)
        if args.json:
            with open(args.json if args.draws == 1 else f"{args.json}.draw_{seed}", "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1)
    print()
    print(f"| Fashion-MNIST, {args.per_class}/class, draw {seed}, {results['test_images']} test images "
          "| test top-1 | time |")
    print("|---|---|---|")
    for row, r in results["rows"].items():
        print(f"| {row} | {100 * r['top1']:.2f} % | {r['seconds']:.0f} s |")
    return results


def summarise(draws) -> dict:
    """Several draws' results as one: each row's median top-1, its range, and every draw's value."""
    rows = {}
    for row in draws[0]["rows"]:
        values = [d["rows"][row]["top1"] for d in draws if row in d["rows"]]
        seconds = [d["rows"][row]["seconds"] for d in draws if row in d["rows"]]
        rows[row] = {"top1": float(np.median(values)), "min": min(values), "max": max(values), "draws": values,
                     "seconds": float(np.median(seconds))}
    print()
    print(f"| {len(draws)} draws (seeds {', '.join(str(d['seed']) for d in draws)}) | median top-1 | range | "
          "median time |")
    print("|---|---|---|---|")
    for row, r in rows.items():
        print(f"| {row} | {100 * r['top1']:.2f} % | {100 * r['min']:.2f} - {100 * r['max']:.2f} % | "
              f"{r['seconds']:.0f} s |")
    return {**{k: v for k, v in draws[0].items() if k not in ("rows", "seed")},
            "seeds": [d["seed"] for d in draws], "rows": rows, "per_draw": draws}


if __name__ == "__main__":
    main()
