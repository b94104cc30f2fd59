"""``finetune convert-caffe``: a Caffe model to MXNet files and a finetune model directory."""

from __future__ import annotations

import logging
import math
import os

from ..errors import ConfigError

log = logging.getLogger("finetune")

_DESCRIPTION = """\
Convert a Caffe network (deploy.prototxt + .caffemodel, old V1 or new format)
without Caffe. Writes into DIR:

  PREFIX-symbol.json, PREFIX-0000.params   an MXNet checkpoint (symbolic API:
                                           mx.model.load_checkpoint(PREFIX, 0))
  PREFIX-preprocess.json                   the input config (BGR, 0-255, mean)
  PREFIX-caffe.json                        layer names, classifier, logits layer
  model/                                   a finetune model directory
                                           (finetune.load_model(DIR/model))

The checkpoint keeps the whole network, including a final Softmax; the model
directory outputs logits (the Softmax input).
"""


def _floats(text: str, what: str, count: int | None = None, *, sizes: bool = False) -> tuple:
    """The finite numbers of ``text`` (``"104,117,123"``); with ``sizes``, whole numbers from 1 to 65536."""
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        values = ()
    if sizes and not all(v.is_integer() and 1 <= v <= 65536 for v in values):
        values = ()
    if not values or (count is not None and len(values) != count) or not all(math.isfinite(v) for v in values):
        n = f"{count} " if count else ""
        kind = "whole numbers from 1 to 65536" if sizes else "finite numbers"
        raise ConfigError(f"The {what} option needs {n}comma-separated {kind}. Got {text!r} instead.")
    return tuple(int(v) for v in values) if sizes else values


def register(subparsers) -> None:
    """Add the ``convert-caffe`` subcommand."""
    import argparse

    p = subparsers.add_parser("convert-caffe", help="convert a Caffe model to MXNet (no Caffe needed)",
                              description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prototxt", help="network definition, e.g. deploy.prototxt")
    p.add_argument("caffemodel", help="trained weights (.caffemodel)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--prefix", default=None,
                   help="file prefix of the MXNet checkpoint (default: the caffemodel's file name)")
    p.add_argument("--mean", default=None, metavar="B,G,R",
                   help="per-channel mean in raw pixels, Caffe (BGR) order, e.g. 104,117,123")
    p.add_argument("--mean-file", default=None, metavar="FILE", help="a Caffe mean.binaryproto")
    p.add_argument("--input-shape", default=None, metavar="C,H,W",
                   help="input shape, if the prototxt declares none (or to override it)")
    p.add_argument("--to-rgb", action="store_true",
                   help="make the network take RGB input (permutes the input channels of the first layers)")
    p.add_argument("--no-model-dir", action="store_true", help="write only the MXNet checkpoint files")
    p.set_defaults(handler=convert)


def convert(args) -> int:
    """Handler of ``finetune convert-caffe``."""
    from .._outputs import CAFFE, adopt_folder
    from ..models import convert_caffe

    mean = _floats(args.mean, "--mean") if args.mean else None
    shape = _floats(args.input_shape, "--input-shape", 3, sizes=True) if args.input_shape else None
    options = dict(input_shape=shape, mean=mean, mean_file=args.mean_file, to_rgb=args.to_rgb)
    net = convert_caffe(args.prototxt, args.caffemodel, **options)
    log.info("Converted %d Caffe layers; classifier %r, logits %r, input %s.", len(net.layer_names),
             net.classifier, net.logits_layer, net.input_shape)
    prefix = args.prefix or os.path.splitext(os.path.basename(args.caffemodel))[0]
    adopt_folder(args.out, CAFFE, what="Caffe conversion folder",  # never into a folder of the user's own files
                 legacy=[prefix + s for s in ("-symbol.json", "-0000.params", "-preprocess.json", "-caffe.json")]
                 + ["model"])
    written = net.save(os.path.join(args.out, prefix))
    if not args.no_model_dir:
        from ..models import Backbone

        backbone = Backbone.from_caffe(args.prototxt, args.caffemodel, **options)
        written.append(backbone.save(os.path.join(args.out, "model")))
    for path in written:
        print(path)
    return 0
