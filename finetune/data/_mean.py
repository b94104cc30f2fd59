"""``MeanImage``: the mean image and per-channel mean/std of a data set.

Saved in MXNet's ``mean.bin`` format — ``mx.nd.save`` of ``{"mean_img":
NDArray (C, H, W)}`` in **RGB** order and raw 0–255 pixel units, exactly what
``mx.io.ImageRecordIter(mean_img=...)`` writes and reads (it decodes RGB).
Caffe's ``mean.binaryproto`` (a ``BlobProto``, BGR) is read with the library's
one Caffe wire decoder, the root module ``finetune._protobuf`` (data code does
not import the models package: data flows one way).
"""

from __future__ import annotations

import logging
import os
import struct

import numpy as np

from .._file_writes import atomic_paths
from .._parallel import default_workers, ordered_map
from .._protobuf import read_binaryproto
from ..errors import ConfigError, DataError, ImageDecodeError, MissingFileError, ShapeError, check_choice
from ._check import _progress
from ._image import read_image
from ._imagelist import ImageList
from ._preprocess import Preprocess

__all__ = ["MeanImage"]

log = logging.getLogger("finetune.data")


class MeanImage:
    """A mean image ``(C, H, W)`` with per-channel mean and standard deviation.

    All values are raw pixel units (0–255) in **RGB** order.

    Parameters
    ----------
    image : numpy.ndarray
        ``(C, H, W)`` float32 mean image, RGB.
    channel_mean, channel_std : tuple of float, optional
        Per-channel mean and std over all pixels (RGB). ``channel_mean``
        defaults to the mean of ``image``; ``channel_std`` is ``None`` when unknown.
    count : int
        Number of images averaged.

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> m = MeanImage(np.full((3, 4, 4), 100, np.float32), channel_std=(50.0, 50.0, 50.0), count=2)
    >>> path = os.path.join(tempfile.mkdtemp(), "mean.bin")
    >>> m.save(path)
    >>> MeanImage.load(path).channel_mean
    (100.0, 100.0, 100.0)
    >>> m.to_preprocess(size=(4, 4)).mean_image.shape
    (3, 4, 4)
    """

    def __init__(self, image, *, channel_mean=None, channel_std=None, count=0):
        image = np.asarray(image, np.float32)
        if image.ndim != 3:
            raise ShapeError(f"A mean image must be (C, H, W). Got shape {image.shape} instead.")
        self.image = image
        self.channel_mean = _floats(channel_mean if channel_mean is not None
                                    else image.reshape(image.shape[0], -1).mean(1), "channel_mean")
        self.channel_std = _floats(channel_std, "channel_std") if channel_std is not None else None
        self.count = int(count)

    def __repr__(self) -> str:
        mean = ", ".join(f"{v:.1f}" for v in self.channel_mean)
        std = "" if self.channel_std is None else ", std=(" + ", ".join(
            f"{v:.1f}" for v in self.channel_std) + ")"
        return f"MeanImage({'x'.join(map(str, self.image.shape))}, mean=({mean}){std}, count={self.count})"

    @property
    def shape(self) -> tuple:
        """``(C, H, W)``."""
        return self.image.shape

    def as_array(self, color: str = "RGB") -> np.ndarray:
        """The mean image ``(C, H, W)`` in ``color`` order (``"RGB"`` or ``"BGR"``)."""
        check_choice("MeanImage.as_array", "color", color, ("RGB", "BGR"))
        return self.image if color == "RGB" else np.ascontiguousarray(self.image[::-1])

    def to_preprocess(self, size=None, *, color="RGB", use_image=True, **fields) -> Preprocess:
        """A :class:`Preprocess` subtracting this mean.

        Parameters
        ----------
        size : tuple of int, optional
            Network input ``(H, W)`` (default: the mean image's size).
        color : {"RGB", "BGR"}
            The network's colour order; the mean is reordered to match.
        use_image : bool
            Subtract the mean image (``True``) or the per-channel mean and
            divide by the per-channel std (``False``).
        **fields
            Other :class:`Preprocess` fields (``resize``, ``scale``, ...).
        """
        size = tuple(size) if size is not None else self.image.shape[1:]
        mean = self.channel_mean if color == "RGB" else self.channel_mean[::-1]
        if use_image:
            fields.setdefault("std", (1.0,) * len(mean))
            return Preprocess(size=size, color=color, mean=mean,
                              mean_image=self.as_array(color), **fields)
        if self.channel_std is None:
            raise ConfigError("This MeanImage has no per-channel std; use use_image=True or pass std=.")
        std = self.channel_std if color == "RGB" else self.channel_std[::-1]
        fields.setdefault("std", std)
        return Preprocess(size=size, color=color, mean=mean, **fields)

    # ------------------------------------------------------------ computing
    @classmethod
    def compute(cls, source, *, size=None, resize=None, workers=None) -> "MeanImage":
        """Average a data set in one parallel pass.

        Parameters
        ----------
        source : RecordDataset, str or ImageList
            A dataset (its evaluation geometry is used), a ``.rec`` path /
            prefix, or an image list.
        size : tuple of int, optional
            ``(H, W)`` of the mean image; required for a path or a list.
            Images are resized (shorter side to ``resize``, default
            ``max(size)``) and centre-cropped to it, as in evaluation.
        resize : int, optional
            Shorter side before the centre crop; at least ``max(size)``
            (a smaller one could not hold the crop and is refused).
        workers : int, optional
            Processes (default: all cores).

        Returns
        -------
        MeanImage

        Raises
        ------
        ConfigError
            ``resize`` is smaller than ``size``.
        DataError
            A path that is not a record file (a ``.lst``, ``.npy``, ...): pack it first.
        """
        from ._record import RecordDataset

        if isinstance(source, RecordDataset):
            pre = source.preprocess.replace(mean_image=None)
            ds = source
        else:
            if size is None:
                raise ConfigError("MeanImage.compute needs 'size' (H, W) for a path or an ImageList.")
            pre = Preprocess(size=size, resize=resize)
            if resize is not None and pre.resize < max(pre.size):
                raise ConfigError(f"MeanImage.compute: resize={resize} (the shorter side before the centre crop) is "
                                  f"smaller than size={tuple(pre.size)}, so the crop could not fit in it; give a "
                                  f"resize of at least {max(pre.size)}, or none.")
            if not isinstance(source, ImageList):
                _check_record_path(source)
            ds = None if isinstance(source, ImageList) else RecordDataset(source, pre)
        if ds is not None:
            ctx = ("rec", ds.path, ds._file.idx, ds._rows, pre)
            n = len(ds)
        else:
            ctx = ("files", source.paths, None, None, pre)
            n = len(source)
        if n == 0:
            raise DataError("MeanImage.compute got an empty data set.")
        workers = default_workers() if workers is None else int(workers)
        step = max(1, min(64, -(-n // (4 * max(1, workers)))))  # workers=0: in this process
        chunks = [(i, min(n, i + step)) for i in range(0, n, step)]
        total = None
        parts = ordered_map(_partial_sums, ctx, chunks, workers=workers, chunksize=1)
        for part in _progress(parts, len(chunks), "mean image"):
            total = part if total is None else [a + b for a, b in zip(total, part)]
        image_sum, chan_sum, chan_sq, count = total
        if count == 0:
            raise DataError(f"MeanImage.compute: none of the {n} images could be read (each was skipped "
                            "with a warning); a mean of zero images is undefined. Run finetune.check "
                            "on the data first.")
        pixels = count * pre.size[0] * pre.size[1]
        mean = chan_sum / pixels
        std = np.sqrt(np.maximum(chan_sq / pixels - mean ** 2, 0))
        log.info("Mean image of %d images: mean %s, std %s (RGB).", count, np.round(mean, 2),
                 np.round(std, 2))
        return cls((image_sum / count).astype(np.float32), channel_mean=mean, channel_std=std,
                   count=int(count))

    @classmethod
    def load_or_compute(cls, path, source, **options) -> "MeanImage":
        """Load ``path`` if it exists, else :meth:`compute` it from ``source`` and save it there.

        What ``ImageRecordIter(mean_img=...)`` does, minus the surprise: the
        mean is computed from un-augmented images (evaluation geometry), the
        decision is logged, and the result is returned for the
        :class:`Preprocess` of prediction.

        Parameters
        ----------
        path : str or path-like
            ``mean.bin`` (or a Caffe ``.binaryproto`` to load).
        source : RecordDataset, str or ImageList
            What to average when the file is missing.
        **options
            ``size``, ``resize``, ``workers`` for :meth:`compute`.
        """
        path = os.fspath(path)
        if os.path.isfile(path):
            log.info("Using the mean image in %s.", path)
            return cls.load(path)
        mean = cls.compute(source, **options)
        mean.save(path)
        log.info("Computed the mean image of %d images and saved it to %s.", mean.count, path)
        return mean

    # --------------------------------------------------------- persistence
    def save(self, path) -> None:
        """Write MXNet's ``mean.bin``: ``{"mean_img": NDArray (C, H, W)}``, RGB, 0–255."""
        import mxnet as mx

        path = os.fspath(path)
        with atomic_paths([path]) as (tmp,):
            mx.nd.save(tmp, {"mean_img": mx.nd.array(self.image)})

    @classmethod
    def load(cls, path, *, color=None) -> "MeanImage":
        """Read MXNet's ``mean.bin`` or Caffe's ``mean.binaryproto``.

        Parameters
        ----------
        path : str or path-like
            The file. A ``.binaryproto`` (or a file that is not an MXNet
            NDArray file) is read as a Caffe ``BlobProto``.
        color : {"RGB", "BGR"}, optional
            Colour order stored in the file; default ``"RGB"`` for ``mean.bin``
            and ``"BGR"`` for Caffe files (Caffe computes means on BGR images).
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise MissingFileError(f"Mean file {path!r} does not exist.")
        if path.endswith(".binaryproto") or not _is_ndarray_file(path):
            try:
                image, default = read_binaryproto(path, DataError), "BGR"
            except DataError as exc:
                raise DataError(f"{path} is not a mean file: neither an MXNet mean.bin (finetune mean, mx.nd.save) "
                                f"nor a Caffe mean.binaryproto. Reading it as Caffe's said: {exc}") from None
        else:
            image, default = _read_ndarray_file(path), "RGB"
        if image.ndim != 3 or image.shape[0] not in (1, 3) or min(image.shape) < 1:
            raise DataError(f"{path}: a mean image must be (C, H, W) with C = 1 or 3; the file holds shape "
                            f"{image.shape}.")
        if not np.isfinite(image).all():
            raise DataError(f"{path}: the mean image holds NaN or infinite values; the file is damaged.")
        color = color or default
        check_choice("MeanImage.load", "color", color, ("RGB", "BGR"))
        if color == "BGR":
            image = image[::-1]
        return cls(np.ascontiguousarray(image))


def _floats(values, param) -> tuple:
    """``values`` as a tuple of floats; a string (never a sequence of digits) or a non-number is refused."""
    try:
        if isinstance(values, (str, bytes)):
            raise TypeError
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"MeanImage's {param!r} must be a sequence of numbers, one per channel, such as "
                          f"(123.7, 116.3, 103.5). Got {values!r:.80}.") from None


def _check_record_path(source) -> None:
    """Refuse an existing file that is not a record file (a ``.lst``, ``.npy``, ...): the mean reads records."""
    path = os.fspath(source)
    if (os.path.isfile(path) and os.path.splitext(path)[1].lower() not in (".rec", ".idx")
            and not os.path.isfile(path + ".rec")):
        what = path if path.lower().endswith((".lst", ".csv")) else "LIST"
        raise DataError(f"{path!r} is not a record file: mean reads records (.rec): pack the list first with "
                        f"`finetune pack {what} --out PREFIX` (ft.pack in Python), then give PREFIX.rec.")


def _read_ndarray_file(path) -> np.ndarray:
    """The ``mean_img`` array of an MXNet NDArray file, as float32."""
    import mxnet as mx

    try:
        saved = mx.nd.load(path)
    except mx.base.MXNetError as exc:
        raise DataError(f"{path}: not a readable MXNet mean file (it may be truncated): "
                        f"{str(exc).strip().splitlines()[0]}") from None
    if isinstance(saved, dict):
        if "mean_img" not in saved:
            raise DataError(f"{path} holds {sorted(saved)}, not 'mean_img'.")
        array = saved["mean_img"]
    elif len(saved) == 1:
        array = saved[0]
    else:
        raise DataError(f"{path} holds {len(saved)} unnamed arrays; a mean file holds one, 'mean_img'.")
    if array.dtype not in (np.float32, np.float64, np.float16, np.uint8):
        raise DataError(f"{path}: the mean image has dtype {np.dtype(array.dtype).name}; expected floats.")
    return array.asnumpy().astype(np.float32)


def _is_ndarray_file(path) -> bool:
    with open(path, "rb") as f:
        head = f.read(8)
    return len(head) == 8 and struct.unpack("<Q", head)[0] == 0x112  # MXNet's list magic


def _partial_sums(ctx, chunk):
    """Worker: sums over images ``chunk`` of the source described by ``ctx``."""
    import cv2

    from ._augment import eval_crop
    from ._recordio import RecordFile, unpack_header

    kind, where, idx, rows, pre = ctx
    h, w = pre.size
    image_sum = np.zeros((3, h, w), np.float64)
    chan_sum, chan_sq, count = np.zeros(3), np.zeros(3), 0
    records = RecordFile(where, idx) if kind == "rec" else None
    for i in range(*chunk):
        if records is not None:
            try:
                img = eval_crop(unpack_header(records.read(int(rows[i])))[2], pre, f"{where}: record {i}")
            except ImageDecodeError as exc:
                log.warning("MeanImage: skipping %s", exc)
                continue
            if img is None:
                continue
            img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2RGB)
        else:
            try:
                img = pre.resize_crop(read_image(where[i], "RGB"), source=where[i])
            except DataError as exc:
                log.warning("MeanImage: skipping %s", exc)
                continue
        chw = img.transpose(2, 0, 1).astype(np.float64)
        image_sum += chw
        flat = chw.reshape(3, -1)
        chan_sum += flat.sum(1)
        chan_sq += (flat ** 2).sum(1)
        count += 1
    return [image_sum, chan_sum, chan_sq, count]
