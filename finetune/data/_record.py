"""``RecordDataset``: a Gluon dataset over ``.rec`` files.

Its batches come from :class:`~finetune.data.RecordLoader` (in
``_record_loader.py``), which :meth:`RecordDataset.loader` makes.
"""

from __future__ import annotations

import contextlib
import logging
import os

import cv2
import numpy as np

from .._file_writes import settled
from .._parallel import default_workers
from ..errors import ConfigError, ImageDecodeError, ImageTooLargeError, RecordFormatError
from ._augment import Augment, eval_crop, train_crop
from ._image import decode_image
from ._listfiles import classes_path_for, find_class_names
from ._preprocess import Preprocess
from ._recordio import RecordFile, unpack_header

__all__ = ["RecordDataset"]

log = logging.getLogger("finetune.data")

try:  # a Gluon Dataset when MXNet is there (it always is at run time)
    from mxnet.gluon.data import Dataset as _Base
except ImportError:  # pragma: no cover
    _Base = object


def _split_path(path):
    path = os.fspath(path)
    stem, ext = os.path.splitext(path)
    if ext.lower() in (".rec", ".idx"):
        return stem + ".rec", stem + ".idx", stem
    return path + ".rec", path + ".idx", path


class RecordDataset(_Base):
    """A Gluon ``Dataset`` of ``(image, label)`` pairs read from a ``.rec`` file.

    Works with files from :func:`~finetune.pack` and from MXNet's own tools.
    Images come out as float32 ``(C, H, W)`` arrays, normalised by
    ``preprocess`` (size, colour order, mean/std or mean image) — pass the
    model's ``preprocess`` so training sees what the network expects.

    Parameters
    ----------
    path : str or path-like
        ``<prefix>``, ``<prefix>.rec`` or ``<prefix>.idx``. The ``.idx`` is
        used when it exists (else the ``.rec`` is scanned once).
    preprocess : Preprocess, optional
        Normalisation and evaluation geometry (default: ``Preprocess()``).
    train : bool
        Apply ``augment`` (random geometry and colour) instead of the
        evaluation resize + centre crop.
    augment : Augment, optional
        Training augmentation (default: ``Augment()``: random resized crop and mirror).
    num_parts, part_index : int
        Read only part ``part_index`` of ``num_parts`` equal contiguous parts
        (one per distributed worker).
    class_names : list of str, optional
        Default: read from ``<prefix>_classes.txt`` when it exists (for
        ``data_train`` also ``data_classes.txt``).

    Raises
    ------
    RecordFormatError
        The ``.rec`` / ``.idx`` is truncated, corrupt or mismatched.

    Examples
    --------
    >>> import os, tempfile, cv2, numpy as np, finetune as ft
    >>> root = tempfile.mkdtemp()
    >>> for name in ("a", "b"):
    ...     os.mkdir(os.path.join(root, name))
    ...     _ = cv2.imwrite(os.path.join(root, name, "1.png"), np.zeros((40, 50, 3), np.uint8))
    >>> _ = ft.pack(ft.ImageList.from_folder(root), os.path.join(root, "data"), workers=1)
    >>> ds = RecordDataset(os.path.join(root, "data"), Preprocess(size=(32, 32), resize=36))
    >>> image, label = ds[1]
    >>> image.shape, image.dtype, label, ds.class_names
    ((3, 32, 32), dtype('float32'), 1, ['a', 'b'])
    """

    def __init__(self, path, preprocess=None, *, train=False, augment=None, num_parts=1,
                 part_index=0, class_names=None):
        rec, idx, prefix = _split_path(path)
        self.path = rec
        self.preprocess = preprocess if preprocess is not None else Preprocess()
        if not isinstance(self.preprocess, Preprocess):
            raise ConfigError("The 'preprocess' parameter of RecordDataset must be a Preprocess. "
                              f"Got {type(preprocess).__name__} instead.")
        self.train = bool(train)
        self.augment = augment if augment is not None else Augment()
        if not isinstance(self.augment, Augment):
            raise ConfigError("The 'augment' parameter of RecordDataset must be an Augment. "
                              f"Got {type(augment).__name__} instead.")
        if int(num_parts) < 1 or not 0 <= int(part_index) < int(num_parts):
            raise ConfigError(f"RecordDataset needs 0 <= part_index < num_parts. Got "
                              f"part_index={part_index!r}, num_parts={num_parts!r}.")
        self.num_parts, self.part_index = int(num_parts), int(part_index)
        settled([rec, idx, classes_path_for(prefix)], what="records (pack them again)")  # one pack's parts only
        self._file = RecordFile(rec, idx if os.path.isfile(idx) else None)
        self._rows = np.array_split(np.arange(len(self._file)), self.num_parts)[self.part_index]
        self.class_names = class_names if class_names is not None else find_class_names(prefix)
        pre = self.preprocess
        self._norm = (np.ascontiguousarray(pre.mean_array(*pre.size), np.float32),
                      (pre.scale / np.asarray(pre.std, np.float32)).reshape(-1, 1, 1))

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        mode = "train" if self.train else "eval"
        part = f", part {self.part_index}/{self.num_parts}" if self.num_parts > 1 else ""
        return f"RecordDataset({self.path!r}, {len(self)} images, {mode}{part})"

    # ---------------------------------------------------------------- access
    def _row(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"RecordDataset index {i} out of range for {len(self)} items.")
        return int(self._rows[i])

    def record(self, i: int):
        """``(label, id, encoded image bytes)`` of item ``i``."""
        return unpack_header(self._file.read(self._row(i)))

    def header(self, i: int):
        """``(label, id)`` of item ``i``, reading only its record header (not the image)."""
        return self._file.label(self._row(i))

    def image(self, i: int) -> np.ndarray:
        """Item ``i`` decoded, without any transform: ``(H, W, 3)`` uint8 RGB.

        Raises
        ------
        ImageTooLargeError
            The stored image declares more than ``finetune.data.MAX_IMAGE_PIXELS`` pixels.
        RecordFormatError
            The stored image is truncated or cannot be decoded.
        """
        _, rid, buf = self.record(i)
        with self._checked(i, rid) as source:
            return decode_image(buf, "RGB", source=source)

    @property
    def labels(self) -> np.ndarray:
        """The label of every item (reads only the record headers)."""
        return np.asarray([_label(self._file.label(int(r))[0]) for r in self._rows])

    def _bad_image(self, i, rid, why="data OpenCV cannot decode"):
        return RecordFormatError(
            f"{self.path}: record {i} (id {rid}) holds {why}; the .rec is "
            "corrupt. Re-create it with finetune pack (it skips bad images).")

    @contextlib.contextmanager
    def _checked(self, i, rid):
        """Turn the decoder's refusals into errors naming the record.

        A bomb stays an :class:`ImageTooLargeError` (the cap can be raised);
        a truncated or undecodable image is a :class:`RecordFormatError`.
        """
        source = f"{self.path}: record {i} (id {rid})"
        try:
            yield source
        except ImageTooLargeError:
            raise
        except ImageDecodeError as exc:
            why = str(exc).removeprefix(source + ": ").rstrip(".")
            raise self._bad_image(i, rid, f"an image that cannot be used ({why})") from None

    def load(self, i: int, rng=None, out=None):
        """Item ``i`` as ``(image (C, H, W) float32, label)``, written into ``out`` if given."""
        label, rid, buf = self.record(i)
        with self._checked(i, rid) as source:
            if self.train:
                rng = rng if rng is not None else np.random
                img = train_crop(buf, self.augment, self.preprocess, rng, source)
            else:
                img = eval_crop(buf, self.preprocess, source)
        if img is None:
            raise self._bad_image(i, rid)
        if out is None:
            out = np.empty((3,) + img.shape[:2], np.float32)
        self._normalise(img, out)
        return out, _label(label)

    def _normalise(self, img, out):
        """BGR ``(H, W, 3)`` -> normalised ``(C, H, W)`` in the network's order, into ``out``.

        Channel by channel on contiguous planes: several times faster than
        one subtraction through a transposed view.
        """
        mean, factor = self._norm
        planes = cv2.split(np.ascontiguousarray(img))
        if self.preprocess.color == "RGB":
            planes = planes[::-1]
        per_channel = mean.shape[1] == 1
        for c, plane in enumerate(planes):
            np.copyto(out[c], plane, casting="unsafe")
            out[c] -= mean[c, 0, 0] if per_channel else mean[c]
            out[c] *= factor[c, 0, 0]

    def __getitem__(self, i):
        return self.load(i)

    # ---------------------------------------------------------------- loader
    def loader(self, batch_size, *, shuffle=None, workers=None, last_batch="keep", seed=None):
        """Batches of ``(data (N, C, H, W), label (N,))`` NDArrays.

        Parameters
        ----------
        batch_size : int
            Images per batch.
        shuffle : bool, optional
            Shuffle each epoch (default: ``True`` in train mode).
        workers : int, optional
            Worker processes (default: all cores); 0 loads in this process.
        last_batch : {"keep", "discard"}
            What to do with a final smaller batch.
        seed : int, optional
            Makes the order and the augmentation of every epoch reproducible.

        Returns
        -------
        RecordLoader
            Iterate it once per epoch.
        """
        from ._record_loader import RecordLoader

        return RecordLoader(self, batch_size, shuffle=self.train if shuffle is None else shuffle,
                            workers=default_workers() if workers is None else workers,
                            last_batch=last_batch, seed=seed)


def _label(label):
    if isinstance(label, np.ndarray):
        return label
    return int(label) if float(label).is_integer() else float(label)
