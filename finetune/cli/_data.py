"""Data subcommands: ``im2rec`` (drop-in for MXNet's tools/im2rec.py), ``split``,
``check``, ``pack``, ``mean``, ``balance`` and ``fashion-mnist``."""

from __future__ import annotations

import argparse
import logging
import os
import random
from numbers import Integral, Real

from .._progress import results_printed
from . import _say
from ._options import add_alias, add_out, add_shared, count, name_part, number, prefix

log = logging.getLogger("finetune")

_IM2REC_EXTS = [".jpeg", ".jpg", ".png"]
class _Extensions(argparse.Action):
    """``--exts .jpg .png``, ``--exts=.jpg,.png`` or a Python list as in ``--exts=['.jpg','.png']``."""

    def __call__(self, parser, namespace, values, option_string=None):
        exts = []
        for value in values if isinstance(values, list) else [values]:
            for item in value.replace("[", " ").replace("]", " ").replace(",", " ").split():
                item = item.strip("'\"").lower()
                if item:
                    exts.append(item if item.startswith(".") else "." + item)
        if not exts:
            parser.error(f"{option_string}: no extension given")
        setattr(namespace, self.dest, exts)


def register(sub) -> None:
    """Add the data subcommands to ``sub``."""
    _register_im2rec(sub)
    p = sub.add_parser("split", help="list a class-per-folder tree into stratified .lst files",
                       usage="%(prog)s ROOT --out PREFIX [options]",
                       description="Scan ROOT (one folder per class) and write PREFIX_<part>.lst "
                       "files plus PREFIX_classes.txt, split per class with a seed.")
    p.add_argument("root", help="folder with one sub-folder per class")
    add_out(p, "PREFIX", metavar="PREFIX", type=prefix, help="output prefix, e.g. data/flowers (required)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--ratios", type=number(Real, 0, 1, closed="right"), nargs="+", default=[0.8, 0.2],
                       help="fraction of each class per part (default: 0.8 0.2)")
    group.add_argument("--per-class", type=count(1), help="N images per class in the first part, the rest in the second")
    add_alias(p, "--names", p.add_argument("--part-names", nargs="+", metavar="NAME", type=name_part,
                                           help="names of the parts (default: train val [test])"))
    add_shared(p, "seed")
    p.add_argument("--exts", nargs="+", default=None, action=_Extensions,
                   help="image extensions (default: common formats)")
    p.add_argument("--no-recursive", dest="recursive", action="store_false")
    p.add_argument("--no-shuffle", dest="shuffle", action="store_false", help="keep the .lst lines in scan order")
    p.set_defaults(handler=_split)

    p = sub.add_parser("check", help="decode every image and report the bad ones")
    p.add_argument("source", help="image folder or .lst / .csv file")
    p.add_argument("--root", help="image root for a .lst / .csv (default: its folder)")
    add_shared(p, "workers")
    _min_size(p)
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a file is bad")
    add_shared(p, "out", metavar="CSV", help="write every bad file to this CSV (path,reason,detail); "
               "the summary shows the first 20")
    p.set_defaults(handler=_check)

    p = sub.add_parser("pack", help="pack a folder or .lst into PREFIX.rec + PREFIX.idx",
                       usage="%(prog)s SOURCE --out PREFIX [options]")
    p.add_argument("source", help="image folder or .lst / .csv file")
    add_out(p, "PREFIX", metavar="PREFIX", type=prefix, help="output prefix: PREFIX.rec, PREFIX.idx (required)")
    p.add_argument("--root", help="image root for a .lst / .csv (default: its folder)")
    _pack_options(p)
    add_alias(p, "--num-thread", add_shared(p, "workers"))
    p.set_defaults(handler=_pack)

    p = sub.add_parser("mean", help="compute a mean image (mean.bin) and RGB mean/std of a .rec",
                       usage="%(prog)s REC --out MEAN_BIN --size H W [options]")
    p.add_argument("rec", help=".rec file or its prefix")
    add_out(p, "OUTPUT", metavar="MEAN_BIN", help="mean.bin to write (MXNet format, RGB) (required)")
    p.add_argument("--size", type=count(1), nargs=2, required=True, metavar=("H", "W"))
    p.add_argument("--resize", type=count(1), default=None, help="shorter side before the centre crop")
    add_shared(p, "workers")
    p.set_defaults(handler=_mean)

    p = sub.add_parser("balance", help="oversample the classes of a training .lst up to a target",
                       usage="%(prog)s LST --out LST --target N --out-dir DIR [options]")
    p.add_argument("lst", help="training .lst")
    add_out(p, "OUTPUT", metavar="LST", help="the balanced .lst to write (required)")
    p.add_argument("--target", type=count(1), required=True, help="images per class")
    p.add_argument("--out-dir", required=True, help="where the new images go")
    p.add_argument("--root", help="image root of the .lst (default: its folder)")
    add_shared(p, "seed")
    p.set_defaults(handler=_balance)

    p = sub.add_parser("fashion-mnist", help="write a class-per-folder PNG sample of Fashion-MNIST",
                       usage="%(prog)s --out DIR [options]")
    add_out(p, "OUTPUT", metavar="DIR", help="folder to create (required)")
    p.add_argument("--per-class", type=count(1), default=100, help="images per class (default: 100)")
    p.add_argument("--split", choices=["train", "test"], default="train")
    p.add_argument("--size", type=number(Integral, 1, 4096), default=None, help="upscale to SIZE x SIZE")
    add_shared(p, "seed")
    p.set_defaults(handler=_fashion)


def _pack_options(p):
    p.add_argument("--pass-through", action="store_true", help="store the files unchanged (still checked)")
    p.add_argument("--resize", type=count(0), default=0, help="resize the shorter side to this (0: keep)")
    p.add_argument("--center-crop", action="store_true", help="crop the centre square first")
    p.add_argument("--quality", type=number(Integral, 0, 100), default=None,
                   help="JPEG quality 1-100 (default 95) or PNG compression 0-9 (default 3)")
    p.add_argument("--color", type=number(Integral, -1, 1), default=1, choices=[-1, 0, 1],
                   help="1: colour, 0: greyscale, -1: unchanged")
    p.add_argument("--encoding", default=".jpg", choices=[".jpg", ".png"])
    p.add_argument("--pack-label", action="store_true", help="store multi-value labels whole")
    _min_size(p)


def _min_size(p):
    """``--min-size``, the one size rule ``check`` and ``pack`` share."""
    p.add_argument("--min-size", type=count(1), default=1, metavar="PIXELS",
                   help="leave out images whose shorter side is below this (default: %(default)s)")


def _register_im2rec(sub):
    p = sub.add_parser(
        "im2rec", help="drop-in for MXNet's tools/im2rec.py",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Create image lists (--list) or pack every PREFIX*.lst into .rec/.idx files, "
        "like MXNet's tools/im2rec.py, but: bad images are skipped and reported (never a crash), "
        "the split is stratified per class, the class map is written to PREFIX_classes.txt, "
        "records keep the list order with any number of workers, files appear atomically.")
    p.add_argument("prefix", help="prefix of input/output lst and rec files")
    p.add_argument("root", help="path to folder containing images")
    g = p.add_argument_group("Options for creating image lists")
    g.add_argument("--list", action="store_true", help="create PREFIX.lst (or _train/_val/_test) from ROOT")
    g.add_argument("--exts", nargs="+", default=_IM2REC_EXTS, action=_Extensions,
                   help="acceptable image extensions (also --exts=['.jpg','.png'])")
    g.add_argument("--chunks", type=count(1), default=1, help="number of chunks")
    g.add_argument("--train-ratio", type=number(Real, 0, 1), default=1.0, help="ratio of images for training")
    g.add_argument("--test-ratio", type=number(Real, 0, 1), default=0.0, help="ratio of images for testing")
    g.add_argument("--recursive", action="store_true", help="one label per sub-folder")
    g.add_argument("--no-shuffle", dest="shuffle", action="store_false", help="do not shuffle the .lst")
    g.add_argument("--seed", type=number(Integral, 0, 2 ** 32 - 1), default=100, help="seed of the shuffle and of the split")
    r = p.add_argument_group("Options for creating database")
    _pack_options(r)
    # stock im2rec.py's spelling, kept here (not deprecated): this command is its drop-in
    r.add_argument("--num-thread", "--workers", dest="workers", type=count(0), default=None,
                   help="worker processes (default: all cores); record order is always the list order")
    p.set_defaults(handler=_im2rec)


# ---------------------------------------------------------------- handlers
def _scan(root, **options):
    """``ImageList.from_folder``; the files it skips are printed by the command (:func:`_print_skipped`)."""
    from ..data import ImageList

    with results_printed():
        return ImageList.from_folder(root, **options)


def _source_list(source, root=None, exts=None):
    """A folder, ``.lst`` or ``.csv`` as an ImageList, read as the API reads it (``ImageList.from_path``)."""
    from ..data import DEFAULT_EXTS, ImageList

    with results_printed():  # a folder's skipped files are printed by the command (:func:`_print_skipped`)
        return ImageList.from_path(source, root=root, exts=exts or DEFAULT_EXTS)


def _im2rec(args) -> int:
    from ..errors import ConfigError

    args.prefix, args.root = os.path.abspath(args.prefix), os.path.abspath(args.root)
    if args.list:
        return _im2rec_list(args)
    working_dir = args.prefix if os.path.isdir(args.prefix) else os.path.dirname(args.prefix)
    lists = sorted(os.path.join(working_dir, f) for f in os.listdir(working_dir)
                   if os.path.join(working_dir, f).startswith(args.prefix) and f.endswith(".lst"))
    if not lists:
        raise ConfigError(f"No list file with prefix {args.prefix!r}; create one with --list first.")
    for lst in lists:
        _pack_one_list(args, lst)
    return 0


def _im2rec_list(args) -> int:
    from ..data import write_class_names
    from ..errors import ConfigError

    train, test = args.train_ratio, args.test_ratio
    if not (0 <= train <= 1 and 0 <= test <= 1 and train + test <= 1 + 1e-9):
        raise ConfigError(f"--train-ratio and --test-ratio must be in [0, 1] with a sum <= 1. "
                          f"Got {train} and {test}.")
    images = _scan(args.root, exts=args.exts, recursive=args.recursive)
    order = list(range(len(images)))
    if args.shuffle:
        random.Random(args.seed).shuffle(order)
    size = -(-len(order) // args.chunks) if order else 0
    for c in range(args.chunks):
        chunk = images.subset(order[c * size:(c + 1) * size])
        stem = args.prefix + (f"_{c}" if args.chunks > 1 else "")
        val = max(0.0, 1.0 - train - test)
        names, ratios = zip(*[(n, r) for n, r in (("train", train), ("val", val), ("test", test))
                              if r > 0 or n == "train"])
        parts = chunk.split(ratios, seed=args.seed) if len(ratios) > 1 and len(chunk) else (chunk,) * len(ratios)
        for name, part in zip(names, parts):  # all in training: PREFIX.lst, as im2rec names it
            part.write_lst(stem + ("" if train == 1.0 else f"_{name}") + ".lst", shuffle=args.shuffle,
                           seed=args.seed, classes_path=args.prefix + "_classes.txt")
    write_class_names(args.prefix + "_classes.txt", images.class_names)
    for label, name in enumerate(images.class_names):
        _say(name, label)
    _print_skipped(images)
    return 0


def _pack_one_list(args, lst) -> None:
    from ..data import ImageList

    images = ImageList.from_lst(lst, root=args.root)
    if not len(images):  # e.g. the val list of a split that left none: nothing to pack
        _say(f"Skipping {lst}: it lists no images.")
        return
    _say(f"Creating .rec file from {lst} in {os.path.dirname(lst)}")
    report = _run_pack(images, os.path.splitext(lst)[0], args)
    _say(f"{report.written} images written to {report.rec}; {len(report.bad)} skipped.")
    _print_bad(report.bad)


def _run_pack(images, prefix, args):
    from ..data import pack

    with results_printed():  # the caller prints the report and its skipped files
        return pack(images, prefix, resize=args.resize, center_crop=args.center_crop,
                    quality=args.quality, encoding=args.encoding, pass_through=args.pass_through,
                    color=args.color, workers=args.workers, pack_label=args.pack_label,
                    min_size=args.min_size)


def _split(args) -> int:
    from ..data import DEFAULT_EXTS
    from ..errors import ConfigError

    images = _scan(args.root, exts=args.exts or DEFAULT_EXTS, recursive=args.recursive)
    if not len(images):
        from ..errors import DataError

        raise DataError(f"{args.root!r} holds no images to split (extensions {sorted(args.exts or DEFAULT_EXTS)}"
                        f"{'' if args.recursive else ', its sub-folders not walked: --no-recursive'}); nothing was "
                        "written. Give the folder that holds one sub-folder of images per class.")
    if args.per_class:
        parts = images.split(per_class=args.per_class, seed=args.seed)
    else:
        parts = images.split(args.ratios, seed=args.seed)
    names = args.part_names or ["train", "val", "test"][:len(parts)]
    if len(names) != len(parts) or len(set(names)) != len(names):
        raise ConfigError(f"--part-names needs {len(parts)} different names for {len(parts)} parts. Got {names}.")
    from ..data import write_lists

    classes = args.out + "_classes.txt"
    lists = {f"{args.out}_{name}.lst": part for name, part in zip(names, parts)}
    write_lists(lists, classes, shuffle=args.shuffle, seed=args.seed)  # all parts, or none
    for path, part in lists.items():
        _say(f"{path}: {len(part)} images")
        if not len(part):
            log.warning("%s lists no image: the classes have too few images for this split", path)
    _say(f"{classes}: {len(images.class_names)} classes")
    _print_skipped(images)
    return 0


def _print_skipped(images) -> None:
    if images.skipped:
        _say(f"skipped {sum(images.skipped.values())} file(s) with other extensions: {images.skipped}")


def _print_bad(bad) -> None:
    """The first MAX_LISTED skipped files one per line, the rest counted per reason."""
    from .._listing import MAX_LISTED, count_line

    for b in bad[:MAX_LISTED]:
        _say(f"  skipped {b.path}: {b.reason} ({b.detail})")
    if len(bad) > MAX_LISTED:
        _say("  " + count_line(len(bad) - MAX_LISTED, "skipped", [b.reason for b in bad[MAX_LISTED:]]))


def _write_bad(path, bad) -> None:
    """Every bad file as ``path,reason,detail`` CSV rows (names byte-exact), atomically."""
    import csv

    from .._text import atomic_text

    with atomic_text(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "reason", "detail"])
        writer.writerows((b.path, b.reason, b.detail) for b in bad)


def _check(args) -> int:
    from ..data import check
    from .._listing import MAX_LISTED

    images = _source_list(args.source, args.root)
    with results_printed():  # printed below, once
        report = check(images, workers=args.workers, min_size=args.min_size)
    _say(report.summary())
    if not len(images):
        log.warning("%s holds no images: nothing was checked%s.", args.source,
                    " (--strict: exit status 1, since nothing is vouched for)" if args.strict else "")
        return 1 if args.strict else 0
    if args.out:
        _write_bad(args.out, report.bad)
        _say(f"{args.out}: {len(report.bad)} bad file(s)")
    elif len(report.bad) > MAX_LISTED:
        _say("  (write every bad file to a CSV with --out FILE)")
    _print_skipped(images)
    return 1 if args.strict and report.bad else 0


def _pack(args) -> int:
    images = _source_list(args.source, args.root)
    _print_skipped(images)
    report = _run_pack(images, args.out, args)
    _say(f"{report.written} images written to {report.rec} in {report.seconds:.1f} s; "
          f"{len(report.bad)} skipped.")
    _print_bad(report.bad)
    return 0


def _mean(args) -> int:
    from ..data import MeanImage
    from ..errors import ConfigError

    if args.resize is not None and args.resize < max(args.size):
        raise ConfigError(f"--resize {args.resize} is smaller than --size {args.size[0]} {args.size[1]}: the centre "
                          f"crop would not fit in the resized image. Give --resize {max(args.size)} or more, or "
                          "leave it out (the crop then takes the full shorter side).")
    mean = MeanImage.compute(args.rec, size=tuple(args.size), resize=args.resize, workers=args.workers)
    mean.save(args.out)
    _say(f"{args.out}: {mean!r}")
    return 0


def _balance(args) -> int:
    from ..data import ImageList, balance

    images = ImageList.from_lst(args.lst, root=args.root)
    out = balance(images, args.target, args.out_dir, seed=args.seed)
    out.write_lst(args.out, seed=args.seed)
    _say(f"{args.out}: {len(out)} images ({len(out) - len(images)} new in {args.out_dir})")
    return 0


def _fashion(args) -> int:
    from ..data import write_fashion_mnist_folder

    images = write_fashion_mnist_folder(args.out, args.per_class, split=args.split,
                                        seed=args.seed, size=args.size)
    _say(f"{args.out}: {len(images)} images in {len(images.class_names)} classes")
    return 0
