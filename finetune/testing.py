"""Conformance checks for code that plugs into finetune, and a tiny stand-in network for tests.

:func:`check_model` runs an object through everything the library expects
of a network at one level of the model protocol, the way scikit-learn's
``check_estimator`` runs an estimator: ``level="inference"``
(:class:`~finetune.InferenceModel`: what :class:`~finetune.Predictor` and
:func:`~finetune.evaluate` need) or ``level="full"``
(:class:`~finetune.ModelProtocol`: also :class:`~finetune.GradCAM`,
:class:`~finetune.FeatureExtractor`, :class:`~finetune.train.LayerLRPolicy`
and the :class:`~finetune.train.Trainer`). A new backbone, importer or
wrapper that passes it works with those consumers.

:class:`TinyBlock` (made by :func:`tiny_block`) is a small plain Gluon
network on 16x16 images with three classes that meets the inference level;
:class:`TinyNet` one with named layers that meets the full level: the
stand-ins that tests and examples feed to every consumer.
"""

from __future__ import annotations

import os
import tempfile

import mxnet as mx
import numpy as np
from mxnet import gluon

from .data import Preprocess
from .errors import ModelProtocolError
from .models import Inference, load_model, missing_members

__all__ = ["TINY_CLASSES", "TinyBlock", "TinyNet", "check_model", "tiny_block"]

TINY_CLASSES = ("cat", "dog", "fish")


class TinyBlock(mx.gluon.HybridBlock):
    """conv(3->4) - relu - conv(4->8) - relu - global avg pool - dense(3) on 16x16 RGB images.

    A plain Gluon block (no layer access of its own) meeting the inference
    level of the model protocol: :attr:`preprocess`, :attr:`class_names`,
    :attr:`inference` (plain) and :meth:`save`; :func:`~finetune.create_model` wraps it in a
    :class:`~finetune.models.BlockModel` for the full level.

    Parameters
    ----------
    preprocess : Preprocess or None
        Default: 16x16, RGB, mean 127 and std 64 on 0-255 pixels.
    class_names : list of str or None
        Default: ``["cat", "dog", "fish"]``.
    **kwargs
        Passed to ``HybridBlock`` (``prefix``, ``params``).

    Examples
    --------
    >>> net = tiny_block()
    >>> check_model(net, level="inference")
    >>> net(mx.nd.zeros((2, 3, 16, 16))).shape
    (2, 3)
    """

    def __init__(self, *, preprocess: Preprocess | None = None, class_names=None, **kwargs):
        super().__init__(**kwargs)
        self.preprocess = preprocess if preprocess is not None else Preprocess(
            size=(16, 16), resize=16, mean=(127, 127, 127), std=(64, 64, 64))
        self.class_names = list(class_names) if class_names is not None else list(TINY_CLASSES)
        self.inference = Inference()
        with self.name_scope():
            self.conv1 = mx.gluon.nn.Conv2D(4, 3, padding=1, in_channels=3)
            self.conv2 = mx.gluon.nn.Conv2D(8, 3, padding=1, in_channels=4)
            self.pool = mx.gluon.nn.GlobalAvgPool2D()
            self.fc = mx.gluon.nn.Dense(len(self.class_names), in_units=8)

    def hybrid_forward(self, F, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.fc(F.flatten(self.pool(x)))

    def save(self, path) -> str:
        """Write a model directory (through :class:`~finetune.models.BlockModel`); returns its path."""
        from .models import BlockModel

        return BlockModel(self).save(path)


def tiny_block(seed: int = 0) -> TinyBlock:
    """A :class:`TinyBlock` with Xavier weights drawn from ``seed`` (prefix ``"tiny_"``)."""
    mx.random.seed(seed)
    net = TinyBlock(prefix="tiny_")
    net.initialize(mx.init.Xavier(magnitude=3))
    return net


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


class TinyNet(gluon.HybridBlock):
    """Full-protocol stand-in: ``conv1 relu1 conv2 relu2 pool fc`` (``fc`` gives the logits).

    A plain Gluon block with named layers like a real backbone that meets
    the full level of the model protocol by itself (its own ``features``
    and ``layer_gradient``; ``save`` through
    :class:`~finetune.models.BlockModel`).

    Parameters
    ----------
    classes : int
        Number of outputs of ``fc``.
    channels : int
        Channels of both conv layers.
    seed : int
        Seed of the random initialisation.

    Examples
    --------
    >>> import mxnet as mx
    >>> net = TinyNet()
    >>> [o.shape for o in net.features(mx.nd.zeros((1, 3, 16, 20)), ["relu2", "fc"])]
    [(1, 8, 8, 10), (1, 4)]
    >>> check_model(net, "full")
    """

    layer_names = ["conv1", "relu1", "conv2", "relu2", "pool", "fc"]

    def __init__(self, classes: int = 4, channels: int = 8, seed: int = 0):
        super().__init__(prefix="tiny_")
        self.preprocess = Preprocess(size=(16, 16), resize=16, mean=(127, 127, 127), std=(128, 128, 128))
        self.class_names = [f"c{i}" for i in range(classes)]
        self.inference = Inference()
        with self.name_scope():
            self.conv1 = gluon.nn.Conv2D(channels, 3, padding=1, in_channels=3)
            self.conv2 = gluon.nn.Conv2D(channels, 3, strides=2, padding=1, in_channels=channels)
            self.fc = gluon.nn.Dense(classes, in_units=channels)
        mx.random.seed(seed)
        self.initialize(mx.init.Xavier())

    def _steps(self, F):
        return [("conv1", self.conv1), ("relu1", F.relu), ("conv2", self.conv2), ("relu2", F.relu),
                ("pool", lambda v: F.mean(v, axis=(2, 3))), ("fc", self.fc)]

    def _all(self, F, x, grad_at=None):
        outs = {}
        for name, step in self._steps(F):
            outs[name] = x = step(x)
            if name == grad_at:  # the rest is recorded from here, for the gradient at this layer
                x.attach_grad()
                mx.autograd.set_recording(True)
        return outs

    def hybrid_forward(self, F, x):
        return self._all(F, x)["fc"]

    def features(self, x, layers):
        """Outputs of the named layers (a name or a list), in the order asked."""
        outs = self._all(mx.nd, x)
        return [outs[name] for name in ([layers] if isinstance(layers, str) else layers)]

    @property
    def num_classes(self) -> int:
        """Number of outputs of ``fc``."""
        return int(self.fc._units)

    def layer_gradient(self, x, layer: str, class_index=None):
        """``(activation, gradient, logits)`` at ``layer``; the score of ``class_index`` (default: the top class)."""
        try:
            outs = self._all(mx.nd, x, grad_at=layer)
            logits = outs["fc"]
            index = logits.argmax(axis=1) if class_index is None else mx.nd.full((x.shape[0],), class_index)
            score = mx.nd.pick(logits, index, axis=1).sum()
        finally:
            mx.autograd.set_recording(False)
        score.backward()
        return outs[layer], outs[layer].grad, logits

    def to_symbol(self):
        """The network traced with a symbol (input ``"data"``, output the logits)."""
        with mx.name.NameManager():
            return self(mx.sym.var("data"))

    def freeze_batchnorm(self, layers=None, frozen: bool = True) -> "TinyNet":
        """No BatchNorm layers: nothing to freeze."""
        return self

    def save(self, path) -> str:
        """Write a model directory (through :class:`~finetune.models.BlockModel`); returns its path."""
        from .models import BlockModel

        return BlockModel(self).save(path)


def check_model(model, level: str = "full", *, input_size=None, save: bool = True) -> None:
    """Check that ``model`` meets the model protocol at ``level``; raise listing every failure.

    Checks, on a random batch of two normalised images — at every level:
    the members exist; ``preprocess`` is a :class:`~finetune.Preprocess` that
    survives ``save`` → ``Preprocess.load``; ``class_names`` is ``None`` or
    one string per output; ``inference`` is an :class:`~finetune.Inference`;
    ``model(x)`` gives finite logits ``(2, K)``; and ``save`` writes a
    directory that :func:`~finetune.load_model` reads back into a network
    with the same logits, class names, preprocessing and inference record. At
    the full level also: ``num_classes`` is ``K``; ``to_symbol()`` is a
    one-output symbol; ``collect_params()`` holds parameters;
    ``layer_names`` is a non-empty list of unique strings; ``features``
    returns one array per asked layer, in the order asked, with the batch
    first; ``layer_gradient`` gives an activation and a gradient of the
    layer's shape and the same logits as ``model(x)``.

    Parameters
    ----------
    model : object
        The network to check, e.g. the result of :func:`~finetune.create_model`.
    level : {"inference", "full"}
        :class:`~finetune.InferenceModel` or :class:`~finetune.ModelProtocol`.
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
    >>> check_model(ft.create_model("mobilenet0.25", weights=None), input_size=(32, 32))
    >>> check_model(object())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    finetune.errors.ModelProtocolError: object does not meet the full level of the model protocol: ...
    """
    missing = missing_members(model, level)  # raises for an unknown level, naming the allowed ones
    failures = []
    name = f"{type(model).__name__} does not meet the {level} level"
    if missing:
        failures.append(f"missing members: {', '.join(missing)}")
    if "preprocess" in missing or "__call__" in missing:
        _raise(name, failures)
    if not isinstance(model.preprocess, Preprocess):
        failures.append(f"preprocess is a {type(model.preprocess).__name__}, not a finetune.Preprocess")
        _raise(name, failures)
    _check_preprocess(model.preprocess, failures)

    x = _batch(model, input_size, 2)
    logits = _run(failures, "model(x)", lambda: model(x))
    k = None
    if logits is not None:
        if not isinstance(logits, mx.nd.NDArray) or logits.ndim != 2 or logits.shape[0] != 2:
            failures.append(f"model(x) must give logits (2, K) for a batch of 2; got "
                            f"{logits.shape if isinstance(logits, mx.nd.NDArray) else type(logits).__name__}")
            logits = None
        else:
            k = logits.shape[1]
            if not np.isfinite(logits.asnumpy()).all():
                failures.append("model(x) gives non-finite logits")
    names = None if "class_names" in missing else model.class_names
    if names is not None:
        if not (isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names)):
            failures.append(f"class_names must be None or a list of str; got {type(names).__name__}")
        elif k is not None and len(names) != k:
            failures.append(f"{len(names)} class_names for {k} outputs")
    if "inference" not in missing and not isinstance(model.inference, Inference):
        failures.append(f"inference is a {type(model.inference).__name__}, not a finetune.Inference")
    if level == "full":
        _check_full(model, x, logits, k, missing, failures)
    if save and logits is not None and "save" not in missing:
        _check_save(model, x, logits, None if "inference" in missing else model.inference, failures)
    if failures:
        _raise(name, failures)


def _check_preprocess(pre, failures) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "preprocess.json")
        again = _run(failures, "Preprocess.load(preprocess.save(file))", lambda: (pre.save(path),
                                                                                 Preprocess.load(path))[1])
    if again is not None and again != pre:
        failures.append("preprocess.save → Preprocess.load gives another preprocessing")


def _check_full(model, x, logits, k, missing, failures) -> None:
    if "num_classes" not in missing:
        n = _run(failures, "num_classes", lambda: model.num_classes)
        if n is not None and k is not None and n != k:
            failures.append(f"num_classes is {n} for {k} outputs")
    if "to_symbol" not in missing:
        sym = _run(failures, "to_symbol()", model.to_symbol)
        if sym is not None and not (isinstance(sym, mx.sym.Symbol) and len(sym.list_outputs()) == 1):
            failures.append(f"to_symbol() must give a symbol with one output (the logits); got {sym!r}")
    if "collect_params" not in missing:
        params = _run(failures, "collect_params()", model.collect_params)
        if params is not None and not len(params.keys()):
            failures.append("collect_params() holds no parameters")
    if "layer_names" in missing:
        return
    layers = _run(failures, "layer_names", lambda: list(model.layer_names))
    if layers is not None:
        if not layers or not all(isinstance(n, str) for n in layers) or len(set(layers)) != len(layers):
            failures.append("layer_names must be a non-empty list of unique strings")
            layers = None
    if layers is not None and "features" not in missing:
        _check_features(model, x, layers, failures)
        if "layer_gradient" not in missing:
            _check_gradient(model, x, logits, failures)


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


def _check_save(model, x, logits, inference, failures) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _run(failures, "save(dir)", lambda: model.save(os.path.join(tmp, "model")))
        if path is None:
            return
        again = _run(failures, "load_model(save(dir))", lambda: load_model(path))
        if again is None:
            return
        if again.class_names != (None if model.class_names is None else list(model.class_names)):
            failures.append("load_model(save(dir)) has other class_names")
        if again.preprocess != model.preprocess:
            failures.append("load_model(save(dir)) has another preprocessing")
        if inference is not None and again.inference != inference:
            failures.append("load_model(save(dir)) has another inference record")
        out = _run(failures, "load_model(save(dir))(x)", lambda: again(x))
        if out is not None and not np.allclose(out.asnumpy(), logits.asnumpy(), rtol=1e-4, atol=1e-5):
            failures.append("load_model(save(dir)) gives other logits")


def _raise(name, failures):
    raise ModelProtocolError(f"{name} of the model protocol: " + "; ".join(failures), failures)
