"""The model protocol shared by :class:`Backbone` and :class:`Model`, model directories, and export.

A **model directory** is what ``model.save(dir)`` writes and
:func:`load_model` reads — the unit that training writes and prediction,
evaluation and feature extraction read::

    dir/
      config.json      format version, library versions, class ("Backbone" or "Model"),
                       preprocessing, class names, graph metadata, head spec
      symbol.json      the backbone graph (for a Model: the cut backbone, i.e. the body)
      weights.params   every parameter by its stable name (mx.nd.save)
      mean_image.npy   only when the preprocessing has a mean image

Writes are atomic: everything is written into a temporary sibling folder
that then replaces ``dir`` in one rename, so a crash never leaves a
half-written model behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock

from .._context import resolve_ctx
from .._version import __version__
from ..data import Preprocess
from ..errors import ConfigError, MissingFileError, ModelError
from . import _graph

__all__ = ["Model", "load_model"]

log = logging.getLogger(__name__)

FORMAT = "finetune-model"
FORMAT_VERSION = 1


def _check_preprocess(preprocess):
    if not isinstance(preprocess, Preprocess):
        raise ConfigError(f"The 'preprocess' parameter must be a finetune.Preprocess. "
                          f"Got {type(preprocess).__name__} instead.")
    return preprocess


class _Cache:
    """Derived blocks (feature extractors, probes, the traced graph) of a network.

    Not a dict, so Gluon does not mistake it for a container of child blocks.
    """

    def __init__(self):
        self._items = {}

    def get(self, key, default=None):
        return self._items.get(key, default)

    def __contains__(self, key) -> bool:
        return key in self._items

    def __getitem__(self, key):
        return self._items[key]

    def __setitem__(self, key, value) -> None:
        self._items[key] = value

    def clear(self) -> None:
        self._items.clear()


class _Network(HybridBlock):
    """Base of every finetune network: the members of the model protocol built on ``to_symbol()``."""

    def __init__(self, preprocess: Preprocess, class_names=None):
        super().__init__(prefix="")
        self._preprocess = _check_preprocess(preprocess)
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self._caches = _Cache()

    @property
    def preprocess(self) -> Preprocess:
        """The :class:`~finetune.Preprocess` the network expects."""
        return self._preprocess

    @preprocess.setter
    def preprocess(self, value: Preprocess) -> None:
        self._preprocess = _check_preprocess(value)

    # ----------------------------------------------------------------- graph
    def to_symbol(self):
        """The whole network as an MXNet symbol with input ``"data"`` (output: logits)."""
        raise NotImplementedError

    def _invalidate(self) -> None:
        self._caches.clear()
        self._clear_cached_op()

    @property
    def layer_names(self) -> list:
        """Names accepted by :meth:`features`, in graph order (input → output)."""
        return _graph.list_layers(self.to_symbol())

    @property
    def num_parameters(self) -> int:
        """Number of scalar parameters (weights, biases and BatchNorm statistics)."""
        return int(sum(np.prod(p.shape) for p in self.collect_params().values()))

    def features(self, x, layers) -> list:
        """Outputs of the named layers for a batch.

        Parameters
        ----------
        x : mx.nd.NDArray
            ``(N, C, H, W)`` float32, normalised with :attr:`preprocess`.
        layers : str or list of str
            Layer names (see :attr:`layer_names`).

        Returns
        -------
        list of mx.nd.NDArray
            One array per requested layer, in the order asked.

        Raises
        ------
        UnknownNameError
            A name that is not a layer (with "did you mean").
        """
        names = [layers] if isinstance(layers, str) else list(layers)
        key = ("features", tuple(names))
        block = self._caches.get(key)
        if block is None:
            out = _graph.layer_output(self.to_symbol(), names)
            block = mx.gluon.SymbolBlock(out, _graph.data_var(), params=self.collect_params())
            self._caches[key] = block
        out = block(x)
        return [out] if isinstance(out, mx.nd.NDArray) else list(out)

    def probe(self, layer: str):
        """A block ``f(x, delta) -> (logits, activation)`` for gradients w.r.t. ``layer``.

        See :func:`finetune.models._graph.probe_block`; :meth:`layer_gradient` uses it.
        """
        key = ("probe", layer)
        if key not in self._caches:
            self._caches[key] = _graph.probe_block(self.to_symbol(), layer, self.collect_params())
        return self._caches[key]

    def layer_gradient(self, x, layer: str, class_index=None):
        """Activation of ``layer`` and the gradient of a class score with respect to it (Grad-CAM).

        Parameters
        ----------
        x : mx.nd.NDArray
            ``(N, C, H, W)`` normalised batch.
        layer : str
            A layer name.
        class_index : int, sequence of int or None
            The class whose logit is differentiated, per image; ``None`` takes
            each image's top class.

        Returns
        -------
        (mx.nd.NDArray, mx.nd.NDArray, mx.nd.NDArray)
            ``(activation, gradient, logits)``; ``activation`` and
            ``gradient`` have the layer's shape, e.g. ``(N, C, h, w)``.

        Notes
        -----
        Parameter gradients are written as a side effect (as by any
        ``backward``); parameters with ``grad_req="null"`` are untouched.
        """
        block = self.probe(layer)
        act = block.activation(x)
        delta = mx.nd.zeros_like(act)
        delta.attach_grad()
        with mx.autograd.record(train_mode=False):
            logits, act = block(x, delta)
            if class_index is None:
                index = logits.argmax(axis=1)
            else:
                index = mx.nd.array(np.broadcast_to(np.asarray(class_index), (x.shape[0],)), ctx=x.context)
            score = mx.nd.pick(logits, index, axis=1).sum()
        score.backward()
        return act, delta.grad, logits

    # ------------------------------------------------------------ persistence
    def _param_arrays(self) -> dict:
        """``{name: NDArray on cpu}`` of every parameter (a copy)."""
        arrays = {}
        for name, p in self.collect_params().items():
            arrays[name] = p.data(p.list_ctx()[0]).copyto(mx.cpu())
        return arrays

    def _config(self) -> dict:
        raise NotImplementedError

    def save(self, path) -> str:
        """Write a model directory (see :mod:`finetune.models`); returns its path.

        An existing model directory at ``path`` is replaced atomically; any
        other existing non-empty folder is refused.
        """
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "finetune_version": __version__,
            "mxnet_version": mx.__version__,
            "class": type(self).__name__,
            "preprocess": self.preprocess.to_dict(),
            "class_names": self.class_names,
            **self._config(),
        }
        files = {"symbol.json": self._saved_symbol().tojson()}
        return _write_model_dir(path, config, files, self._param_arrays(), self.preprocess)

    def _saved_symbol(self):
        return self.to_symbol()

    def export(self, prefix) -> dict:
        """Write ``prefix-symbol.json``, ``prefix-0000.params`` and ``prefix-preprocess.json``.

        The pair loads with MXNet alone::

            net = mx.gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"],
                                               prefix + "-0000.params")

        and gives the same logits. ``prefix-classes.json`` holds the class
        names when there are any.

        Returns
        -------
        dict
            ``{"symbol": path, "params": path, "preprocess": path[, "classes": path]}``.
        """
        prefix = os.fspath(prefix)
        folder = os.path.dirname(os.path.abspath(prefix))
        os.makedirs(folder, exist_ok=True)
        symbol = self.to_symbol()
        args, aux = set(symbol.list_arguments()), set(symbol.list_auxiliary_states())
        arrays = self._param_arrays()
        saved = {("arg:" if n in args else "aux:") + n: a for n, a in arrays.items() if n in args | aux}
        paths = {"symbol": prefix + "-symbol.json", "params": prefix + "-0000.params",
                 "preprocess": prefix + "-preprocess.json"}
        _atomic_text(paths["symbol"], symbol.tojson())
        tmp = paths["params"] + f".tmp-{uuid.uuid4().hex}"
        mx.nd.save(tmp, saved)
        os.replace(tmp, paths["params"])
        self.preprocess.save(paths["preprocess"])
        if self.class_names is not None:
            paths["classes"] = prefix + "-classes.json"
            _atomic_text(paths["classes"], json.dumps(self.class_names, indent=1))
        return paths


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
    >>> from finetune import Backbone, HeadReplacer, load_model
    >>> bb = Backbone.from_zoo("mobilenet0.25", weights=None)
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

    @property
    def preprocess(self) -> Preprocess:
        """The backbone's :class:`~finetune.Preprocess` (shared with :attr:`body`)."""
        return self.body.preprocess

    @preprocess.setter
    def preprocess(self, value: Preprocess) -> None:
        self.body.preprocess = value

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
        head = [n for n in _graph.list_layers(self.to_symbol()) if n.startswith("head_")]
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


# ------------------------------------------------------------------ directories
def _atomic_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _write_model_dir(path, config: dict, files: dict, arrays: dict, preprocess: Preprocess) -> str:
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ConfigError(f"Cannot save a model to {path!r}: it is a file.")
        if os.listdir(path) and not os.path.exists(os.path.join(path, "config.json")):
            raise ConfigError(f"Cannot save a model to {path!r}: the folder is not empty and is not a model "
                              "directory. Choose a new or empty folder.")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
    os.makedirs(tmp)
    try:
        config = dict(config, weights="weights.params")
        for name, text in files.items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                f.write(text)
        mx.nd.save(os.path.join(tmp, "weights.params"), arrays)
        if preprocess.mean_image is not None:
            np.save(os.path.join(tmp, "mean_image.npy"), preprocess.mean_image)
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=1)
        old = None
        if os.path.exists(path):
            old = os.path.join(parent, f".{os.path.basename(path)}.old-{uuid.uuid4().hex}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_config(path) -> dict:
    """Read and check ``config.json`` of a model directory."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise MissingFileError(f"Model directory {path!r} does not exist.")
    cfg_path = os.path.join(path, "config.json")
    if not os.path.exists(cfg_path):
        raise MissingFileError(f"{path!r} is not a finetune model directory: it has no config.json "
                               "(write one with model.save(dir)).")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as exc:
        raise ModelError(f"The config.json of {path!r} is corrupt: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelError(f"The config.json of {path!r} is not a finetune model config.")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(f"{path!r} was written by a newer finetune ({config.get('finetune_version')}); "
                         f"this is {__version__}. Upgrade finetune.")
    return config


def read_weights(path, config: dict) -> dict:
    """The parameter arrays of a model directory."""
    wpath = os.path.join(os.fspath(path), config.get("weights", "weights.params"))
    if not os.path.exists(wpath):
        raise MissingFileError(f"The weights file {wpath!r} of the model directory is missing.")
    try:
        arrays = mx.nd.load(wpath)
    except mx.base.MXNetError as exc:
        raise ModelError(f"The weights file {wpath!r} is corrupt: {str(exc).strip().splitlines()[0]}") from None
    if not isinstance(arrays, dict):
        raise ModelError(f"The weights file {wpath!r} holds no named parameters.")
    return arrays


def read_preprocess(path, config: dict) -> Preprocess:
    mean_image = None
    if config["preprocess"].get("has_mean_image"):
        mpath = os.path.join(os.fspath(path), "mean_image.npy")
        if not os.path.exists(mpath):
            raise MissingFileError(f"The mean image {mpath!r} of the model directory is missing.")
        mean_image = np.load(mpath)
    return Preprocess.from_dict(config["preprocess"], mean_image)


def read_symbol(path):
    spath = os.path.join(os.fspath(path), "symbol.json")
    if not os.path.exists(spath):
        raise MissingFileError(f"The graph file {spath!r} of the model directory is missing.")
    try:
        return mx.sym.load(spath)
    except mx.base.MXNetError as exc:
        raise ModelError(f"The graph file {spath!r} is corrupt: {str(exc).strip().splitlines()[0]}") from None


def load_model(path, *, ctx=None):
    """Load a model directory written by ``save`` (a :class:`Model` or a :class:`Backbone`).

    Parameters
    ----------
    path : str or os.PathLike
        The directory.
    ctx : None, mx.Context or list
        Devices to put the parameters on (``None``: the current context).

    Returns
    -------
    Model or Backbone
        The same class that was saved, with identical outputs.

    Raises
    ------
    MissingFileError
        The folder, its ``config.json`` or its weights are missing.
    ModelError
        A file is corrupt or does not match the graph.

    Examples
    --------
    >>> import finetune as ft, tempfile, os
    >>> bb = ft.Backbone.from_zoo("mobilenet0.25", weights=None)
    >>> model = ft.HeadReplacer(3).apply(bb, class_names=["a", "b", "c"])
    >>> folder = model.save(os.path.join(tempfile.mkdtemp(), "m"))
    >>> ft.load_model(folder).class_names
    ['a', 'b', 'c']
    """
    from ._backbone import Backbone
    from ._head import build_head

    config = read_config(path)
    kind = config.get("class")
    if kind == "QuantizedModel":
        from ._quantize import load_quantized

        return load_quantized(path, config, ctx=ctx)
    if kind not in ("Backbone", "Model"):
        raise ModelError(f"Unknown model class {kind!r} in {os.fspath(path)!r}.")
    arrays = read_weights(path, config)
    preprocess = read_preprocess(path, config)
    ctxs = resolve_ctx(ctx)
    symbol = read_symbol(path)
    class_names = config.get("class_names")
    body_names = set(symbol.list_arguments()) | set(symbol.list_auxiliary_states())
    body = Backbone._from_graph_config(symbol, {k: v for k, v in arrays.items() if k in body_names},
                                       preprocess, config["graph"],
                                       class_names=class_names if kind == "Backbone" else None, ctx=ctxs)
    if kind == "Backbone":
        return body
    head = build_head(config["head"])
    _load_params(head.collect_params(), arrays, ctxs, where=os.fspath(path))
    return Model(body, head, config["head"], class_names=class_names)


def _load_params(params, arrays: dict, ctxs, where: str = "") -> None:
    """Set every parameter of a ParameterDict from ``arrays`` (by name), checking shapes."""
    missing = [n for n in params.keys() if n not in arrays]
    if missing:
        raise ModelError(f"{len(missing)} parameters are missing{' in ' + where if where else ''}: "
                         f"{missing[:5]}{'...' if len(missing) > 5 else ''}.")
    for name, p in params.items():
        arr = arrays[name]
        shape = p.shape
        if shape is not None and all(s > 0 for s in shape) and tuple(shape) != tuple(arr.shape):
            raise ModelError(f"Parameter {name!r} has shape {tuple(arr.shape)}{' in ' + where if where else ''}, "
                             f"but the network needs {tuple(shape)}.")
        if shape is None or not all(s > 0 for s in shape):
            p.shape = tuple(arr.shape)
        p._load_init(arr.astype(p.dtype, copy=False) if arr.dtype != np.dtype(p.dtype) else arr, ctxs)
