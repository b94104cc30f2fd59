"""The base of every finetune network: the members of the model protocol built on one symbol graph.

:class:`_Network` gives ``layer_names``, ``features``, ``layer_gradient``,
``save`` and ``export`` to any subclass that provides ``to_symbol()`` (its
whole graph, input ``"data"``, output the logits) and ``_config()`` (what a
model directory stores besides the graph and weights).
"""

from __future__ import annotations

import collections
import itertools
import os

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock

from .._file_writes import atomic_paths
from .._mxio import save_arrays
from .._version import __version__
from ..data import Preprocess
from ..errors import ConfigError
from .graph import data_var, fold_padding, has_shape_tricks, layer_output, list_layers, probe_block
from ._inference import CarriesInference
from ._io._modeldir import FORMAT, SAVE_VERSION, _write_model_dir, symbol_json


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


def graph_shapes(symbol, input_shape) -> dict:
    """Parameter name -> shape the graph needs for ``input_shape`` (what is known of it), so weights of
    another network are refused when loaded, not at the first forward pass."""
    try:
        args, _, aux = symbol.infer_shape_partial(**{data_var().name: input_shape})
    except mx.base.MXNetError:
        return {}
    names = symbol.list_arguments() + symbol.list_auxiliary_states()
    return {n: tuple(s) for n, s in zip(names, (args or []) + (aux or [])) if s and all(d > 0 for d in s)}


_SEEN_ONCE = object()
_FOLDED_SIZES = 8  # input sizes whose folded graphs a backbone keeps


class _Folded:
    """A backbone's graph folded for one input size: its block and a serial number that tells graphs apart."""

    _serials = itertools.count(1)

    def __init__(self, block):
        self.block = block
        self.serial = next(self._serials)


def folded_graph(caches: _Cache, symbol, shape, params):
    """A :class:`_Folded`: ``symbol`` folded for inputs of ``shape`` ``(C, H, W)``, kept in ``caches``.

    Folding (:func:`~finetune.models.graph.fold_padding`) replaces
    shape-dependent padding sub-graphs (EfficientNet-Lite's SAME padding)
    by constant ``Pad`` nodes; the folded block shares ``params``, and
    ``serial`` tells folded graphs apart (also across a BatchNorm freeze,
    which clears the caches). ``None`` (run the graph as it is) when nothing
    folds, and at the first sight of a size: a size is folded when it comes
    back, so inputs of ever-changing sizes pay no folding; the last
    :data:`_FOLDED_SIZES` sizes are remembered.
    """
    if "shape_tricks" not in caches:
        caches["shape_tricks"] = has_shape_tricks(symbol)
        caches["sizes"] = collections.OrderedDict()
    sizes = caches["sizes"]
    if not caches["shape_tricks"]:
        return None
    shape = tuple(shape)
    if shape not in sizes:
        sizes[shape] = _SEEN_ONCE
        while len(sizes) > _FOLDED_SIZES:
            sizes.popitem(last=False)
        return None
    sizes.move_to_end(shape)
    if sizes[shape] is _SEEN_ONCE:
        folded, n = fold_padding(symbol, (1,) + shape)
        sizes[shape] = _Folded(mx.gluon.SymbolBlock(folded, data_var(), params=params)) if n else None
    return sizes[shape]


class _Network(CarriesInference, HybridBlock):
    """Base of every finetune network: the members of the model protocol built on ``to_symbol()``."""

    def __init__(self, preprocess: Preprocess, class_names=None):
        super().__init__(prefix="")
        self._preprocess = _check_preprocess(preprocess)
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self._caches = _Cache()
        self._graph_key = None
        self.inference = None  # plain

    @property
    def preprocess(self) -> Preprocess:
        """The :class:`~finetune.Preprocess` the network expects."""
        return self._preprocess

    @preprocess.setter
    def preprocess(self, value: Preprocess) -> None:
        self._preprocess = _check_preprocess(value)

    def forward(self, x, *args):
        """Run the network; a batch runs the graph folded for its input size (see below).

        For an ``(N, C, H, W)`` NDArray the backbones that receive ``x``
        unchanged use their graph specialised to ``(C, H, W)``
        (:func:`~finetune.models.graph.fold_padding`: shape-dependent padding
        replaced by a constant ``Pad``; the same numbers, fewer operators).
        A size is folded from its second call on. The specialisation lasts
        for the call only; a symbol input, and so :meth:`to_symbol`,
        :meth:`save` and :meth:`export`, always gets the graph for any size.
        A hybridized network rebuilds its cached graph when the input size
        changes which graph it needs.
        """
        backbones = self._shaped_backbones() if isinstance(x, mx.nd.NDArray) and x.ndim == 4 else []
        if not backbones:
            return super().forward(x, *args)
        shape = tuple(x.shape[1:])
        previous = [b._armed for b in backbones]
        try:
            key = tuple(b._use_input_shape(shape) for b in backbones)
            if key != self._graph_key:
                self._clear_cached_op()
                self._graph_key = key
            return super().forward(x, *args)
        finally:
            for b, armed in zip(backbones, previous):
                b._armed = armed

    def _shaped_backbones(self) -> list:
        """The :class:`~finetune.Backbone` blocks that receive this network's input unchanged."""
        return []

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
        return list_layers(self.to_symbol())

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
            out = layer_output(self.to_symbol(), names)
            block = mx.gluon.SymbolBlock(out, data_var(), params=self.collect_params())
            self._caches[key] = block
        out = block(x)
        return [out] if isinstance(out, mx.nd.NDArray) else list(out)

    def probe(self, layer: str):
        """A block ``f(x, delta) -> (logits, activation)`` for gradients w.r.t. ``layer``.

        See :func:`finetune.models.graph.probe_block`; :meth:`layer_gradient` uses it.
        """
        key = ("probe", layer)
        if key not in self._caches:
            self._caches[key] = probe_block(self.to_symbol(), layer, self.collect_params())
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
            "format_version": SAVE_VERSION,
            "finetune_version": __version__,
            "mxnet_version": mx.__version__,
            "class": type(self).__name__,
            "preprocess": self.preprocess.to_dict(),
            "class_names": self.class_names,
            "inference": self.inference.to_dict(),
            **self._config(),
        }
        files = {"symbol.json": self._saved_symbol().tojson()}
        return _write_model_dir(path, config, files, self._param_arrays(), self.preprocess)

    def _saved_symbol(self):
        return self.to_symbol()

    def export(self, prefix) -> dict:
        """Write the plain MXNet files of the network, for tools other than finetune.

        The low-level writer: ``prefix-symbol.json`` (the whole graph, input
        ``"data"``, output the logits; the class names are kept in the file
        as the graph attribute ``"finetune_class_names"``), ``prefix-0000.params``
        (``arg:`` / ``aux:`` keys, as ``mx.model.save_checkpoint`` writes) and
        ``prefix-preprocess.json`` (the :class:`~finetune.Preprocess`). The
        pair loads with MXNet alone::

            net = mx.gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"],
                                               prefix + "-0000.params")
            sym, args, aux = mx.model.load_checkpoint(prefix, 0)

        and gives the same logits; :meth:`Backbone.from_checkpoint` reads
        the three files back. To ship a network, use
        :func:`~finetune.export_for_deployment`, which calls this and keeps
        the files in a model directory. The graph and weights are replaced
        together, as one unit (the preprocessing file beside them on its
        own), each atomically.

        Returns
        -------
        dict
            ``{"symbol": path, "params": path, "preprocess": path}``.
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
        with atomic_paths([paths["symbol"], paths["params"]]) as temps:
            with open(temps[0], "w", encoding="utf-8", errors="surrogateescape") as f:  # names byte-exact
                f.write(symbol_json(symbol, self.class_names))
            save_arrays(temps[1], saved)
        self.preprocess.save(paths["preprocess"])
        return paths
