"""Conformance checks for code that plugs into finetune.

:func:`check_model` runs an object through everything the library expects
of a network (the :class:`~finetune.ModelProtocol`), the way scikit-learn's
``check_estimator`` runs an estimator: a new backbone, importer or wrapper
that passes it works with :class:`~finetune.Predictor`,
:func:`~finetune.evaluate`, :class:`~finetune.GradCAM` and
:class:`~finetune.FeatureExtractor`.
"""

from __future__ import annotations

import os
import tempfile

import mxnet as mx
import numpy as np

from .data import Preprocess
from .errors import ModelProtocolError
from .models import ModelProtocol, load_model

__all__ = ["check_model"]


def _batch(model, input_size, batch: int):
    pre = model.preprocess
    size = tuple(input_size) if input_size is not None else tuple(pre.size)
    rng = np.random.default_rng(0)
    return mx.nd.array(rng.normal(size=(batch, pre.channels, *size)).astype(np.float32))


def _spatial_layer(model, x):
    """The last layer with a 4-D output, else the last layer (what Grad-CAM would explain)."""
    layers = list(model.layer_names)
    for layer in reversed(layers):
        if len(model.features(x, layer)[0].shape) == 4:
            return layer
    return layers[-1]


def check_model(model, *, input_size=None, save: bool = True) -> None:
    """Check that ``model`` meets the model protocol; raise listing every failure.

    Checks, on a random batch of two normalised images: the members exist;
    ``preprocess`` is a :class:`~finetune.Preprocess`; ``class_names`` is
    ``None`` or one string per output; ``model(x)`` gives finite logits
    ``(2, K)``; ``layer_names`` is a non-empty list of unique strings;
    ``features`` returns one array per asked layer, in the order asked, with
    the batch first; ``layer_gradient`` gives an activation and a gradient of
    the layer's shape and the same logits as ``model(x)``; and ``save``
    writes a directory that :func:`~finetune.load_model` reads back into a
    network with the same logits and class names.

    Parameters
    ----------
    model : object
        The network to check, e.g. the result of :func:`~finetune.create_model`.
    input_size : tuple of int or None
        ``(H, W)`` of the test batch; default: ``model.preprocess.size``
        (give a smaller one for networks that accept any size).
    save : bool
        Also check the save → load round trip.

    Raises
    ------
    ModelProtocolError
        Its message and its ``failures`` list name every check that failed.

    Examples
    --------
    >>> import finetune as ft
    >>> from finetune.testing import check_model
    >>> check_model(ft.create_model("mobilenet0.25"), input_size=(32, 32))
    >>> check_model(object())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    finetune.errors.ModelProtocolError: object does not meet the model protocol: ...
    """
    failures = []
    name = type(model).__name__
    if not isinstance(model, ModelProtocol):
        missing = [m for m in ("preprocess", "class_names", "layer_names", "features", "layer_gradient",
                               "collect_params", "save") if not hasattr(model, m)]
        if not callable(model):
            missing.append("__call__")
        failures.append(f"missing members: {', '.join(missing)}")
        _raise(name, failures)
    if not isinstance(model.preprocess, Preprocess):
        failures.append(f"preprocess is a {type(model.preprocess).__name__}, not a finetune.Preprocess")
        _raise(name, failures)

    x = _batch(model, input_size, 2)
    logits = _run(failures, "model(x)", lambda: model(x))
    k = None
    if logits is not None:
        if isinstance(logits, (list, tuple)) or getattr(logits, "ndim", 0) != 2 or logits.shape[0] != 2:
            failures.append(f"model(x) must give logits (2, K) for a batch of 2; got "
                            f"{getattr(logits, 'shape', type(logits).__name__)}")
            logits = None
        else:
            k = logits.shape[1]
            if not np.isfinite(logits.asnumpy()).all():
                failures.append("model(x) gives non-finite logits")
    names = model.class_names
    if names is not None:
        if not (isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names)):
            failures.append(f"class_names must be None or a list of str; got {type(names).__name__}")
        elif k is not None and len(names) != k:
            failures.append(f"{len(names)} class_names for {k} outputs")

    layers = _run(failures, "layer_names", lambda: list(model.layer_names))
    if layers is not None:
        if not layers or not all(isinstance(n, str) for n in layers) or len(set(layers)) != len(layers):
            failures.append("layer_names must be a non-empty list of unique strings")
            layers = None
    if layers is not None:
        _check_features(model, x, layers, failures)
        _check_gradient(model, x, logits, failures)
    if save and logits is not None:
        _check_save(model, x, logits, failures)
    if failures:
        _raise(name, failures)


def _run(failures, what, fn):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - every failure is reported, not just the first
        failures.append(f"{what} raised {type(exc).__name__}: {exc}")
        return None


def _check_features(model, x, layers, failures) -> None:
    asked = [layers[-1], layers[0]] if len(layers) > 1 else [layers[0]]
    outs = _run(failures, f"features(x, {asked})", lambda: model.features(x, asked))
    if outs is None:
        return
    if not isinstance(outs, list) or len(outs) != len(asked):
        failures.append(f"features(x, {asked}) must return a list of {len(asked)} arrays; got {type(outs).__name__}")
        return
    if any(o.shape[0] != 2 for o in outs):
        failures.append(f"features(x, {asked}) must keep the batch first; got shapes {[o.shape for o in outs]}")
    single = _run(failures, f"features(x, {asked[0]!r})", lambda: model.features(x, asked[0]))
    if single is not None and (len(single) != 1 or single[0].shape != outs[0].shape):
        failures.append("features(x, name) must give a list of one array, as for [name]")


def _check_gradient(model, x, logits, failures) -> None:
    layer = _run(failures, "features of layer_names", lambda: _spatial_layer(model, x))
    if layer is None:
        return
    got = _run(failures, f"layer_gradient(x, {layer!r})", lambda: model.layer_gradient(x, layer))
    if got is None:
        return
    if not (isinstance(got, tuple) and len(got) == 3):
        failures.append(f"layer_gradient must return (activation, gradient, logits); got {type(got).__name__}")
        return
    act, grad, out = got
    if act.shape != grad.shape or act.shape[0] != 2:
        failures.append(f"layer_gradient({layer!r}): activation {act.shape} and gradient {grad.shape} must "
                        "have the layer's shape, batch first")
    if logits is not None and not np.allclose(out.reshape((2, -1)).asnumpy(), logits.asnumpy(),
                                              rtol=1e-4, atol=1e-4):
        failures.append(f"layer_gradient({layer!r}) gives other logits than model(x)")


def _check_save(model, x, logits, failures) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _run(failures, "save(dir)", lambda: model.save(os.path.join(tmp, "model")))
        if path is None:
            return
        again = _run(failures, "load_model(save(dir))", lambda: load_model(path))
        if again is None:
            return
        if again.class_names != (None if model.class_names is None else list(model.class_names)):
            failures.append("load_model(save(dir)) has other class_names")
        out = _run(failures, "load_model(save(dir))(x)", lambda: again(x))
        if out is not None and not np.allclose(out.asnumpy(), logits.asnumpy(), rtol=1e-4, atol=1e-5):
            failures.append("load_model(save(dir)) gives other logits")


def _raise(name, failures):
    raise ModelProtocolError(f"{name} does not meet the model protocol: " + "; ".join(failures), failures)
