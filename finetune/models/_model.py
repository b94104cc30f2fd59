"""A fine-tunable network (:class:`Model`: cut backbone + new head) and :func:`load_model`."""

from __future__ import annotations

import os

import mxnet as mx
from mxnet.gluon import HybridBlock

from .._context import resolve_ctx
from ..data import Preprocess
from ..errors import ConfigError, ModelError
from .graph import list_layers
from ._backbone import Backbone
from ._io._deployment import is_deployment, load_legacy
from ._headblock import build_head
from ._io._modeldir import _load_params, folder_arg, model_dir_of, read_config, read_consistently
from ._network import _Network

__all__ = ["Model", "load_model"]


class Model(_Network):
    """A fine-tunable network: a cut backbone (:attr:`body`) and a new head (:attr:`head`).

    Built by :meth:`HeadReplacer.apply`; saved with :meth:`save` and read back
    with :func:`load_model`. Follows the model protocol: ``model(x)`` gives
    logits ``(N, num_classes)`` for a normalised ``(N, C, H, W)`` batch.

    Parameters
    ----------
    body : Backbone
        The backbone cut at the feature layer (its output is the feature map).
    head : mx.gluon.HybridBlock
        The new head; its parameter names start with ``head_``.
    head_spec : dict
        The arguments that rebuild ``head`` (see :func:`build_head`).
    class_names : list of str or None
        One name per output.

    Examples
    --------
    Made by :class:`HeadReplacer`; saved and loaded as one directory:

    >>> import os, tempfile, mxnet as mx, numpy as np
    >>> from finetune import HeadReplacer, create_model, load_model
    >>> bb = create_model("mobilenet0.25", weights=None)
    >>> model = HeadReplacer(3).apply(bb, class_names=["cat", "dog", "fish"])
    >>> path = os.path.join(tempfile.mkdtemp(), "model")
    >>> _ = model.save(path)
    >>> again = load_model(path)
    >>> x = mx.nd.ones((1, 3, 64, 64))
    >>> again.class_names, bool(np.array_equal(model(x).asnumpy(), again(x).asnumpy()))
    (['cat', 'dog', 'fish'], True)
    """

    def __init__(self, body, head: HybridBlock, head_spec: dict, *, class_names=None):
        super().__init__(body.preprocess, class_names)
        self.body = body
        self.head = head
        self.head_spec = dict(head_spec)
        if class_names is not None and len(self.class_names) != self.num_classes:
            raise ConfigError(f"{len(self.class_names)} class names were given for a head with "
                              f"{self.num_classes} outputs; give one name per output.")

    def hybrid_forward(self, F, x):
        return self.head(self.body(x))

    def _shaped_backbones(self) -> list:
        return [self.body]

    @property
    def preprocess(self) -> Preprocess:
        """The backbone's :class:`~finetune.Preprocess` (shared with :attr:`body`)."""
        return self.body.preprocess

    @preprocess.setter
    def preprocess(self, value: Preprocess) -> None:
        self.body.preprocess = value

    @property
    def arch(self) -> str:
        """The label of :attr:`body`'s architecture (its ``arch``: the zoo name, the prototxt file, ...)."""
        return self.body.arch

    @property
    def num_classes(self) -> int:
        """Number of outputs of the head."""
        return int(self.head_spec["num_classes"])

    @property
    def num_features(self) -> int:
        """Number of inputs of the head's first dense layer."""
        return int(self.head_spec["in_features"])

    @property
    def feature_layer(self) -> str:
        """The layer the backbone was cut at (output of :attr:`body`)."""
        return self.body.feature_layer

    @property
    def classifier(self) -> str:
        """Name of the head's final dense layer."""
        return "head_classifier_fwd"

    @property
    def layer_names(self) -> list:
        """The body's layer names followed by the head's (``head_...``)."""
        body = self.body.layer_names
        head = [n for n in list_layers(self.to_symbol()) if n.startswith("head_")]
        return body + head

    def to_symbol(self):
        """The whole network (body + head) as one symbol with input ``"data"``."""
        if "symbol" not in self._caches:
            with mx.name.NameManager():
                self._caches["symbol"] = self(mx.sym.var("data"))
        return self._caches["symbol"]

    def freeze_batchnorm(self, layers=None, frozen: bool = True) -> "Model":
        """Make BatchNorm layers of the body use and keep their moving statistics; returns ``self``."""
        self.body.freeze_batchnorm(layers, frozen)
        self._invalidate()
        return self

    def _saved_symbol(self):
        return self.body.to_symbol()

    def _config(self) -> dict:
        return {"graph": self.body._graph_config(), "head": self.head_spec}

    @classmethod
    def load(cls, path, *, ctx=None) -> "Model":
        """Load a model directory written by :meth:`save` (see :func:`load_model`)."""
        model = load_model(path, ctx=ctx)
        if not isinstance(model, cls):
            raise ModelError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}; use finetune.load_model.")
        return model

    def __repr__(self) -> str:
        spec = self.head_spec
        return (f"Model(body={self.body.arch!r} cut at {self.feature_layer!r}, head={spec['num_classes']} classes"
                f"{', hidden=' + str(tuple(spec['hidden'])) if spec.get('hidden') else ''}"
                f"{', dropout=' + str(spec['dropout']) if spec.get('dropout') else ''})")


def load_model(path, *, ctx=None):
    """Load a model directory written by ``save`` (a :class:`Model` or a :class:`Backbone`).

    A deployment folder (:func:`~finetune.export_for_deployment`) is a model
    directory too and loads the same way; a deployment folder of the earlier
    layout (a ``deploy.json`` manifest, no ``config.json``) loads as a
    :class:`Backbone` of its MXNet files.

    Parameters
    ----------
    path : str or os.PathLike
        The directory.
    ctx : None, mx.Context or list
        Devices to put the parameters on (``None``: the current context).

    Returns
    -------
    Model or Backbone
        The same class that was saved, with identical outputs and the
        same :attr:`~Model.inference` record (a directory without one:
        plain, no test-time augmentation).

    Raises
    ------
    MissingFileError
        The folder, its ``config.json`` or its weights are missing.
    ModelError
        A file is corrupt or does not match the graph.

    Examples
    --------
    >>> import finetune as ft, tempfile, os
    >>> bb = ft.create_model("mobilenet0.25", weights=None)
    >>> model = ft.HeadReplacer(3).apply(bb, class_names=["a", "b", "c"])
    >>> folder = model.save(os.path.join(tempfile.mkdtemp(), "m"))
    >>> ft.load_model(folder).class_names
    ['a', 'b', 'c']
    """
    path = model_dir_of(folder_arg("load_model", path))
    if not os.path.isfile(os.path.join(os.fspath(path), "config.json")) and is_deployment(path):
        return load_legacy(path, ctx=ctx)
    return read_consistently(path, lambda: _load(path, ctx))


def _load(path, ctx):
    config = read_config(path)
    kind = config.get("class")
    if kind == "QuantizedModel":
        from ._quantize import load_quantized

        return load_quantized(path, config, ctx=ctx)
    if kind not in ("Backbone", "Model"):
        raise ModelError(f"Unknown model class {kind!r} in {os.fspath(path)!r}.")
    ctxs = resolve_ctx(ctx)
    body, arrays = Backbone._read(path, config, ctxs, with_class_names=kind == "Backbone")
    if kind == "Backbone":
        return body  # with its inference record
    head = build_head(config["head"])
    _load_params(head.collect_params(), arrays, ctxs, where=os.fspath(path))
    model = Model(body, head, config["head"], class_names=config.get("class_names"))
    model.inference = body.inference
    return model
