"""The model protocol, in two levels, as :class:`typing.Protocol` classes.

:class:`InferenceModel` is what prediction and evaluation need: logits for a
normalised batch, the preprocessing, the class names, the inference record and
``save``.
:class:`ModelProtocol` (the full level) adds what feature extraction,
Grad-CAM, per-layer learning rates and the Trainer use: layer names, features
and gradients at a layer, the graph as a symbol, the Gluon parameters,
``hybridize``, the number of outputs and frozen BatchNorm.

A consumer states the level it needs with :func:`require_model` at its
boundary (a :class:`~finetune.errors.ModelProtocolError` naming the missing
members otherwise) and then uses the members directly; nothing probes with
``hasattr``. ``isinstance`` only checks that the members exist;
:func:`finetune.testing.check_model` checks that they behave.

Every kind of model passes :func:`~finetune.testing.check_model` at its level:
full — :class:`~finetune.Backbone` (zoo, Caffe, MXNet checkpoint),
:class:`~finetune.Model`, :class:`~finetune.models.BlockModel`; inference —
:class:`~finetune.QuantizedModel`, :class:`~finetune.FusedModel`, what
:func:`~finetune.load_deployment` returns (a
:class:`~finetune.models.DeployedModel`) and the stand-in
:class:`finetune.testing.TinyBlock`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..errors import ModelProtocolError

__all__ = ["LEVELS", "InferenceModel", "ModelProtocol", "missing_members", "require_model"]


@runtime_checkable
class InferenceModel(Protocol):
    """What prediction, evaluation and deployment need of a network.

    Attributes
    ----------
    preprocess : Preprocess
        How raw images become the network's input: colour order, resize and
        crop, mean/std or mean image (see :class:`~finetune.Preprocess`).
    class_names : list of str or None
        One name per output, or ``None``.
    inference : Inference
        How the network is meant to be run for prediction (an
        :class:`~finetune.Inference`, the plain ``Inference()`` when nothing
        was chosen); :class:`~finetune.Predictor` and
        :func:`~finetune.evaluate` follow it unless told otherwise, and
        ``save`` keeps it.

    Notes
    -----
    ``model(x)`` maps a normalised ``(N, C, H, W)`` float32 batch to logits
    ``(N, K)`` (pre-softmax); ``model.save(path)`` writes a model directory
    that :func:`~finetune.load_model` reads back into a network with the same
    logits and class names.

    Examples
    --------
    >>> import finetune as ft
    >>> bb = ft.Backbone.from_zoo("mobilenet0.25", weights=None)
    >>> isinstance(bb, ft.InferenceModel), isinstance(object(), ft.InferenceModel)
    (True, False)
    """

    preprocess: object
    class_names: list | None
    inference: object

    def __call__(self, x):
        """Logits ``(N, K)`` of a normalised ``(N, C, H, W)`` batch."""

    def save(self, path) -> str:
        """Write a model directory that :func:`~finetune.load_model` reads; returns its path."""


@runtime_checkable
class ModelProtocol(InferenceModel, Protocol):
    """The full model protocol: :class:`InferenceModel` plus layer access and training.

    Attributes
    ----------
    preprocess : Preprocess
        As for :class:`InferenceModel`.
    class_names : list of str or None
        As for :class:`InferenceModel`.
    inference : Inference
        As for :class:`InferenceModel`.
    layer_names : list of str
        Names accepted by :meth:`features` and :meth:`layer_gradient`, in
        graph order (input → output).
    num_classes : int
        Number of outputs ``K``.

    Notes
    -----
    ``isinstance(obj, ModelProtocol)`` checks only that the members exist;
    :func:`finetune.testing.check_model` checks that they behave.

    Examples
    --------
    >>> import finetune as ft
    >>> bb = ft.Backbone.from_zoo("mobilenet0.25", weights=None)
    >>> isinstance(bb, ft.ModelProtocol)
    True
    >>> isinstance(object(), ft.ModelProtocol)
    False
    """

    @property
    def layer_names(self) -> list:
        """Layer names in graph order (input → output)."""

    @property
    def num_classes(self) -> int:
        """Number of outputs."""

    def features(self, x, layers) -> list:
        """Outputs of the named layers for a batch, in the order asked (list of NDArray)."""

    def layer_gradient(self, x, layer: str, class_index=None) -> tuple:
        """``(activation, gradient, logits)``: a layer's output and the gradient of a class score at it."""

    def to_symbol(self):
        """The whole network as an MXNet symbol with input ``"data"`` (output: the logits)."""

    def collect_params(self):
        """The Gluon parameters (a ``ParameterDict``)."""

    def hybridize(self, active=True, **kwargs):
        """Use a static graph (``HybridBlock.hybridize``)."""

    def freeze_batchnorm(self, layers=None, frozen: bool = True):
        """Make BatchNorm layers (``None``: all) use and keep their moving statistics; returns ``self``."""


LEVELS = {"inference": InferenceModel, "full": ModelProtocol}

# The members of each level, in the order error messages name them.
_INFERENCE = ("preprocess", "class_names", "inference", "__call__", "save")
_MEMBERS = {
    "inference": _INFERENCE,
    "full": _INFERENCE + ("layer_names", "num_classes", "features", "layer_gradient", "to_symbol",
                          "collect_params", "hybridize", "freeze_batchnorm"),
}


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise ModelProtocolError(f"The 'level' of the model protocol must be one of {sorted(LEVELS)}. "
                                 f"Got {level!r} instead.")


def missing_members(model, level: str = "full") -> list:
    """The members of protocol ``level`` (``"inference"`` or ``"full"``) that ``model`` lacks, in order.

    Examples
    --------
    >>> missing_members(object(), "inference")
    ['preprocess', 'class_names', 'inference', '__call__', 'save']
    """
    _check_level(level)
    if isinstance(model, LEVELS[level]):
        return []
    cls = type(model)
    return [m for m in _MEMBERS[level]
            if not (any(m in vars(c) for c in cls.__mro__) or m in getattr(model, "__dict__", {}))]


def require_model(model, level: str, who: str):
    """``model`` itself when it meets protocol ``level``; else a :class:`ModelProtocolError` naming what lacks.

    The check every consumer runs where a model enters it, so that inside it
    the members are used directly.

    Parameters
    ----------
    model : object
        The network given to ``who``.
    level : {"inference", "full"}
        :class:`InferenceModel` or :class:`ModelProtocol`.
    who : str
        The consumer, for the message (e.g. ``"GradCAM"``).

    Examples
    --------
    >>> require_model(object(), "inference", "Predictor")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    finetune.errors.ModelProtocolError: Predictor needs a model meeting the inference level ...
    """
    if level == "full" and getattr(model, "int8", False) is True:
        raise ModelProtocolError(f"{_named(model)} is an int8 model; {who} needs the float model it was made from "
                                 "(the model directory that was quantized, e.g. by export --int8).", ["int8 model"])
    missing = missing_members(model, level)
    if missing:
        wanted = "InferenceModel" if level == "inference" else "ModelProtocol"
        hint = (" A QuantizedModel, FusedModel or deployment runs inference only: give the float32 model "
                "(finetune.load_model / create_model)." if level == "full" and not missing_members(model, "inference")
                else " Wrap a plain Gluon block with finetune.create_model(block, preprocess=..., class_names=...).")
        raise ModelProtocolError(
            f"{who} needs a model meeting the {level} level of the model protocol (finetune.{wanted}); "
            f"{type(model).__name__} lacks {', '.join(missing)}.{hint}", [f"missing: {m}" for m in missing])
    return model


def _named(model) -> str:
    """How messages name ``model``: the folder it was read from, else its class."""
    source = getattr(model, "source", None)
    return repr(source) if isinstance(source, str) else f"This {type(model).__name__}"
