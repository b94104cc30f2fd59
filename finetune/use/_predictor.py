"""Classifying images with a trained network: :class:`Predictor`.

A :class:`Predictor` wraps any network that follows finetune's model protocol
(a Gluon ``HybridBlock`` mapping a normalised ``(N, C, H, W)`` batch to logits
and carrying ``.preprocess`` and ``.class_names``). It reads the
preprocessing from the model — never from the caller — so prediction cannot
disagree with training (colour order, mean image, resize and crop).

Inputs can be image files, folders, encoded bytes, decoded arrays (whose
colour order must be stated) or a :class:`~finetune.RecordDataset`, read by
the one image source of :mod:`finetune.data` that feature extraction,
Grad-CAM and calibration use too. Images
are decoded and transformed in a thread pool (OpenCV releases the GIL) while
the previous batch runs through the hybridized network. An input that cannot
be read becomes a :class:`Prediction` with an ``error`` instead of stopping the
batch.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import warnings
from numbers import Integral
from pathlib import Path

import numpy as np

from .._context import resolve_ctx
from .._text import cell
from .._parallel import default_workers
from ..data import ImageSource
from .._validation import Interval, validate
from ..errors import ConfigError, FinetuneError, MissingFileError, check_range
from ..models import create_model
from ..models import require_model
from ._names import load_name_map
from ._results import Prediction, Predictions

__all__ = ["Predictor"]

log = logging.getLogger(__name__)


def _load_pixels(item, preprocess) -> np.ndarray:
    """Decode one :class:`~finetune.data.ImageItem` and transform it: ``(C, H, W)`` float32."""
    return preprocess.transform(item.read(preprocess.color), preprocess.color)


def _resolve_tta(tta, model) -> bool:
    """``tta`` given, or (``None``) what the model's ``inference`` record asks for (``"mirror"``)."""
    from .._validation import Options, validate

    validate("Predictor", {"tta": tta}, {"tta": [Options([True, False]), None]})
    if tta is not None:
        return bool(tta)
    return model.inference.tta == "mirror"


class Predictor:
    """Classify images with a network, using the network's own preprocessing.

    Parameters
    ----------
    model : model, HybridBlock, str, path or (prototxt, caffemodel)
        Anything :func:`~finetune.create_model` accepts (a zoo name gets its
        ImageNet weights): a :class:`~finetune.Backbone`, a fine-tuned
        :class:`~finetune.Model`, a model directory, a deployment folder, a
        Caffe pair, or any ``HybridBlock`` with ``.preprocess`` (a
        :class:`~finetune.Preprocess`) and ``.class_names`` (list or ``None``)
        that maps a normalised ``(N, C, H, W)`` batch to logits ``(N, K)``.
    ctx : None, mx.Context, str or list
        Devices; ``None`` is the current context. Several devices split each
        batch. The model's parameters are moved there.
    batch_size : int
        Images per forward pass.
    names : dict, str, path-like or None
        Display names: a dict or a file (see :func:`load_name_map`) mapping
        class names to the names to show (e.g. English to Chinese). Classes
        missing from the map keep their own name.
    workers : int or None
        Decoding threads; ``None`` uses the number of cores (at most 8).
    hybridize : bool
        Hybridize the model (static graph) for speed.
    tta : bool or None
        Test-time augmentation: average the logits of each image and of its
        left-right mirror (twice the compute). ``None`` (the default) does
        what the model's ``inference`` record says (a model trained by
        :class:`~finetune.train.Recipe` asks for it; one without the record
        runs plainly); ``True`` / ``False`` override it.
    fuse : bool or None
        Run a float32 copy of the network with oneDNN operator fusion
        (:func:`~finetune.fuse`: the same outputs to float32 rounding, 3.8x
        the images per second for EfficientNet-Lite0 at 224 px).
        ``None`` (the default) fuses when the device is the one CPU and
        ``hybridize`` is on, and predicts with the network as it is if the
        graph cannot be fused; ``True`` requires it; ``False`` never fuses.
        The copy is taken here: after changing the network's weights, make
        a new :class:`Predictor`.

    Attributes
    ----------
    model : HybridBlock
        The network that runs: the one given (moved to ``ctx``) or its
        :class:`~finetune.FusedModel`.
    fused : bool
        Whether :attr:`model` is a oneDNN-fused copy.
    tta : bool
        Whether mirror test-time augmentation is used (the resolved choice).

    Examples
    --------
    >>> import mxnet as mx, numpy as np
    >>> from finetune import Preprocess
    >>> net = mx.gluon.nn.HybridSequential()
    >>> net.add(mx.gluon.nn.GlobalAvgPool2D(), mx.gluon.nn.Dense(2))
    >>> net.initialize()
    >>> net.preprocess = Preprocess(size=(8, 8), resize=8)
    >>> net.class_names = ["dark", "bright"]
    >>> pred = Predictor(net, batch_size=4)
    >>> out = pred.predict(np.zeros((2, 10, 10, 3), np.uint8), top_k=2, color="RGB")
    >>> len(out), len(out[0].indices)
    (2, 2)
    >>> pred.predict_proba(np.zeros((10, 10, 3), np.uint8), color="RGB").shape
    (1, 2)
    """

    def __init__(self, model, *, ctx=None, batch_size: int = 32, names=None,
                 workers: int | None = None, hybridize: bool = True, tta: bool | None = None,
                 fuse: bool | None = None):
        check_range("Predictor", "batch_size", batch_size, 1)
        if workers is not None:
            check_range("Predictor", "workers", workers, 1)
        self.model = create_model(model, ctx=ctx)
        require_model(self.model, "inference", "Predictor")
        self.batch_size = int(batch_size)
        self.workers = int(workers) if workers is not None else min(8, default_workers())
        self.ctx = resolve_ctx(ctx)
        self.names = load_name_map(names) if names is not None else {}
        self.hybridize = hybridize
        self.tta = _resolve_tta(tta, self.model)
        self._place_model()
        self.fused = self._fuse(fuse)
        if hybridize:
            self.model.hybridize(static_alloc=True)

    # ------------------------------------------------------------ construction
    @classmethod
    def load(cls, model_dir, *, ctx=None, batch_size: int = 32, names=None,
             workers: int | None = None, tta: bool | None = None, fuse: bool | None = None) -> "Predictor":
        """Load a saved model directory (or an exported deployment folder) and wrap it.

        Parameters
        ----------
        model_dir : str or path-like
            A folder written by ``Model.save`` / ``Backbone.save``, or by
            :func:`~finetune.export_for_deployment`.
        ctx, batch_size, names, workers, tta, fuse
            As for :class:`Predictor`.

        Returns
        -------
        Predictor
        """
        if not Path(model_dir).is_dir():
            raise MissingFileError(f"Model directory {str(model_dir)!r} does not exist.")
        return cls(create_model(model_dir, ctx=ctx), ctx=ctx, batch_size=batch_size, names=names,
                   workers=workers, tta=tta, fuse=fuse)

    def _fuse(self, choice) -> bool:
        """Replace :attr:`model` by its oneDNN-fused copy as ``choice`` says; whether it was."""
        import mxnet as mx

        from ..models import BlockModel, FusedModel, QuantizedModel, fuse

        given = self.model.block if isinstance(self.model, BlockModel) else self.model
        if choice is False or isinstance(given, (FusedModel, QuantizedModel)):
            return isinstance(given, FusedModel)
        one_cpu = self.ctx == [mx.cpu()]
        if choice is None and not (one_cpu and self.hybridize):
            return False
        if not one_cpu:
            raise ConfigError(f"Predictor(fuse=True) runs the network on the CPU (oneDNN). Got ctx={self.ctx} "
                              "instead; pass ctx=mx.cpu() or fuse=False.")
        try:
            self.model = fuse(self.model)
        except Exception as exc:  # noqa: BLE001 - fusion only speeds up; the network as it is still predicts
            if choice:
                raise
            log.info("Predicting with the network as it is: oneDNN fusion did not apply (%s: %s).",
                     type(exc).__name__, exc)
            return False
        return True

    def _place_model(self):
        params = self.model.collect_params()
        try:
            current = {c for p in params.values() for c in p.list_ctx()}
        except RuntimeError:  # deferred initialisation: nothing placed yet
            current = set()
        if current and current != set(self.ctx):
            params.reset_ctx(self.ctx)

    # ------------------------------------------------------------- properties
    @property
    def preprocess(self):
        """The model's :class:`~finetune.Preprocess` (read-only view)."""
        return self.model.preprocess

    @property
    def class_names(self) -> list | None:
        """The model's class names (``None`` when it has none)."""
        names = self.model.class_names
        return list(names) if names is not None else None

    def __reduce_ex__(self, protocol):
        raise ConfigError("A Predictor holds live MXNet state (a hybridized graph on a device) and cannot be "
                          "pickled. Pickle its model (or pass the model directory's path) and make a Predictor "
                          "from it where it is unpickled: finetune.Predictor(model).")

    def __repr__(self) -> str:
        parts = [type(self.model).__name__]
        if self.batch_size != 32:
            parts.append(f"batch_size={self.batch_size}")
        if self.names:
            parts.append(f"names=<{len(self.names)} names>")
        if self.tta:
            parts.append("tta=True")
        return f"Predictor({', '.join(parts)})"

    # ---------------------------------------------------------------- running
    def predict(self, inputs, top_k: int = 5, *, color: str | None = None) -> Predictions:
        """Top-k classes of each input image.

        Parameters
        ----------
        inputs : path, folder, bytes, array, list of those, ImageList, RecordDataset or dataset
            Image files, folders (all images below, sorted, as
            :func:`finetune.data.list_images` lists them), encoded image
            bytes, decoded ``(H, W, 3)`` / ``(N, H, W, 3)`` uint8 arrays in 0–255
            (state their ``color``), ``(image, label)`` pairs, an
            :class:`~finetune.ImageList` or a record dataset (stored images,
            with their labels), or a dataset giving arrays.
        top_k : int
            How many classes per image (clipped to the number of classes).
        color : {"RGB", "BGR"} or None
            Colour order of decoded arrays; required when arrays are given.

        Returns
        -------
        Predictions
            One :class:`Prediction` per image, in input order; unreadable
            images have their ``error`` set. Each keeps the image it was
            computed from (:attr:`Prediction.item`), which plots read.
        """
        validate("Predictor.predict", {"top_k": top_k}, {"top_k": [Interval(Integral, 1, None)]})
        items = ImageSource(inputs, color=color).items
        probs, errors = self._run(items)
        return self._to_predictions(items, probs, errors, int(top_k))

    def predict_proba(self, inputs, *, color: str | None = None) -> np.ndarray:
        """Softmax probabilities over all classes.

        Parameters
        ----------
        inputs, color
            As for :meth:`predict`.

        Returns
        -------
        numpy.ndarray
            ``(N, K)`` float32; the row of an unreadable image is NaN (and a
            warning names it).
        """
        items = ImageSource(inputs, color=color).items
        probs, errors = self._run(items)
        if errors:
            first = next(iter(errors.items()))
            warnings.warn(
                f"{len(errors)} of {len(items)} images could not be read; their rows are NaN "
                f"(first: {items[first[0]].source}: {first[1]}).", stacklevel=2,
            )
        return probs

    def logits(self, inputs, *, color: str | None = None) -> np.ndarray:
        """The network's raw outputs ``(N, K)`` (pre-softmax); NaN rows for unreadable images."""
        items = ImageSource(inputs, color=color).items
        out, _ = self._run(items, softmax=False)
        return out

    def _to_predictions(self, items, probs, errors, top_k) -> Predictions:
        class_names = self.class_names
        result = Predictions()
        for i, item in enumerate(items):
            if i in errors:
                result.append(Prediction(item.source, error=errors[i], label=item.label, item=item))
                continue
            row = probs[i]
            k = min(top_k, row.shape[0])
            idx = np.argsort(-row, kind="stable")[:k]
            names = [class_names[j] if class_names is not None and j < len(class_names) else str(j) for j in idx]
            display = [self.names.get(n, n) for n in names]
            result.append(Prediction(item.source, tuple(idx), tuple(names), tuple(row[idx]),
                                     tuple(display), label=item.label, item=item))
        return result

    def _run(self, items, *, softmax: bool = True):
        """Decode in a thread pool, forward in batches; returns ``(array (N, K), {i: error})``."""
        from .._progress import RESULT, progress_bar

        n = len(items)
        errors: dict = {}
        outputs = None
        quiet = n <= 4 * self.batch_size  # a bar only for long runs (and only on a terminal)
        failed = 0
        with concurrent.futures.ThreadPoolExecutor(self.workers) as pool, \
                progress_bar(total=n, unit="img", desc="predict", show=not quiet) as bar:
            for where, batch in self._batches(items, pool, errors):
                bar.update(len(where) + len(errors) - failed)
                failed = len(errors)
                if batch:
                    out = self._forward(np.stack(batch), softmax)
                    if outputs is None:
                        outputs = np.full((n, out.shape[1]), np.nan, np.float32)
                    outputs[where] = out
        if outputs is None:
            outputs = np.full((n, len(self.class_names or [])), np.nan, np.float32)
        for i, msg in errors.items():
            log.warning("Skipping %s: %s", cell(items[i].source), cell(msg), extra=RESULT)
        return outputs, errors

    def _batches(self, items, pool, errors):
        """Yield ``(indices, arrays)`` batches, decoding up to two batches ahead in ``pool``.

        Failed items go to ``errors`` (index -> message) instead of the batch.
        """
        pre, n = self.preprocess, len(items)
        pending = collections.deque()
        next_item = 0

        def fill():
            nonlocal next_item
            while next_item < n and len(pending) < 3 * self.batch_size:
                pending.append((next_item, pool.submit(_load_pixels, items[next_item], pre)))
                next_item += 1

        fill()
        while pending:
            batch, where = [], []
            while pending and len(batch) < self.batch_size:
                i, fut = pending.popleft()
                try:
                    batch.append(fut.result())
                    where.append(i)
                except FinetuneError as exc:
                    errors[i] = str(exc)
                except Exception as exc:  # noqa: BLE001 - report per item, never stop the batch
                    errors[i] = f"{type(exc).__name__}: {exc}"
            fill()  # keep decoding while the network runs on this batch
            yield where, batch

    def _logits(self, x):
        import mxnet as mx

        out = self.model(x)
        out = out[0] if isinstance(out, (list, tuple)) else out
        if self.tta:  # mirror test-time augmentation: the mean of the two views' logits
            flipped = self.model(mx.nd.flip(x, axis=3))
            out = (out + (flipped[0] if isinstance(flipped, (list, tuple)) else flipped)) / 2
        return out

    def _forward(self, batch: np.ndarray, softmax: bool) -> np.ndarray:
        import mxnet as mx

        if len(self.ctx) == 1 or len(batch) < len(self.ctx):
            parts = [mx.nd.array(batch, ctx=self.ctx[0])]
        else:
            parts = mx.gluon.utils.split_and_load(batch, self.ctx, even_split=False)
        outs = [self._logits(x) for x in parts]
        if softmax:
            outs = [mx.nd.softmax(o.astype("float32"), axis=-1) for o in outs]
        out = np.concatenate([o.asnumpy() for o in outs], axis=0)
        if out.ndim != 2:
            out = out.reshape(out.shape[0], -1)
        return out.astype(np.float32, copy=False)
