"""One way in: :func:`create_model` turns every supported source into a protocol model.

Every consumer (:class:`~finetune.Predictor`, :class:`~finetune.GradCAM`,
:class:`~finetune.FeatureExtractor`, the command line) builds its model here,
so "which weights?" has one answer everywhere: ``weights="imagenet"``, the
pretrained weights of a zoo architecture (what a model directory, deployment,
Caffe pair, checkpoint or block carries for the others); ``weights=None``:
random initialisation.
"""

from __future__ import annotations

import glob
import os
import re

import mxnet as mx

from ..errors import ConfigError, MissingFileError, ModelError, UnknownNameError
from ._backbone import Backbone
from ._block import BlockModel
from ._model import load_model
from ._protocol import ModelProtocol
from ._zoo import list_backbones

__all__ = ["PRETRAINED", "create_model"]

_CAFFE_EXTS = (".prototxt", ".caffemodel")


PRETRAINED = "imagenet"


def create_model(spec, *, weights=PRETRAINED, ctx=None, preprocess=None, class_names=None, **options):
    """A network meeting :class:`~finetune.ModelProtocol`, from any supported source.

    Parameters
    ----------
    spec : str, path-like, tuple or mx.gluon.HybridBlock
        What to build or load:

        - a zoo name (see :func:`~finetune.list_backbones`), e.g. ``"resnet50_v1b"``;
        - a model directory (written by ``save``);
        - a deployment folder (written by :func:`~finetune.export_for_deployment`: a model
          directory with MXNet / ONNX files, or a ``deploy.json`` folder of the earlier layout);
        - a Caffe pair ``(prototxt, caffemodel)``, or a ``.prototxt`` with
          ``weights=caffemodel``;
        - an MXNet checkpoint prefix (``prefix-symbol.json`` +
          ``prefix-NNNN.params``);
        - a Gluon ``HybridBlock`` returning logits: returned as it is when it
          already meets the protocol, else wrapped in a
          :class:`~finetune.models.BlockModel` sharing its parameters.
    weights : "imagenet", None, str, path-like or int
        ``"imagenet"`` (the default, the same for every caller): the
        pretrained weights — for a zoo name its ImageNet weights (from the
        entry's :class:`~finetune.models.zoo.Weights` record; a
        :class:`~finetune.errors.MissingWeightsError` says how to get them
        when they are not on this machine), for a checkpoint prefix its newest
        epoch, for a model directory, deployment, Caffe pair or block the
        weights it carries. ``None``: random initialisation (zoo names only).
        A ``.params`` / ``.pth`` file for a zoo name (see
        :meth:`Backbone.from_zoo`); the ``.caffemodel`` for a ``.prototxt``;
        the epoch (an int) for a checkpoint prefix.
    ctx : None, mx.Context, str or list
        Where to put the parameters of loaded networks (``None``: the current
        context).
    preprocess : Preprocess or None
        The preprocessing of a block or checkpoint that does not carry one.
    class_names : list of str or None
        Class names of a block or checkpoint that does not carry them.
    **options
        Passed on to :meth:`Backbone.from_zoo` (``num_classes``),
        :meth:`Backbone.from_caffe` (``mean``, ``mean_file``,
        ``input_shape``, ``to_rgb``) or :meth:`Backbone.from_checkpoint`
        (``classifier``, ``feature_layer``).

    Returns
    -------
    ModelProtocol
        A :class:`~finetune.Backbone`, a :class:`~finetune.Model`, a
        :class:`~finetune.models.BlockModel` or the given block.

    Raises
    ------
    UnknownNameError
        A string that is neither a path nor a zoo name (with "did you mean").
    MissingFileError
        A path that does not exist.
    MissingWeightsError
        The pretrained weights of a zoo name are not on this machine and
        cannot be downloaded (pass ``weights=None`` for random weights).
    ModelError
        A block without preprocessing, or files that cannot be read.
    ConfigError
        A ``spec`` of an unsupported type, or options that do not apply.

    Examples
    --------
    >>> import os, tempfile
    >>> import finetune as ft
    >>> ft.create_model("efficientnet_lite0").class_names[:2]  # packaged ImageNet weights
    ['tench', 'goldfish']
    >>> bb = ft.create_model("mobilenet0.25", weights=None)  # random weights
    >>> folder = bb.save(os.path.join(tempfile.mkdtemp(), "bb"))
    >>> again = ft.create_model(folder)                      # a model directory
    >>> type(again).__name__, again.layer_names == bb.layer_names
    ('Backbone', True)
    """
    if isinstance(spec, mx.gluon.Block):
        return _from_block(spec, preprocess, class_names, weights, options)
    if isinstance(spec, tuple):
        if len(spec) != 2:
            raise ConfigError(f"A Caffe model is a pair (prototxt, caffemodel). Got {len(spec)} items instead.")
        _no_options("a (prototxt, caffemodel) pair", weights, None, None, {})
        return _from_caffe(spec[0], spec[1], ctx, options)
    if not isinstance(spec, (str, os.PathLike)):
        raise ConfigError(
            f"create_model cannot build a model from a {type(spec).__name__}. Pass a zoo name, a model "
            "directory, a deployment folder, a (prototxt, caffemodel) pair, an MXNet checkpoint prefix or "
            "a Gluon HybridBlock following the model protocol."
        )
    path = os.fspath(spec)
    if os.path.isdir(path):
        _no_options("a model directory or deployment folder", weights, preprocess, class_names, options)
        return load_model(path, ctx=ctx)  # a deployment folder is a model directory (or, earlier, deploy.json)
    if path.lower().endswith(".prototxt"):
        if weights is None or weights == PRETRAINED:
            raise ConfigError("A .prototxt needs its weights: give its .caffemodel (--weights model.caffemodel on "
                              "the command line; weights='model.caffemodel' or spec=(prototxt, caffemodel) in "
                              "Python).")
        return _from_caffe(path, weights, ctx, options)
    if os.path.isfile(f"{path}-symbol.json"):
        return _from_checkpoint(path, weights, ctx, preprocess, class_names, options)
    names = list_backbones()
    if path in names:
        if preprocess is not None or class_names is not None:
            raise ConfigError("Zoo networks carry their own preprocessing and class names; "
                              "do not pass preprocess= or class_names= with a zoo name.")
        _known_options("a zoo name", options, ("num_classes",))
        if isinstance(weights, str) and weights.lower() == "none" and not os.path.exists(weights):
            weights = None  # as the command line's --weights none: random weights
        return Backbone.from_zoo(path, weights=weights, ctx=ctx, **options)
    if os.sep in path or "/" in path or os.path.exists(path):
        raise MissingFileError(f"{path!r} is not a model directory, a deployment folder, a Caffe prototxt "
                               "or an MXNet checkpoint prefix (nor a zoo name).")
    raise UnknownNameError("model", path, names)


def _known_options(what: str, options: dict, known: tuple) -> None:
    """Raise ConfigError naming create_model and its parameters for an option ``what`` does not take."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"create_model got unexpected keyword argument(s) {', '.join(map(repr, unknown))} for "
                          f"{what}. Its parameters are spec, weights, ctx, preprocess, class_names and, for {what}, "
                          f"{', '.join(known)}.")


def _no_options(what, weights, preprocess, class_names, options) -> None:
    given = (["weights"] if weights != PRETRAINED else []) + [
        k for k, v in (("preprocess", preprocess), ("class_names", class_names)) if v is not None] + sorted(options)
    if given:
        raise ConfigError(f"{', '.join(given)} cannot be given for {what}: it carries its own.")


def _from_block(block, preprocess, class_names, weights, options):
    if weights != PRETRAINED or options:
        raise ConfigError("weights= and other options do not apply to a Gluon block; load its parameters "
                          "first (block.load_parameters).")
    if isinstance(block, ModelProtocol) and preprocess is None and class_names is None:
        return block
    if getattr(block, "int8", False) is True:  # int8 weights cannot be traced for layers or gradients
        if preprocess is not None or class_names is not None:
            raise ConfigError("An int8 model carries its own preprocessing and class names; do not pass "
                              "preprocess= or class_names= with it.")
        return block
    if not isinstance(block, mx.gluon.HybridBlock):
        raise ModelError(f"A model must be a Gluon HybridBlock (it is traced into a graph); "
                         f"got a {type(block).__name__}.")
    return BlockModel(block, preprocess=preprocess, class_names=class_names)


def _from_caffe(prototxt, caffemodel, ctx, options):
    for p, kind in ((prototxt, ".prototxt"), (caffemodel, ".caffemodel")):
        if not isinstance(p, (str, os.PathLike)):
            raise ConfigError(f"A Caffe model is a pair of paths (prototxt, caffemodel); its {kind} is a "
                              f"{type(p).__name__}.")
    _known_options("a Caffe model", options, ("mean", "mean_file", "input_shape", "to_rgb"))
    return Backbone.from_caffe(prototxt, caffemodel, ctx=ctx, **options)


def _from_checkpoint(prefix, epoch, ctx, preprocess, class_names, options):
    if epoch == PRETRAINED:
        found = [re.fullmatch(r".*-(\d{4})\.params", p) for p in glob.glob(glob.escape(prefix) + "-*.params")]
        epochs = sorted(int(m.group(1)) for m in found if m)
        if not epochs:
            raise MissingFileError(f"The checkpoint {prefix!r} has {prefix}-symbol.json but no "
                                   f"{os.path.basename(prefix)}-NNNN.params.")
        epoch = epochs[-1]
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise ConfigError(f"For an MXNet checkpoint, 'weights' is the epoch (an int). Got {epoch!r} instead.")
    _known_options("an MXNet checkpoint", options, ("classifier", "feature_layer"))
    return Backbone.from_checkpoint(prefix, epoch, preprocess=preprocess, class_names=class_names, ctx=ctx,
                                    **options)
