"""The model protocol: what every network in finetune offers, as a :class:`typing.Protocol`.

Prediction, evaluation, Grad-CAM, feature extraction and training accept any
object that meets :class:`ModelProtocol`; :func:`~finetune.create_model` turns
every supported source (zoo name, model directory, deployment folder, Caffe
pair, MXNet checkpoint, plain Gluon block) into one, and
:func:`finetune.testing.check_model` checks that an object really behaves as
the protocol says (``isinstance`` only checks that the members exist).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["ModelProtocol"]


@runtime_checkable
class ModelProtocol(Protocol):
    """What every finetune network offers.

    Attributes
    ----------
    preprocess : Preprocess
        How raw images become the network's input: colour order, resize and
        crop, mean/std or mean image (see :class:`~finetune.Preprocess`).
    class_names : list of str or None
        One name per output, or ``None``.
    layer_names : list of str
        Names accepted by :meth:`features` and :meth:`layer_gradient`, in
        graph order (input → output).

    Notes
    -----
    ``model(x)`` maps a normalised ``(N, C, H, W)`` float32 batch to logits
    ``(N, K)`` (pre-softmax). ``isinstance(obj, ModelProtocol)`` checks only
    that the members exist; :func:`finetune.testing.check_model` checks that
    they behave.

    Examples
    --------
    >>> import finetune as ft
    >>> bb = ft.Backbone.from_zoo("mobilenet0.25", weights=None)
    >>> isinstance(bb, ft.ModelProtocol)
    True
    >>> isinstance(object(), ft.ModelProtocol)
    False
    """

    preprocess: object
    class_names: list | None

    @property
    def layer_names(self) -> list:
        """Layer names in graph order (input → output)."""

    def __call__(self, x):
        """Logits ``(N, K)`` of a normalised ``(N, C, H, W)`` batch."""

    def features(self, x, layers) -> list:
        """Outputs of the named layers for a batch, in the order asked (list of NDArray)."""

    def layer_gradient(self, x, layer: str, class_index=None) -> tuple:
        """``(activation, gradient, logits)``: a layer's output and the gradient of a class score at it."""

    def collect_params(self):
        """The Gluon parameters (a ``ParameterDict``)."""

    def save(self, path) -> str:
        """Write a model directory that :func:`~finetune.load_model` reads; returns its path."""
