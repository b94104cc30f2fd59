"""Retrieval from the command line: ``extract``, ``index``, ``retrieve``, ``eval-retrieval``.

Descriptors are ``.npy`` files; the ids of their rows (image paths) go to a
text file beside them, ``<name>.ids.txt``, one per line, which ``index``,
``retrieve`` and ``eval-retrieval`` read back. ``index`` builds and saves a
:class:`~finetune.RetrievalIndex` (exact, or a faiss structure) that
``retrieve`` and ``eval-retrieval`` take in place of the descriptors.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import zipfile
from numbers import Real
from typing import NamedTuple

from .._text import read_lines
from ._options import add_alias, add_index_options, add_shared, count, ctx_of, index_kwargs, number
from . import _say

log = logging.getLogger("finetune")


def register(sub) -> None:
    """Add the features subcommands to ``sub``."""
    p = sub.add_parser("extract", help="retrieval descriptors of images (.npy)",
                       description="Extract descriptors of IMAGES from named layers of MODEL (a model "
                       "directory, a zoo name or a saved FeatureExtractor folder), pooled, optionally "
                       "PCA-whitened, L2-normalised.")
    p.add_argument("model", metavar="MODEL", help="model directory, zoo name, or saved extractor folder")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="image files, folders (recursive), .rec records or .lst/.csv lists")
    p.add_argument("--layer", action="append", help="layer name (repeat for several; see 'finetune inspect "
                   "MODEL'; default: the last convolutional block)")
    add_alias(p, "--pool", p.add_argument("--pooling", action="append", metavar="NAME",
                                          help="sum, avg, max, gem, crow, rmac, mop (repeat to concatenate; "
                                               "default: gem)"), kind="append")
    p.add_argument("--gem-p", type=number(Real, 0, None, closed="neither"), default=3.0, help="GeM power (default 3)")
    p.add_argument("--scales", default="1", help="comma-separated scales, e.g. 1,0.7071,0.5")
    p.add_argument("--resize", type=count(1), help="size of the --resize-side at scale 1 (default: the model's)")
    p.add_argument("--resize-side", choices=("shorter", "longer"), default="shorter",
                   help="which image side --resize sets (default: shorter)")
    p.add_argument("--pca", type=count(1), help="PCA-whiten to this many dimensions (needs --fit-on)")
    p.add_argument("--fit-on", help="folder of training images for PCA / MOP (separate from IMAGES)")
    p.add_argument("--queries-of", metavar="GT",
                   help="extract the queries of an Oxford/Paris ground truth (folder or revisited .pkl), "
                        "cropped to their boxes, finding their images in IMAGES")
    p.add_argument("--save-extractor", help="save the (fitted) extractor to this folder")
    add_shared(p, "out", required=True, metavar="NPY", help="descriptor file to write (.npy; ids beside it)")
    add_shared(p, "weights")
    add_shared(p, "ctx")
    add_shared(p, "batch_size")
    add_shared(p, "progress")
    p.set_defaults(handler=_extract)

    p = sub.add_parser("index", help="build and save a search index of descriptors (.npz)",
                       description="Build a RetrievalIndex of DESCRIPTORS (exact, or an approximate faiss index "
                       "with --method) and save it to --out for retrieve / eval-retrieval.")
    p.add_argument("descriptors", metavar="DESCRIPTORS", help="database descriptors (.npy; ids beside it)")
    add_index_options(p)
    add_shared(p, "out", required=True, metavar="NPZ",
               help="index file to write (.npz; a faiss index also writes NPZ.faiss, re-ranking NPZ.vectors.npy)")
    p.set_defaults(handler=_build_index)

    p = sub.add_parser("retrieve", help="top-k search of query descriptors in a database",
                       description="Top-k search of --queries in --index: exact cosine search of descriptors, "
                       "or the search of a saved index (see 'finetune index'). --json prints {query id: [[id, "
                       "score], ...]}; queries that share an id are keyed 'id#row' (row from 0), so none is lost.")
    p.add_argument("--index", required=True, help="database descriptors (.npy) or a saved RetrievalIndex (.npz)")
    p.add_argument("--queries", required=True, help="query descriptors (.npy)")
    p.add_argument("--top-k", type=count(1), default=10, help="results per query (default: 10)")
    p.add_argument("--aqe", type=count(0), default=0, help="average query expansion with this many results")
    p.add_argument("--dba", type=count(0), default=0, help="database-side augmentation with this many neighbours")
    add_shared(p, "json")
    p.set_defaults(handler=_retrieve)

    p = sub.add_parser("eval-retrieval", help="mAP of descriptors under the Oxford / revisited protocols",
                       description="Rank --index for every query and report mAP: Oxford5k/Paris6k "
                       "(--gt folder), revisited ROxford/RParis (--gt .pkl: easy/medium/hard mAP and "
                       "mP@1,5,10) or class-level (--labels/--query-labels). With --gt, the query ids must be "
                       "the ground truth's queries (rows are taken in its order only when there is no ids file and "
                       "the counts match) and the index must hold its images.")
    p.add_argument("--gt", help="ground-truth folder (<query>_good/ok/junk/query.txt) or gnd_*.pkl")
    p.add_argument("--index", required=True,
                   help="database descriptors (.npy), or with --gt also a saved RetrievalIndex (.npz)")
    p.add_argument("--queries", help="query descriptors (.npy); default: leave-one-out on --index")
    p.add_argument("--labels", help="class label of every database row, one per line (class-level mAP)")
    p.add_argument("--query-labels", help="class label of every query row, one per line")
    p.add_argument("--aqe", type=count(0), default=0, help="average query expansion with this many results")
    p.add_argument("--dba", type=count(0), default=0, help="database-side augmentation with this many neighbours")
    add_shared(p, "json")
    p.set_defaults(handler=_eval)


# ------------------------------------------------------------------------ helpers
def _load_descriptors(path: str, *, what: str = "descriptors"):
    """Descriptors and their ids (row numbers without an ids file); refuses an empty file."""
    from ..features import load_descriptors

    return load_descriptors(path, what=what)


def _stem(name: str) -> str:
    return os.path.splitext(os.path.basename(name))[0]


class _Bad(NamedTuple):
    path: str
    reason: str
    detail: str


def _readable(source) -> list:
    """The positions of the items of ``source`` that decode; the others are said (as ``pack`` and ``predict`` do).

    Every item is decoded, so extract calls it only once an image has failed.
    """
    from .._progress import results_printed
    from ..data import ImageList, check
    from ..errors import DataError, FinetuneError
    from ._data import _print_bad

    files = [(k, item) for k, item in enumerate(source) if item.kind == "path"]
    good, bad = set(), []
    if files:
        with results_printed():  # listed below, once
            report = check(ImageList([(k, os.fspath(item.value), 0) for k, item in files]))
        good |= {int(e.index) for e in report.good.entries}
        bad += report.bad
    for k, item in enumerate(source):
        if item.kind != "path":
            try:
                item.read()
                good.add(k)
            except (FinetuneError, OSError) as exc:
                bad.append(_Bad(item.source, "unreadable", str(exc)))
    if bad:
        _say(f"{len(bad)} of {len(source)} images cannot be read and are left out:", file=sys.stderr)
        _print_bad(bad)
        if not good:
            raise DataError("None of the images can be read; nothing was extracted.")
    return sorted(good)


def _load_gt(spec: str):
    from ..features import OxfordGroundTruth, RevisitedGroundTruth

    if os.path.isdir(spec):
        return OxfordGroundTruth.from_folder(spec)
    return RevisitedGroundTruth.load(spec)


def _query_crops(gt, source, ids: list):
    """Cropped query images of a ground truth, their image files found among the items of ``source``."""
    from ..errors import MissingFileError
    from ..features import OxfordGroundTruth, crop_query

    by_stem = {_stem(i): item for i, item in zip(ids, source)}
    if isinstance(gt, OxfordGroundTruth):
        names, boxes, qids = gt.query_images, gt.query_boxes, gt.query_names
    else:
        names, boxes, qids = gt.qimlist, [g["bbx"] for g in gt.gnd], gt.qimlist
    crops = []
    for name, box in zip(names, boxes):
        if name not in by_stem:
            raise MissingFileError(f"Query image {name!r} is not among the images given.")
        img = by_stem[name].read()
        crops.append(crop_query(img, box) if box is not None else img)
    return crops, list(qids)


def _build_extractor(args):
    from ..features import FeatureExtractor, GeM, get_pooling
    from ..errors import ConfigError
    from ..models import create_model

    if os.path.exists(os.path.join(args.model, "extractor.json")):
        return FeatureExtractor.load(args.model, ctx=ctx_of(args))
    names = args.pooling or ["gem"]
    poolings = lambda: [GeM(args.gem_p) if n.lower() == "gem" else get_pooling(n) for n in names]  # noqa: E731
    # no --layer: the extractor takes the last convolutional block
    pooling = {layer: poolings() for layer in args.layer} if args.layer else poolings()
    try:
        scales = tuple(float(s) for s in args.scales.split(","))
    except ValueError:
        raise ConfigError(f"--scales must be comma-separated numbers. Got {args.scales!r}.") from None
    # FeatureExtractor builds a MODEL it is given by name with create_model's default weights
    model = args.model if args.weights == "imagenet" else create_model(args.model, weights=args.weights)
    fx = FeatureExtractor(model, args.layer or None, pooling, ctx=ctx_of(args), batch_size=args.batch_size,
                          scales=scales, resize=args.resize, resize_side=args.resize_side, pca=args.pca)
    if not args.layer:
        _say(f"layer {fx.layers[0]} (the last convolutional block; --layer to choose)", file=sys.stderr)
    return fx


# ----------------------------------------------------------------------- handlers
def _extract(args) -> int:
    from ..errors import ConfigError, ImageDecodeError, MissingFileError
    from ..features import descriptor_ids, image_inputs, save_descriptors

    source = image_inputs(args.images)  # every input listed (and a list whose images are missing refused) first
    fx = _build_extractor(args)
    needs_fit = fx.pca is not None and not fx.pca.fitted
    needs_fit |= any(getattr(p, "fitted", True) is False for pools in fx.poolings.values() for p in pools)
    if needs_fit:
        if not args.fit_on:
            raise ConfigError("PCA / MOP must be learned: give --fit-on with a folder of training images.")
        log.info("Fitting on %s ...", args.fit_on)
        fx.fit(args.fit_on, progress=args.progress)

    def described(source):  # one id per item of the source, never per argument
        ids = descriptor_ids(source)
        images, ids = _query_crops(_load_gt(args.queries_of), source, ids) if args.queries_of else (source, ids)
        return fx.extract(images, progress=args.progress), ids

    try:
        desc, ids = described(source)
    except (ImageDecodeError, MissingFileError):  # only now decode every file, to list the bad ones and leave them out
        good = _readable(source)
        source.items = [source.items[k] for k in good]
        desc, ids = described(source)
    npy, ids_file = save_descriptors(args.out, desc, ids)  # refuses ids that are not one per descriptor
    if args.save_extractor:
        fx.save(args.save_extractor)
    log.info("Wrote %d x %d descriptors to %s (ids in %s).", *desc.shape, npy, ids_file)
    return 0


def _index(path: str, dba: int):
    from ..features import RetrievalIndex

    if path.endswith(".npz"):
        index = RetrievalIndex.load(path)
    else:
        x, ids = _load_descriptors(path)
        index = RetrievalIndex()
        index.add(x, ids=ids)
    if dba:
        index.augment(dba)
    return index


def _build_index(args) -> int:
    from ..features import RetrievalIndex

    index = RetrievalIndex(**index_kwargs(args))  # bad settings fail before the descriptors are read
    x, ids = _load_descriptors(args.descriptors)  # settings the data cannot train fail in save, before faiss
    index.add(x, ids=ids)
    index.save(args.out)
    log.info("Wrote %r to %s.", index, args.out)
    return 0


def _json_keys(qids: list) -> list:
    """A JSON key per query: its id, or ``id#row`` for an id that several queries share (none is dropped)."""
    import collections

    counts = collections.Counter(qids)
    keys = [q if counts[q] == 1 else f"{q}#{row}" for row, q in enumerate(qids)]
    if len(set(keys)) != len(keys):  # an id that already reads 'x#3': number every query
        keys = [f"{q}#{row}" for row, q in enumerate(qids)]
    repeated = [q for q, c in counts.items() if c > 1]
    if repeated:
        log.warning("%d query id(s) are shared by several queries (%s); their JSON keys are 'id#row' (row: the "
                    "query's row, from 0).", len(repeated), ", ".join(repr(q) for q in repeated[:3]))
    return keys


def _retrieve(args) -> int:
    from .._text import cell

    index = _index(args.index, args.dba)
    q, qids = _load_descriptors(args.queries, what="query descriptors")
    scores, ids = index.search(q, args.top_k, aqe=args.aqe)
    if args.json:
        out = {key: [[str(i), round(float(s), 6)] for i, s in zip(row_i, row_s)]
               for key, row_i, row_s in zip(_json_keys(qids), ids, scores)}
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for qid, row_i, row_s in zip(qids, ids, scores):
            for rank, (i, s) in enumerate(zip(row_i, row_s), 1):
                sys.stdout.write(f"{cell(qid)}\t{rank}\t{cell(i)}\t{s:.6f}\n")
    return 0


def _labels(path: str, n: int, of: str):
    """One label per descriptor row of ``of``, from ``path``; else a DataError with both counts."""
    import numpy as np

    from ..errors import DataError

    labels = read_lines(path)
    if len(labels) != n:
        raise DataError(f"{path!r} has {len(labels)} labels for the {n} descriptors of {of!r}; give one label "
                        "per line, one per descriptor row, in the same order.")
    return np.array(labels)


def _class_map(args) -> dict:
    from ..errors import ConfigError
    from ..features import class_retrieval_map

    if args.aqe or args.dba:
        raise ConfigError("--aqe and --dba apply to --gt evaluation (a ranked index); class-level mAP (--labels) "
                          "scores the descriptors as they are. Leave them out, or evaluate with --gt.")
    for given in (args.index, args.queries):
        if given and (given.endswith(".npz") or (os.path.isfile(given) and zipfile.is_zipfile(given))):
            raise ConfigError(f"{given!r} is a saved index: it is accepted only with --gt. Class-level mAP "
                              "(--labels) needs the descriptors: give the .npy that 'finetune extract' wrote.")
    if args.queries and not args.query_labels:
        raise ConfigError("--queries with --labels needs --query-labels.")
    x, _ = _load_descriptors(args.index)
    labels = _labels(args.labels, len(x), args.index)
    if args.queries:
        q, _ = _load_descriptors(args.queries, what="query descriptors")
        m, _ = class_retrieval_map(q, _labels(args.query_labels, len(q), args.queries), x, labels)
    else:
        m, _ = class_retrieval_map(x, labels)
    return {"mAP": m}


def _eval(args) -> int:
    from ..errors import ConfigError
    from ..features import evaluate_ground_truth, load_descriptors

    if args.gt is None:
        if not args.labels:
            raise ConfigError("Give --gt (Oxford/Paris ground truth) or --labels (class-level mAP).")
        result = _class_map(args)
    else:
        if not args.queries:
            raise ConfigError("--gt needs --queries (extract them with 'finetune extract --queries-of GT').")
        gt = _load_gt(args.gt)
        index = _index(args.index, args.dba)
        q, qids = load_descriptors(args.queries, row_ids=False, what="query descriptors")
        result = evaluate_ground_truth(gt, index, q, qids, aqe=args.aqe, source=repr(args.queries),
                                       index_source=repr(args.index))
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif "easy" in result:
        sys.stdout.write("setup\tmAP\tmP@1\tmP@5\tmP@10\n")
        for k, v in result.items():
            sys.stdout.write(f"{k}\t{100 * v['mAP']:.2f}\t" + "\t".join(f"{100 * p:.2f}" for p in v["mP@k"].values()) + "\n")
    else:
        sys.stdout.write(f"mAP\t{100 * result['mAP']:.2f}\n")
    return 0
