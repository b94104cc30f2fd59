"""Head replacement: cut a backbone at a named layer and put a new classifier on top."""

from __future__ import annotations

import logging
from numbers import Integral, Real

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

from .._validation import InstanceOf, Interval, Options, Sequence, validate
from ..errors import ConfigError, UnknownNameError
from .graph import cut, list_layers
from ._backbone import Backbone
from ._headblock import _ACTIVATIONS, MAX_UNITS, build_head
from ._model import Model

__all__ = ["HeadReplacer", "build_head"]

log = logging.getLogger(__name__)

_INITS = {
    "xavier": lambda: mx.init.Xavier(),
    "msra": lambda: mx.init.MSRAPrelu(),
    "normal": lambda: mx.init.Normal(0.01),
    "uniform": lambda: mx.init.Uniform(0.07),
}
_POOLS = (None, "flatten", "avg", "max")
class HeadReplacer:
    """Replace a backbone's classifier by a new head.

    ``HeadReplacer(101, hidden=(256,), dropout=0.4)`` gives
    ``Dense(256) - ReLU - Dropout(0.4) - Dense(101)`` on top of the
    backbone's feature layer (the Caltech-101 example's ``Linear(4096,256)-ReLU-Dropout-
    Linear(256,101)`` on VGG16's ``fc7``).

    Parameters
    ----------
    num_classes : int
        Outputs of the new head.
    hidden : tuple of int
        Sizes of hidden dense layers (each followed by ``activation`` and, when
        ``dropout > 0``, dropout).
    dropout : float
        Dropout rate in ``[0, 1)``.
    cut_at : str or None
        Layer to cut the backbone at; default ``backbone.feature_layer`` (the
        classifier's input: ``pool1_fwd``/``flatten0`` for ResNets,
        ``dropout1_fwd``/``drop7`` for VGG).
    init : {"xavier", "msra", "normal", "uniform"} or mx.init.Initializer
        Initialisation of the new weights (biases start at zero).
    pool : {None, "flatten", "avg", "max"}
        How a 4-D cut output becomes a vector: ``None`` follows the backbone
        (``"avg"`` for SqueezeNet's default cut, otherwise ``"flatten"``).
    activation : str
        Activation after each hidden layer (an ``mx.gluon.nn.Activation`` type).

    Examples
    --------
    >>> import mxnet as mx, finetune as ft
    >>> bb = ft.create_model("resnet18_v1", weights=None)
    >>> model = HeadReplacer(7, hidden=(32,), dropout=0.4).apply(bb)
    >>> model(mx.nd.zeros((2, 3, 64, 64))).shape
    (2, 7)
    >>> model
    Model(body='resnet18_v1' cut at 'pool1_fwd', head=7 classes, hidden=(32,), dropout=0.4)
    """

    _parameter_constraints = {
        "num_classes": Interval(Integral, 1, MAX_UNITS),
        "hidden": [Interval(Integral, 1, MAX_UNITS), Sequence(Interval(Integral, 1, MAX_UNITS))],
        "dropout": Interval(Real, 0, 1, closed="left"),
        "cut_at": [InstanceOf(str, name="a layer name (str)"), None],
        "init": [Options(_INITS), InstanceOf(mx.init.Initializer)],
        "pool": Options(_POOLS),
        "activation": Options(_ACTIVATIONS),
    }

    def __init__(self, num_classes: int, *, hidden=(), dropout: float = 0.0, cut_at=None, init="xavier",
                 pool=None, activation: str = "relu"):
        validate("HeadReplacer", {"num_classes": num_classes, "hidden": hidden, "dropout": dropout, "cut_at": cut_at,
                                  "init": init, "pool": pool, "activation": activation}, self._parameter_constraints)
        hidden = (hidden,) if isinstance(hidden, (int, np.integer)) else tuple(hidden)
        self.num_classes = int(num_classes)
        self.hidden = tuple(int(h) for h in hidden)
        self.dropout = float(dropout)
        self.cut_at = cut_at
        self.init = init
        self.pool = pool
        self.activation = activation

    def __repr__(self) -> str:
        defaults = {"hidden": (), "dropout": 0.0, "cut_at": None, "init": "xavier", "pool": None, "activation": "relu"}
        parts = [repr(self.num_classes)]
        parts += [f"{k}={getattr(self, k)!r}" for k, v in defaults.items() if getattr(self, k) != v]
        return f"HeadReplacer({', '.join(parts)})"

    def apply(self, backbone: Backbone, class_names=None, *, ctx=None) -> Model:
        """Cut ``backbone`` and add the new head; returns a fine-tunable :class:`Model`.

        Parameters
        ----------
        backbone : Backbone
        class_names : list of str or None
            One name per class (``num_classes`` of them).
        ctx : None, mx.Context or list
            Devices for the model; default: where the backbone's parameters are.

        Returns
        -------
        Model
            Backbone parameters up to ``cut_at`` are copied (pretrained
            weights kept); the layers after it — the old classifier — are
            dropped (logged); the head is freshly initialised.

        Raises
        ------
        UnknownNameError
            ``cut_at`` is not a layer of the backbone (with "did you mean").
        ConfigError
            Wrong number of class names, or no layer to cut at.
        """
        if not isinstance(backbone, Backbone):
            raise ConfigError(f"HeadReplacer.apply needs a finetune.Backbone. Got {type(backbone).__name__} instead.")
        if class_names is not None:
            class_names = checked_class_names("HeadReplacer.apply", class_names)
            if len(class_names) != self.num_classes:
                raise ConfigError(f"HeadReplacer({self.num_classes}) got {len(class_names)} class names; "
                                  "give one name per class.")
        cut_at = self.cut_at or backbone.feature_layer
        if cut_at is None:
            raise ConfigError(f"Backbone {backbone.arch!r} has no default feature layer; pass cut_at=<layer name>.")
        layers = backbone.layer_names
        if cut_at not in layers:
            raise UnknownNameError("layer", cut_at, layers)
        symbol = cut(backbone.to_symbol(), cut_at)
        needed = (set(symbol.list_arguments()) | set(symbol.list_auxiliary_states())) - {"data"}
        arrays = backbone._param_arrays()
        dropped = sorted(set(arrays) - needed)
        if dropped:
            log.debug("HeadReplacer: dropping %d parameters after %r: %s", len(dropped), cut_at, ", ".join(dropped))
        body_layers = set(list_layers(symbol))
        if ctx is None:
            ctx = next(iter(backbone.collect_params().values())).list_ctx()
        body = Backbone(symbol, {k: arrays[k] for k in needed}, backbone.preprocess, classifier=None,
                        feature_layer=cut_at, layer_names=[n for n in layers if n in body_layers],
                        head_pool=backbone.head_pool, name=backbone.arch, ctx=ctx)
        spec = self._spec(body, cut_at == backbone.feature_layer and backbone.head_pool)
        head = build_head(spec)
        init = _INITS[self.init]() if isinstance(self.init, str) else self.init
        head.initialize(init, ctx=ctx)
        return Model(body, head, spec, class_names=class_names)

    def _spec(self, body: Backbone, backbone_pool) -> dict:
        shape = body.output_shape()
        pool = self.pool or backbone_pool or "flatten"
        if len(shape) == 4 and pool in ("avg", "max"):
            in_features = int(shape[1])
        else:
            pool = "flatten"
            in_features = int(np.prod(shape[1:]))
        return {"num_classes": self.num_classes, "in_features": in_features, "hidden": list(self.hidden),
                "dropout": self.dropout, "pool": pool, "activation": self.activation}


def checked_class_names(who: str, names) -> list:
    """``names`` as a list of str; a single string or a repeated name is a :class:`ConfigError`.

    Labels travel by name (records, predictions, evaluation), so two classes
    must not share one, and a string would be read as one class per letter.
    """
    if isinstance(names, (str, bytes)) or not hasattr(names, "__iter__"):
        raise ConfigError(f"The 'class_names' parameter of {who} must be a list of names, one per class. "
                          f"Got {names!r} ({type(names).__name__}) instead.")
    names = [str(c) for c in names]
    seen = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"The 'class_names' parameter of {who} names the class {name!r} twice; every class "
                              "needs its own name.")
        seen.add(name)
    return names
