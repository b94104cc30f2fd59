"""INT8 post-training quantization and float32 operator fusion on CPU (MXNet's oneDNN backend).

:func:`quantize` runs a float32 network on a few hundred calibration images,
records the range of every layer's output and rewrites the graph with
``mxnet.contrib.quantization`` into fused oneDNN INT8 operators (convolution
+ BatchNorm + activation + requantize in one kernel). The result is a
:class:`QuantizedModel`: a ``SymbolBlock`` that keeps the network's
:class:`~finetune.Preprocess` and class names, so :class:`~finetune.Predictor`
wraps it like any model, and that ``save``\\ s to a model directory
(``config.json`` with ``"class": "QuantizedModel"``, ``symbol.json``,
``weights.params``) which :func:`~finetune.load_model` reads back.

:func:`fuse` keeps float32 and only lets oneDNN fuse the graph (a
:class:`FusedModel`), which is exact to float32 rounding.

Both are made for the input size of the network's preprocessing, the size
:class:`~finetune.Predictor` feeds: a graph that computes its padding from
the input's shape (EfficientNet-Lite's TensorFlow SAME padding) is first
folded for that size (:func:`~finetune.models.graph.fold_padding`), and each
resulting ``Pad`` becomes the padding of the convolution that reads it
(:func:`~finetune.models.graph.merge_padding`), so oneDNN runs the network
as one chain of fused convolutions. Such a model refuses other sizes with a
:class:`ShapeError`; networks without shape-dependent padding take any size.

MXNet's quantization pass is used as is; this module only feeds it the
calibration batches, keeps the preprocessing with the result and handles
saving, which MXNet leaves to the caller.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings

import mxnet as mx
import numpy as np

from .._version import __version__
from ..data import ImageSource
from ..errors import ConfigError, DataError, ModelError, ModelProtocolError, check_choice, check_range
from ._io import _modeldir as _model
from .graph import fold_padding, has_shape_tricks, merge_padding
from ._inference import Inference
from ._inference_graph import InferenceGraph
from ._protocol import ModelProtocol, _named, require_model

__all__ = ["FusedModel", "QuantizedModel", "calibration_batch", "fuse", "quantize"]

log = logging.getLogger(__name__)

CALIB_MODES = ("naive", "entropy")


class QuantizedModel(InferenceGraph):
    """An INT8 network made by :func:`quantize`: logits for a normalised float32 batch.

    Runs on CPU only (oneDNN kernels). Meets the inference level of the model
    protocol (:class:`~finetune.InferenceModel`):
    ``model(x)`` for an ``(N, C, H, W)`` float32 batch normalised with
    :attr:`preprocess`, :attr:`class_names`, :meth:`save`; training and
    layer access (``features``, Grad-CAM) stay with the float32 model.

    Attributes
    ----------
    preprocess : Preprocess
        Copied from the float32 network.
    class_names : list of str or None
        Copied from the float32 network.
    inference : Inference
        Copied from the float32 network; saved with the model.
    calibration : dict
        How it was calibrated: ``calib_mode``, ``num_examples``,
        ``exclude_layers``.
    input_size : tuple of int or None
        ``(H, W)`` the graph was specialised to (its shape-dependent padding
        folded); other sizes raise :class:`~finetune.errors.ShapeError`.
        ``None``: any size.
    """

    #: Its weights are int8: no gradients, no re-quantizing, no graph surgery (see :func:`require_model`).
    int8 = True

    def __init__(self, symbol, preprocess, class_names=None, calibration=None, input_size=None, *, inference=None):
        super().__init__(symbol, preprocess, class_names, input_size, inference=inference)
        self.calibration = dict(calibration or {})
        self.source = None  # the model directory it was read from, for messages

    def save(self, path) -> str:
        """Write a model directory that :func:`~finetune.load_model` reads; returns its path."""
        config = {
            "format": _model.FORMAT, "format_version": _model.SAVE_VERSION,
            "finetune_version": __version__, "mxnet_version": mx.__version__,
            "class": "QuantizedModel", "preprocess": self.preprocess.to_dict(),
            "class_names": self.class_names, "quantization": self.calibration,
            "input_size": None if self.input_size is None else list(self.input_size),
            "inference": self.inference.to_dict(),
        }
        symbol = self._cached_graph[1]
        arrays = {name: p.data(p.list_ctx()[0]).copyto(mx.cpu()) for name, p in self.collect_params().items()}
        return _model._write_model_dir(path, config, {"symbol.json": symbol.tojson()}, arrays, self.preprocess)

    def __repr__(self) -> str:
        c = self.calibration
        return (f"QuantizedModel(int8, calib_mode={c.get('calib_mode')!r}, "
                f"num_examples={c.get('num_examples')}, classes={len(self.class_names or [])})")


class FusedModel(InferenceGraph):
    """A float32 network whose graph oneDNN fuses (convolution + BatchNorm + activation) on CPU.

    Made by :func:`fuse`. Same outputs as the original network (to float32
    rounding); :meth:`hybridize` always partitions the graph for the
    ``"MKLDNN"`` backend, so :class:`~finetune.Predictor`'s own
    ``hybridize(static_alloc=True)`` keeps the fusion. Meets the inference
    level of the model protocol; :meth:`save` writes the float32 graph as a
    :class:`~finetune.Backbone` model directory.

    Attributes
    ----------
    preprocess : Preprocess
        Copied from the original network.
    class_names : list of str or None
        Copied from the original network.
    inference : Inference
        Copied from the original network.
    input_size : tuple of int or None
        ``(H, W)`` the graph was specialised to (its shape-dependent padding
        folded); other sizes raise :class:`~finetune.errors.ShapeError`.
        ``None``: any size.
    """

    def hybridize(self, active=True, **kwargs):
        """As ``HybridBlock.hybridize``, with ``backend="MKLDNN"`` unless another is given."""
        kwargs.setdefault("backend", "MKLDNN")
        super().hybridize(active, **kwargs)

    def __repr__(self) -> str:
        return f"FusedModel(float32, oneDNN, classes={len(self.class_names or [])})"


def fuse(model) -> FusedModel:
    """A float32 copy of a network that runs with oneDNN operator fusion (CPU inference).

    Parameters
    ----------
    model : InferenceModel
        A Gluon network meeting at least the inference level of the model
        protocol (a :class:`~finetune.Model`, :class:`~finetune.Backbone`,
        deployment, ... or a plain block wrapped by :func:`~finetune.create_model`).

    Returns
    -------
    FusedModel
        Same input, outputs (to float32 rounding), preprocessing and class
        names; hybridized for the ``"MKLDNN"`` backend. A network whose
        padding depends on the input size is specialised to
        ``model.preprocess.size`` (see :attr:`FusedModel.input_size`).

    Examples
    --------
    >>> import mxnet as mx, numpy as np, finetune as ft
    >>> model = ft.HeadReplacer(2).apply(ft.create_model("mobilenet0.25", weights=None))
    >>> fused = ft.fuse(model)
    >>> x = mx.nd.array(np.random.default_rng(0).normal(size=(2, 3, 64, 64)))
    >>> bool(np.allclose(fused(x).asnumpy(), model(x).asnumpy(), atol=1e-4))
    True
    """
    model = _require_network(model, "fuse")
    block, input_size = _as_symbol_block(model)
    out = FusedModel(block._cached_graph[1], model.preprocess, model.class_names, input_size,
                     inference=model.inference)
    params = out.collect_params()
    for name, p in block.collect_params().items():
        params[name]._load_init(p.data(), [mx.cpu()])
    out.hybridize(static_alloc=True)
    return out


def load_quantized(path, config: dict, *, ctx=None) -> QuantizedModel:
    """Read a model directory written by :meth:`QuantizedModel.save` (called by ``load_model``)."""
    from .._context import resolve_ctx

    for c in resolve_ctx(ctx):
        if c.device_type != "cpu":
            raise ConfigError(f"A QuantizedModel runs on CPU only (oneDNN INT8 kernels). Got ctx={c} instead.")
    model = QuantizedModel(_model.read_symbol(path), _model.read_preprocess(path, config),
                           config.get("class_names"), config.get("quantization"), config.get("input_size"),
                           inference=Inference.from_dict(config.get("inference")))
    model.source = os.fspath(path)
    _model.read_weights(path, config)  # checks that the file exists and is readable
    try:
        _load_typed(model, os.path.join(os.fspath(path), config.get("weights", "weights.params")))
    except (AssertionError, mx.base.MXNetError) as exc:
        raise ModelError(f"The weights of the quantized model {os.fspath(path)!r} do not match its graph: "
                         f"{str(exc).strip().splitlines()[0]}") from None
    return model


def calibration_batch(model, images, limit: int | None = None) -> np.ndarray:
    """The calibration images of :func:`quantize` as one normalised ``(N, C, H, W)`` float32 array.

    What :func:`quantize` calibrates on, for callers that also want to compare
    the quantized network with the float32 one on the same images. Of more
    than ``limit`` images, ``limit`` spread evenly over the sorted listing are
    read, so every class folder of a class-per-folder tree is represented in
    proportion (the first ``limit`` files would all be of the first class).
    Arrays are cut to their first ``limit`` rows.

    Parameters
    ----------
    model : InferenceModel
        The network; its :class:`~finetune.Preprocess` is applied to images.
    images : path, sequence or numpy.ndarray
        Image files or folders (anything :class:`~finetune.data.ImageSource`
        reads without a colour order), or an already normalised
        ``(N, C, H, W)`` float32 batch.
    limit : int or None
        The most images read (``None``: all).

    Raises
    ------
    DataError
        No image found, or an array that is not a normalised float32 batch.

    Examples
    --------
    >>> import numpy as np
    >>> from finetune.testing import tiny_block
    >>> calibration_batch(tiny_block(), np.zeros((8, 3, 16, 16), np.float32), limit=3).shape
    (3, 3, 16, 16)
    """
    if isinstance(images, np.ndarray) and images.ndim == 4 and images.dtype == np.float32:
        return images[:limit]
    if isinstance(images, np.ndarray):
        raise DataError(f"Calibration arrays must be normalised (N, C, H, W) float32 batches. "
                        f"Got {images.dtype} with shape {images.shape} instead; pass image files to "
                        "have the model's preprocessing applied.")
    source = ImageSource(images, what="calibration images")
    if not len(source):
        raise DataError(f"No calibration images found in {images!r}; give image files or folders of images.")
    pre = model.preprocess
    n = len(source) if limit is None else min(int(limit), len(source))
    rows = np.linspace(0, len(source) - 1, n).round().astype(int) if n < len(source) else range(n)
    return np.stack([pre.transform(source.read(int(i), pre.color), pre.color) for i in rows]).astype(np.float32)


def quantize(model, calibration, *, calib_mode: str = "naive", num_examples: int = 500,
             batch_size: int = 32, exclude_layers=None) -> QuantizedModel:
    """INT8 copy of a float32 network, calibrated on sample images (CPU, oneDNN).

    Parameters
    ----------
    model : InferenceModel
        A float32 Gluon network meeting at least the inference level of the
        model protocol (a :class:`~finetune.Model`, :class:`~finetune.Backbone`,
        deployment, ... or a plain block wrapped by :func:`~finetune.create_model`).
    calibration : numpy.ndarray, path, folder, list of paths, ImageList or RecordDataset
        A few hundred images like the ones the model will see (training
        images are right): a normalised ``(N, C, H, W)`` float32 array, or
        images in any form :class:`~finetune.Predictor` reads (files,
        folders, encoded bytes, an :class:`~finetune.ImageList`, a
        :class:`~finetune.RecordDataset`), which go through
        ``model.preprocess``.
    calib_mode : {"naive", "entropy"}
        ``"naive"`` takes each layer's observed min/max as its range;
        ``"entropy"`` chooses the range that minimises the KL divergence
        (slower to calibrate, sometimes more accurate).
    num_examples : int
        Largest number of calibration images used; of more images, this
        many spread evenly over the listing (every class folder of a
        class-per-folder tree in proportion), of a larger array its first
        rows.
    batch_size : int
        Calibration batch size.
    exclude_layers : list of str or None
        Names of layers (see ``model.layer_names``) kept in float32, e.g.
        the classifier when it loses accuracy.

    Returns
    -------
    QuantizedModel
        Same input, output, preprocessing and class names. A network whose
        padding depends on the input size is specialised to
        ``model.preprocess.size`` (see :attr:`QuantizedModel.input_size`).

    Raises
    ------
    ConfigError
        An option out of range.
    ModelProtocolError
        ``model`` is not a Gluon network meeting the inference level.
    DataError
        No usable calibration images.

    Examples
    --------
    >>> import mxnet as mx, numpy as np, finetune as ft
    >>> bb = ft.create_model("mobilenet0.25", weights=None)
    >>> model = ft.HeadReplacer(2).apply(bb, class_names=["a", "b"])
    >>> calib = np.random.default_rng(0).normal(size=(8, 3, 64, 64)).astype(np.float32)
    >>> q = ft.quantize(model, calib, batch_size=4)
    >>> q
    QuantizedModel(int8, calib_mode='naive', num_examples=8, classes=2)
    >>> q(mx.nd.array(calib[:2])).shape
    (2, 2)
    """
    from mxnet.contrib import quantization

    check_choice("quantize", "calib_mode", calib_mode, CALIB_MODES)
    check_range("quantize", "num_examples", num_examples, 1)
    check_range("quantize", "batch_size", batch_size, 1)
    model = _require_network(model, "quantize")
    data = calibration_batch(model, calibration, int(num_examples))
    if len(data) == 0:
        raise DataError("quantize got an empty calibration array; give a few hundred images.")
    fp32, input_size = _as_symbol_block(model)
    calib = mx.io.NDArrayIter(data, batch_size=min(batch_size, len(data)), data_name="data", last_batch_handle="pad")
    ql = logging.getLogger("finetune.quantize")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        warnings.filterwarnings("ignore", message="Cannot decide type")
        net = quantization.quantize_net_v2(
            fp32, quantized_dtype="auto", quantize_mode="full", exclude_layers=list(exclude_layers or []),
            calib_data=calib, calib_mode=calib_mode, num_calib_examples=len(data), ctx=mx.cpu(), logger=None)
    ql.debug("calibrated on %d images", len(data))
    out = QuantizedModel(net._cached_graph[1], model.preprocess, model.class_names,
                         {"calib_mode": calib_mode, "num_examples": int(len(data)),
                          "exclude_layers": list(exclude_layers or [])}, input_size, inference=model.inference)
    with tempfile.TemporaryDirectory() as tmp:
        net.collect_params().save(os.path.join(tmp, "w.params"))
        _load_typed(out, os.path.join(tmp, "w.params"))
    return out


def _load_typed(block, filename: str) -> None:
    """Load parameters keeping the saved dtypes (int8 weights, float32 ranges)."""
    block.collect_params().load(filename, ctx=mx.cpu(), cast_dtype=True, dtype_source="saved")


def _require_network(model, who: str):
    """``model`` as a Gluon ``HybridBlock`` meeting the inference level of the model protocol, else ModelProtocolError.

    A plain block with ``preprocess`` and ``class_names`` comes back wrapped (:func:`as_inference_model`).
    """
    from ._block import as_inference_model

    model = as_inference_model(model)
    require_model(model, "inference", who)
    if getattr(model, "int8", False) is True:
        raise ModelProtocolError(f"{_named(model)} is already an int8 model; {who} needs the float model it was "
                                 "made from (load the model directory that was quantized).", ["int8 model"])
    if not isinstance(model, mx.gluon.HybridBlock):
        raise ModelProtocolError(f"{who} rewrites a Gluon graph: it needs a Gluon HybridBlock. Got a "
                                 f"{type(model).__name__} instead.", ["not a Gluon HybridBlock"])
    return model


def _as_symbol_block(model):
    """``(block, input_size)``: the network as a plain ``SymbolBlock`` on CPU, for its preprocessing's size.

    A graph with shape-dependent padding is folded for ``model.preprocess``'s
    input size, which is then returned as ``(H, W)``; otherwise the graph
    takes any size and ``input_size`` is ``None``. Each ``Pad`` read only by
    a convolution then becomes that convolution's padding
    (:func:`~finetune.models.graph.merge_padding`, weights widened by zero taps).
    """
    if isinstance(model, ModelProtocol):
        symbol = model.to_symbol()
    else:
        model.hybridize()
        pre = model.preprocess
        model(mx.nd.zeros((1, pre.channels, pre.size[0], pre.size[1])))
        with tempfile.TemporaryDirectory() as tmp:
            mx.gluon.HybridBlock.export(model, os.path.join(tmp, "net"))
            symbol = mx.sym.load(os.path.join(tmp, "net-symbol.json"))
    input_size = None
    if has_shape_tricks(symbol):
        pre = model.preprocess
        symbol, folded = fold_padding(symbol, (1, pre.channels, pre.size[0], pre.size[1]))
        input_size = tuple(pre.size) if folded else None
    symbol, taps = merge_padding(symbol)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cannot decide type")
        block = mx.gluon.SymbolBlock(symbol, mx.sym.var("data"))
    params = block.collect_params()
    source = model.collect_params()
    for name, p in params.items():
        src = source[name]
        value = src.data(src.list_ctx()[0]).copyto(mx.cpu())
        if name in taps:  # a convolution that took over a Pad: zero taps where the padding was uneven
            top, bottom, left, right = taps[name]
            value = mx.nd.pad(value, mode="constant", pad_width=(0, 0, 0, 0, top, bottom, left, right))
        p._load_init(value, [mx.cpu()])
    return block, input_size
