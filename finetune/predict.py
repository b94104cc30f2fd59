"""Classifying images with a trained network: :class:`Predictor`.

A :class:`Predictor` wraps any network that follows finetune's model protocol
(a Gluon ``HybridBlock`` mapping a normalised ``(N, C, H, W)`` batch to logits
and carrying ``.preprocess`` and ``.class_names``). It reads the
preprocessing from the model — never from the caller — so prediction cannot
disagree with training (colour order, mean image, resize and crop).

Inputs can be image files, folders, encoded bytes, decoded arrays (whose
colour order must be stated) or a :class:`~finetune.RecordDataset`. Images
are decoded and transformed in a thread pool (OpenCV releases the GIL) while
the previous batch runs through the hybridized network. An input that cannot
be read becomes a :class:`Prediction` with an ``error`` instead of stopping the
batch.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError, FinetuneError, MissingFileError, ModelError, check_range

__all__ = ["Prediction", "Predictions", "Predictor", "load_name_map"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jpe")


# --------------------------------------------------------------------------- values
@dataclasses.dataclass(frozen=True)
class Prediction:
    """The top-k classes of one input image.

    Parameters
    ----------
    source : str
        Where the image came from: a file path, ``"array[3]"``, ``"record[12]"``.
    indices : tuple of int
        Class indices, most probable first.
    names : tuple of str
        The model's class names for ``indices`` (the index as a string when the
        model has no class names).
    probabilities : tuple of float
        Softmax probabilities for ``indices``.
    display : tuple of str
        Names for display (translated through a name map, else ``names``).
    error : str or None
        Why the image could not be classified; the other fields are then empty.
    label : int or None
        The true class, when the input carried one (record datasets).

    Examples
    --------
    >>> p = Prediction("cat.jpg", (3, 1), ("cat", "dog"), (0.9, 0.1))
    >>> p
    Prediction('cat.jpg', cat 0.900, dog 0.100)
    >>> p.index, p.name, round(p.probability, 2)
    (3, 'cat', 0.9)
    """

    source: str
    indices: tuple = ()
    names: tuple = ()
    probabilities: tuple = ()
    display: tuple = ()
    error: str | None = None
    label: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "indices", tuple(int(i) for i in self.indices))
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "probabilities", tuple(float(p) for p in self.probabilities))
        object.__setattr__(self, "display", tuple(str(n) for n in self.display) or self.names)

    @property
    def ok(self) -> bool:
        """``True`` unless the image could not be classified."""
        return self.error is None

    @property
    def index(self) -> int | None:
        """The top-1 class index (``None`` on error)."""
        return self.indices[0] if self.indices else None

    @property
    def name(self) -> str | None:
        """The top-1 class name (``None`` on error)."""
        return self.names[0] if self.names else None

    @property
    def probability(self) -> float | None:
        """The top-1 probability (``None`` on error)."""
        return self.probabilities[0] if self.probabilities else None

    def to_dict(self) -> dict:
        """A JSON-ready dict: ``source``, ``error``, ``label`` and a ``top`` list."""
        d = {"source": self.source}
        if self.label is not None:
            d["label"] = self.label
        if self.error is not None:
            d["error"] = self.error
        d["top"] = [
            {"index": i, "name": n, "display": s, "probability": p}
            for i, n, s, p in zip(self.indices, self.names, self.display, self.probabilities)
        ]
        return d

    def __repr__(self) -> str:
        if self.error is not None:
            return f"Prediction({self.source!r}, error={self.error!r})"
        shown = ", ".join(f"{n} {p:.3f}" for n, p in zip(self.display[:3], self.probabilities[:3]))
        more = ", ..." if len(self.indices) > 3 else ""
        return f"Prediction({self.source!r}, {shown}{more})"


class Predictions(list):
    """A list of :class:`Prediction`, one per input, in input order.

    Adds :meth:`to_table`, :meth:`to_json`, :meth:`to_records` and the
    :attr:`errors` that occurred.

    Examples
    --------
    >>> ps = Predictions([Prediction("a.jpg", (0, 1), ("cat", "dog"), (0.75, 0.25)),
    ...                   Prediction("b.jpg", error="not a decodable image")])
    >>> print(ps.to_table(top_k=1))
    source  rank  class  probability
    a.jpg      1  cat         0.7500
    b.jpg      -  ERROR: not a decodable image
    >>> len(ps.errors)
    1
    """

    @property
    def errors(self) -> list:
        """The predictions that failed (unreadable inputs)."""
        return [p for p in self if p.error is not None]

    def to_records(self, top_k: int | None = None) -> list:
        """Flat rows ``{source, rank, index, name, display, probability}`` (e.g. for pandas)."""
        rows = []
        for p in self:
            if p.error is not None:
                rows.append({"source": p.source, "rank": None, "index": None, "name": None,
                             "display": None, "probability": None, "error": p.error})
                continue
            k = len(p.indices) if top_k is None else top_k
            for rank, (i, n, s, pr) in enumerate(zip(p.indices[:k], p.names[:k], p.display[:k],
                                                     p.probabilities[:k]), 1):
                rows.append({"source": p.source, "rank": rank, "index": i, "name": n,
                             "display": s, "probability": pr, "error": None})
        return rows

    def to_table(self, top_k: int | None = None) -> str:
        """A plain-text table, one row per (image, rank)."""
        header = ("source", "rank", "class", "probability")
        lines = []
        for r in self.to_records(top_k):
            if r["error"] is not None:
                lines.append((r["source"], "-", "ERROR: " + r["error"], None))
            else:
                lines.append((r["source"], str(r["rank"]), r["display"], f"{r['probability']:.4f}"))
        w0 = max([len(header[0])] + [len(x[0]) for x in lines])
        w2 = max([len(header[2])] + [len(x[2]) for x in lines if x[3] is not None])
        out = [f"{header[0]:<{w0}}  {header[1]}  {header[2]:<{w2}}  {header[3]}"]
        for src, rank, name, prob in lines:
            if prob is None:
                out.append(f"{src:<{w0}}  {rank:>4}  {name}")
            else:
                out.append(f"{src:<{w0}}  {rank:>4}  {name:<{w2}}  {prob:>11}")
        return "\n".join(out)

    def to_json(self, path=None, *, indent: int = 2) -> str:
        """The predictions as JSON (a list of :meth:`Prediction.to_dict`); also written to ``path``."""
        text = json.dumps([p.to_dict() for p in self], indent=indent, ensure_ascii=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    def __repr__(self) -> str:
        return f"Predictions({list.__repr__(self)})"


def load_name_map(source) -> dict:
    """Load a map from class name to display name.

    Parameters
    ----------
    source : dict, str or path-like
        A dict, a JSON file holding an object, or a text file with one
        ``name<TAB>display`` pair per line (UTF-8; empty lines and lines
        starting with ``#`` are skipped).

    Returns
    -------
    dict of str to str

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "zh.txt")
    >>> _ = open(path, "w", encoding="utf-8").write("cat\\t猫\\ndog\\t狗\\n")
    >>> load_name_map(path)
    {'cat': '猫', 'dog': '狗'}
    """
    if isinstance(source, dict):
        return {str(k): str(v) for k, v in source.items()}
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise MissingFileError(f"Name map file {path!r} does not exist.")
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    if path.lower().endswith(".json") or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"Name map {path!r} is not valid JSON: {exc}.") from None
        if not isinstance(data, dict):
            raise DataError(f"Name map {path!r} must hold a JSON object {{name: display}}.")
        return {str(k): str(v) for k, v in data.items()}
    names = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.rstrip("\r\n").split("\t")
        if len(parts) != 2:
            raise DataError(
                f"{path}:{number}: expected 'name<TAB>display', got {line!r}. "
                "Separate the class name and its display name by one tab."
            )
        names[parts[0].strip()] = parts[1].strip()
    return names


# --------------------------------------------------------------------------- inputs
@dataclasses.dataclass
class _Item:
    """One input: where it is from and how to get its decoded pixels."""

    source: str
    kind: str  # "path", "bytes", "array"
    value: object
    color: str = "RGB"
    label: int | None = None


def _list_folder(folder: Path) -> list:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"Folder {str(folder)!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)}).")
    return files


def _as_items(inputs, color) -> list:
    """Normalise every accepted input form to a list of :class:`_Item`."""
    if color is not None and color not in ("RGB", "BGR"):
        raise ConfigError(f"The 'color' parameter must be 'RGB' or 'BGR'. Got {color!r} instead.")
    if _is_record_dataset(inputs):
        return _record_items(inputs)
    if _is_image_list(inputs):
        return _image_list_items(inputs)
    if isinstance(inputs, np.ndarray):
        if inputs.ndim == 4 or (inputs.ndim == 3 and inputs.shape[-1] not in (1, 3, 4)):
            arrays = list(inputs)
        else:
            arrays = [inputs]
        return [_array_item(a, i, color) for i, a in enumerate(arrays)]
    if isinstance(inputs, (str, os.PathLike, bytes, bytearray)):
        inputs = [inputs]
    items = []
    for i, x in enumerate(inputs):
        if isinstance(x, (str, os.PathLike)):
            p = Path(x)
            if p.is_dir():
                items.extend(_Item(str(f), "path", f) for f in _list_folder(p))
            else:
                items.append(_Item(str(x), "path", p))
        elif isinstance(x, (bytes, bytearray)):
            items.append(_Item(f"bytes[{i}]", "bytes", bytes(x)))
        elif isinstance(x, np.ndarray):
            items.append(_array_item(x, i, color))
        else:
            raise ConfigError(
                f"Cannot predict on input {i} of type {type(x).__name__}. Pass file paths, folders, "
                "encoded bytes, decoded (H, W, 3) uint8 arrays (with color='RGB' or 'BGR') or a RecordDataset."
            )
    return items


def _array_item(array, i, color) -> _Item:
    if color is None:
        raise ConfigError(
            "Decoded arrays need their colour order: pass color='RGB' (PIL, skimage, matplotlib) "
            "or color='BGR' (cv2.imread). Guessing it is how BGR/RGB bugs happen."
        )
    return _Item(f"array[{i}]", "array", array, color)


def _is_record_dataset(obj) -> bool:
    return callable(getattr(obj, "record", None)) and hasattr(obj, "__len__") and hasattr(obj, "path")


def _is_image_list(obj) -> bool:
    return callable(getattr(obj, "full_path", None)) and hasattr(obj, "entries")


def _record_items(dataset) -> list:
    """Items of a RecordDataset: the stored (encoded) images with their labels.

    The stored bytes go through the model's own evaluation preprocessing, as
    files do, whatever preprocessing the dataset object was built with.
    """
    items = []
    for i in range(len(dataset)):
        label, _, buf = dataset.record(i)
        items.append(_Item(f"record[{i}]", "bytes", buf, "RGB", _label_int(label)))
    return items


def _image_list_items(images) -> list:
    return [_Item(images.full_path(e), "path", Path(images.full_path(e)), "RGB", _label_int(e.label))
            for e in images.entries]


def _label_int(label):
    if label is None:
        return None
    arr = np.atleast_1d(np.asarray(label, dtype=np.float64))
    return int(arr[0])


def _load_pixels(item: _Item, preprocess):
    """Decode (if needed) and transform one item: ``(C, H, W)`` float32."""
    from .data import decode_image, read_image

    if item.kind == "path":
        img = read_image(item.value, preprocess.color)
        return preprocess.transform(img, preprocess.color)
    if item.kind == "bytes":
        img = decode_image(item.value, preprocess.color, source=item.source)
        return preprocess.transform(img, preprocess.color)
    arr = np.asarray(item.value)
    if arr.dtype != np.uint8 and arr.size and float(arr.max()) <= 1.0 + 1e-6:
        warnings.warn(
            f"{item.source}: a float array with values in [0, 1]; finetune expects raw 0-255 pixels. "
            "Multiply by 255 first.", stacklevel=4,
        )
    return preprocess.transform(arr, item.color)


# --------------------------------------------------------------------------- the predictor
def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Predictor:
    """Classify images with a network, using the network's own preprocessing.

    Parameters
    ----------
    model : mxnet.gluon.HybridBlock
        A :class:`~finetune.Backbone`, a fine-tuned :class:`~finetune.Model`
        or any ``HybridBlock`` with ``.preprocess`` (a
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
    tta : bool
        Test-time augmentation: average the logits of each image and of its
        left-right mirror (twice the compute; use it for models trained with
        mirroring, e.g. by :class:`~finetune.train.Recipe`).

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
                 workers: int | None = None, hybridize: bool = True, tta: bool = False):
        from ._context import resolve_ctx

        preprocess = getattr(model, "preprocess", None)
        if preprocess is None or not hasattr(preprocess, "transform"):
            raise ModelError(
                f"Predictor needs a model carrying its preprocessing (.preprocess, a finetune.Preprocess); "
                f"{type(model).__name__} has none. Set model.preprocess = Preprocess(...) first."
            )
        check_range("Predictor", "batch_size", batch_size, 1)
        if workers is not None:
            check_range("Predictor", "workers", workers, 1)
        self.model = model
        self.batch_size = int(batch_size)
        self.workers = int(workers) if workers is not None else min(8, _cores())
        self.ctx = resolve_ctx(ctx)
        self.names = load_name_map(names) if names is not None else {}
        self.hybridize = hybridize
        self.tta = bool(tta)
        self._place_model()
        if hybridize:
            model.hybridize(static_alloc=True)

    # ------------------------------------------------------------ construction
    @classmethod
    def load(cls, model_dir, *, ctx=None, batch_size: int = 32, names=None,
             workers: int | None = None) -> "Predictor":
        """Load a saved model directory (or an exported deployment folder) and wrap it.

        Parameters
        ----------
        model_dir : str or path-like
            A folder written by ``Model.save`` / ``Backbone.save``, or by
            :func:`~finetune.export_for_deployment`.
        ctx, batch_size, names, workers
            As for :class:`Predictor`.

        Returns
        -------
        Predictor
        """
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise MissingFileError(f"Model directory {str(model_dir)!r} does not exist.")
        from .deploy import _is_deployment, load_deployment

        if _is_deployment(model_dir):
            model = load_deployment(model_dir, ctx=ctx)
        else:
            from .models import load_model

            model = load_model(model_dir, ctx=ctx)
        return cls(model, ctx=ctx, batch_size=batch_size, names=names, workers=workers)

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
        names = getattr(self.model, "class_names", None)
        return list(names) if names is not None else None

    def __repr__(self) -> str:
        parts = [type(self.model).__name__]
        if self.batch_size != 32:
            parts.append(f"batch_size={self.batch_size}")
        if self.names:
            parts.append(f"names=<{len(self.names)} names>")
        return f"Predictor({', '.join(parts)})"

    # ---------------------------------------------------------------- running
    def predict(self, inputs, top_k: int = 5, *, color: str | None = None) -> Predictions:
        """Top-k classes of each input image.

        Parameters
        ----------
        inputs : path, folder, bytes, array, list of those, or RecordDataset
            Image files, folders (all images below, sorted), encoded image
            bytes, decoded ``(H, W, 3)`` / ``(N, H, W, 3)`` uint8 arrays in 0–255
            (state their ``color``), or a record dataset (stored images, with
            their labels).
        top_k : int
            How many classes per image (clipped to the number of classes).
        color : {"RGB", "BGR"} or None
            Colour order of decoded arrays; required when arrays are given.

        Returns
        -------
        Predictions
            One :class:`Prediction` per image, in input order; unreadable
            images have their ``error`` set.
        """
        check_range("Predictor.predict", "top_k", top_k, 1)
        items = _as_items(inputs, color)
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
        items = _as_items(inputs, color)
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
        items = _as_items(inputs, color)
        out, _ = self._run(items, softmax=False)
        return out

    def _to_predictions(self, items, probs, errors, top_k) -> Predictions:
        class_names = self.class_names
        result = Predictions()
        for i, item in enumerate(items):
            if i in errors:
                result.append(Prediction(item.source, error=errors[i], label=item.label))
                continue
            row = probs[i]
            k = min(top_k, row.shape[0])
            idx = np.argsort(-row, kind="stable")[:k]
            names = [class_names[j] if class_names is not None and j < len(class_names) else str(j) for j in idx]
            display = [self.names.get(n, n) for n in names]
            result.append(Prediction(item.source, tuple(idx), tuple(names), tuple(row[idx]),
                                     tuple(display), label=item.label))
        return result

    def _run(self, items, *, softmax: bool = True):
        """Decode in a thread pool, forward in batches; returns ``(array (N, K), {i: error})``."""
        from tqdm import tqdm

        n = len(items)
        errors: dict = {}
        outputs = None
        quiet = n <= 4 * self.batch_size  # a bar only for long runs (and only on a terminal)
        failed = 0
        with concurrent.futures.ThreadPoolExecutor(self.workers) as pool, \
                tqdm(total=n, unit="img", desc="predict", disable=True if quiet else None, leave=False) as bar:
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
            log.warning("Skipping %s: %s", items[i].source, msg)
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
