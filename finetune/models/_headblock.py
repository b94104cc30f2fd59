"""The new head put on a cut backbone: :func:`build_head` from the spec stored in ``config.json``."""

from __future__ import annotations

from numbers import Integral, Real

from mxnet.gluon import nn

from .._validation import Interval, Options, Sequence, describe, satisfies, show
from ..errors import ModelError

__all__ = ["HEAD_SPEC_CONSTRAINTS", "MAX_UNITS", "build_head", "check_head_spec"]

_ACTIVATIONS = ("relu", "sigmoid", "tanh", "softrelu", "softsign")
#: Largest number of units of a head layer (classes, hidden units, inputs) accepted from a caller or a file.
MAX_UNITS = 10_000_000

#: The head spec as ``config.json`` stores it (``Model.head_spec``); :func:`check_head_spec` checks it.
HEAD_SPEC_CONSTRAINTS = {
    "num_classes": Interval(Integral, 1, MAX_UNITS),
    "in_features": Interval(Integral, 1, MAX_UNITS),
    "hidden": Sequence(Interval(Integral, 1, MAX_UNITS)),
    "dropout": Interval(Real, 0, 1, closed="left"),
    "pool": Options(["flatten", "avg", "max"]),
    "activation": Options(_ACTIVATIONS),
}


def check_head_spec(spec, where: str) -> None:
    """Raise :class:`ModelError` unless ``spec`` is a head spec :func:`build_head` can build.

    ``where`` names the file, e.g. ``"config.json of 'model'"``; the message
    names the key (``'head.dropout'``) and the value.
    """
    if not isinstance(spec, dict):
        raise ModelError(f"The {where} has 'head' = {spec!r}; expected an object with "
                         f"{', '.join(HEAD_SPEC_CONSTRAINTS)}.")
    missing = [k for k in ("num_classes", "in_features") if k not in spec]
    if missing:
        raise ModelError(f"The {where} has no 'head.{missing[0]}'; the head cannot be rebuilt.")
    for key, value in spec.items():
        if key in HEAD_SPEC_CONSTRAINTS and not satisfies(value, HEAD_SPEC_CONSTRAINTS[key]):
            raise ModelError(f"The {where} has 'head.{key}' = {show(value)}; "
                             f"expected {describe(HEAD_SPEC_CONSTRAINTS[key])}.")


def build_head(spec: dict) -> nn.HybridSequential:
    """The head described by ``spec`` (as stored in a model directory's ``config.json``).

    Layout: optional global pooling, ``Flatten``, then for each hidden size
    ``Dense(h) - activation - Dropout``, then ``Dropout`` (only without hidden
    layers) and the final ``Dense(num_classes)``. Parameter names start with
    ``head_`` (``head_fc0_weight``, ``head_classifier_weight``, ...). Not
    initialised.

    Parameters
    ----------
    spec : dict
        Keys ``num_classes``, ``in_features``, ``hidden``, ``dropout``,
        ``pool`` (``"flatten"``, ``"avg"`` or ``"max"``), ``activation``.

    Examples
    --------
    >>> head = build_head({"num_classes": 3, "in_features": 8, "hidden": [4], "dropout": 0.5})
    >>> sorted(head.collect_params().keys())[:2]
    ['head_classifier_bias', 'head_classifier_weight']
    """
    head = nn.HybridSequential(prefix="head_")
    units = int(spec["in_features"])
    hidden = list(spec.get("hidden", ()))
    dropout = float(spec.get("dropout", 0.0))
    activation = spec.get("activation", "relu")
    with head.name_scope():
        pool = spec.get("pool", "flatten")
        if pool == "avg":
            head.add(nn.GlobalAvgPool2D(prefix="pool_"))
        elif pool == "max":
            head.add(nn.GlobalMaxPool2D(prefix="pool_"))
        head.add(nn.Flatten(prefix="flatten_"))
        for i, size in enumerate(hidden):
            head.add(nn.Dense(int(size), in_units=units, prefix=f"fc{i}_"))
            head.add(nn.Activation(activation, prefix=f"{activation}{i}_"))
            if dropout > 0:
                head.add(nn.Dropout(dropout, prefix=f"drop{i}_"))
            units = int(size)
        if not hidden and dropout > 0:
            head.add(nn.Dropout(dropout, prefix="drop_"))
        head.add(nn.Dense(int(spec["num_classes"]), in_units=units, prefix="classifier_"))
    return head
