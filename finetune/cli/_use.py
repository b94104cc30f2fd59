"""Using a model from the command line: ``predict``, ``evaluate``, ``gradcam``, ``export``.

``MODEL`` is a model directory (``Model.save`` / ``Backbone.save``), a
deployment folder (``finetune export``), or a zoo name such as
``efficientnet_lite0`` (``--weights``, as ``create_model(weights=)``: its
ImageNet weights and class names by default, ``none`` for random weights).
"""

from __future__ import annotations

import logging
import sys
from numbers import Real
from pathlib import Path

from .._outputs import PLOTS, adopt_folder
from .._progress import results_printed
from . import _say
from ._options import add_alias, add_shared, count, ctx_of, file_name, number

log = logging.getLogger("finetune")


def register(sub) -> None:
    """Add ``predict``, ``evaluate``, ``gradcam`` and ``export`` to ``sub``."""
    p = sub.add_parser("predict", help="top-k classes of images (files or folders)",
                       description="Classify images with MODEL's own preprocessing and print the top-k "
                       "classes with their softmax probabilities.")
    _model_args(p)
    p.add_argument("images", nargs="+", help="image files, folders, .rec records or .lst/.csv lists")
    p.add_argument("--top-k", type=count(1), default=5, help="classes per image (default: 5)")
    p.add_argument("--names", help="display names: a 'name<TAB>display' text file or a JSON object")
    add_shared(p, "tta")
    _fuse_arg(p)
    add_shared(p, "json")
    p.set_defaults(handler=_predict)

    p = sub.add_parser("evaluate", help="top-1/top-k, per-class accuracy and confusions on labelled images",
                       description="Evaluate MODEL on a .rec file (or its prefix), a .lst / .csv list or "
                       "a class-per-folder tree.")
    _model_args(p)
    p.add_argument("records", help=".rec / prefix, .lst / .csv, or a class-per-folder tree")
    p.add_argument("--top-k", type=count(1), default=5, help="the k of top-k accuracy (default: 5)")
    p.add_argument("--report", type=file_name, help="write the full report as JSON here")
    p.add_argument("--plots", help="write confusion-matrix and most-confident-errors PNGs into this folder")
    add_shared(p, "tta")
    _fuse_arg(p)
    p.set_defaults(handler=_evaluate)

    p = sub.add_parser("gradcam", help="Grad-CAM heat map of one image",
                       description="Where MODEL looks: the Grad-CAM map of IMAGE for its predicted class "
                       "(or --target), overlaid on the image.")
    _model_args(p)
    p.add_argument("image", help="image file")
    p.add_argument("--layer", help="convolutional layer (default: the last one)")
    add_alias(p, "--class", p.add_argument("--target", help="class name, or index when no class has that name (default: the predicted class)"))
    add_shared(p, "out", required=True, metavar="IMAGE", help="overlay image to write (.png / .jpg)")
    p.add_argument("--alpha", type=number(Real, 0, 1), default=0.5, help="weight of the heat map in the overlay")
    p.set_defaults(handler=_gradcam)

    p = sub.add_parser("export", help="a deployment folder: a model directory plus MXNet (and ONNX) files",
                       description="Write MODEL as a deployment folder into --out (a model directory with the "
                       "MXNet graph and weights, and optionally model.onnx) and check the files give the "
                       "same outputs.")
    _model_args(p, batch=False)
    add_shared(p, "out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (mx.onnx exporter)")
    p.add_argument("--name", default="model", help="prefix of the MXNet / ONNX files (default: model)")
    p.add_argument("--int8", action="store_true",
                   help="write an INT8 model directory instead (CPU, oneDNN; needs --calibration)")
    p.add_argument("--calibration", metavar="DATA", nargs="+",
                   help="--int8: image files or folders to calibrate on (a few hundred training images)")
    p.set_defaults(handler=_export)


def _model_args(p, batch: bool = True) -> None:
    p.add_argument("model", metavar="MODEL", help="model directory, deployment folder, MXNet checkpoint prefix "
                   "or zoo name")
    add_shared(p, "weights")
    add_shared(p, "ctx")
    if batch:
        add_shared(p, "batch_size")
        add_shared(p, "workers")


def _fuse_arg(p) -> None:
    p.add_argument("--no-fuse", dest="fuse", action="store_const", const=False, default=None,
                   help="run the network as it is, not its oneDNN-fused copy (Predictor(fuse=False); "
                   "by default a single CPU runs the fused copy)")


def _predictor(args, **kw):
    from ..models import create_model
    from ..use import Predictor

    ctx = ctx_of(args)
    model = create_model(args.model, weights=args.weights, ctx=ctx)
    return Predictor(model, ctx=ctx, batch_size=args.batch_size, workers=args.workers,
                     tta=getattr(args, "tta", None), fuse=getattr(args, "fuse", None), **kw)


def _predict(args) -> int:
    predictor = _predictor(args, names=args.names)
    if predictor.tta:
        log.info("Mirror test-time augmentation is on (%s).",
                 "--tta" if args.tta else "the model's choice; --no-tta turns it off")
    with results_printed():  # unreadable images are rows of the printed table
        preds = predictor.predict(args.images, top_k=args.top_k)
    _say(preds.to_json() if args.json else preds.to_table())
    if preds.errors:
        _say(f"{len(preds.errors)} of {len(preds)} images could not be read.", file=sys.stderr)
    return 0 if len(preds.errors) < len(preds) else 1


def _evaluate(args) -> int:
    from ..data import open_labelled
    from ..use import evaluate

    predictor = _predictor(args)
    dataset = open_labelled(args.records)
    with results_printed():  # unreadable images are listed in the printed report
        report = evaluate(predictor, dataset, top_k=args.top_k)
    _say(report)
    if args.report:
        report.save(args.report)
        log.info("Wrote %s", args.report)
    if args.plots:
        _report_plots(report, Path(args.plots))
    return 0


def _report_plots(report, folder: Path) -> None:
    """The confusion matrix and the most confident errors, each error drawn from the image it was scored on."""
    import numpy as np

    from ..use import Prediction, plot_confusion_matrix, plot_predictions

    adopt_folder(folder, PLOTS, what="plots folder")  # never into a folder of the user's own files
    plot_confusion_matrix(report, path=folder / "confusion_matrix.png")
    wrong = report.most_confident_errors(12)
    if not wrong:
        return
    preds = []
    for w in wrong:
        i = w["index"]
        order = np.argsort(-report.probabilities[i])[:3]
        names = [report.class_names[j] for j in order]
        preds.append(Prediction(w["source"], tuple(order), tuple(names), tuple(report.probabilities[i, order]),
                                label=w["label"], item=report.items[i]))
    plot_predictions(preds, folder / "most_confident_errors.png")
    log.info("Wrote plots into %s", folder)


def _gradcam(args) -> int:
    from ..models import create_model
    from ..use import GradCAM

    ctx = ctx_of(args)
    model = create_model(args.model, weights=args.weights, ctx=ctx)
    target = args.target  # a class name wins; else a whole number is a class index
    if target is not None and target not in (model.class_names or []) and target.lstrip("-").isdigit():
        target = int(target)
    cam = GradCAM(model, layer=args.layer, ctx=ctx[0] if ctx else None)
    result = cam(args.image, target)
    result.save(args.out, alpha=args.alpha)
    _say(f"{args.image}: {result.class_name} ({result.probability:.4f}), layer {result.layer} -> {args.out}")
    return 0


def _export(args) -> int:
    from ..models import create_model
    from ..use import export_for_deployment

    ctx = ctx_of(args)
    model = create_model(args.model, weights=args.weights, ctx=ctx)
    if args.int8:
        return _export_int8(model, args)
    with results_printed():  # printed below
        dep = export_for_deployment(model, args.out, onnx=args.onnx, name=args.name, ctx=ctx[0] if ctx else None)
    _say(f"{'model':<10} {dep.directory}")  # a model directory: load_model, predict, inspect read it
    for key in ("symbol", "params", "onnx"):
        if getattr(dep, key):
            _say(f"{key:<10} {getattr(dep, key)}")
    for runtime, diff in dep.max_diff.items():
        _say(f"verified   {runtime}: max |difference| of the logits {diff:.2e}")
    return 0


def _export_int8(model, args) -> int:
    import mxnet as mx
    import numpy as np

    from ..errors import ConfigError
    from ..models import calibration_batch, quantize

    if not args.calibration:
        raise ConfigError("--int8 needs --calibration DATA: image files or folders to calibrate on.")
    data = calibration_batch(model, args.calibration, limit=500)  # quantize's default num_examples
    q = quantize(model, data)
    agree = []
    for start in range(0, len(data), 64):  # every calibration image, in batches
        x = mx.nd.array(data[start:start + 64])
        agree.append(model(x).asnumpy().argmax(1) == q(x).asnumpy().argmax(1))
    same = float(np.mean(np.concatenate(agree)))
    _say(f"model      {q.save(args.out)}")
    _say(f"verified   int8: top-1 agrees with float32 on {100 * same:.1f} % of {len(data)} calibration images")
    return 0
