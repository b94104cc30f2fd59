"""The one way images enter finetune's "use" side: every accepted input form → decoded pixels.

:class:`ImageSource` turns what a caller hands to :class:`~finetune.Predictor`,
:func:`~finetune.evaluate`, :class:`~finetune.FeatureExtractor`,
:class:`~finetune.GradCAM` or :func:`~finetune.quantize` into one list of
:class:`ImageItem` s — image files, folders (listed by
:func:`~finetune.data.list_images`), encoded bytes, decoded arrays with their
colour order, ``(image, label)`` pairs, an :class:`~finetune.ImageList`, a
:class:`~finetune.RecordDataset` (its stored images) or any dataset — and
decodes each one on demand, in the colour order the consumer asks for. Each
consumer then applies its own geometry (the model's
:class:`~finetune.Preprocess`, or feature extraction's aspect-preserving
resize).

Listing is cheap and eager (a folder is listed, a record file's headers are
read for labels and names); decoding is lazy and per item, so a bad file
fails only its own item and a thread pool can decode items in parallel.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import os

import numpy as np

from ..errors import ConfigError, DataError, FinetuneError
from ._folder import IMAGE_EXTENSIONS, image_paths
from ._image import decode_image, read_image, to_color
from ._imagelist import ImageList
from ._pixels import pixels, split_batch

__all__ = ["ImageItem", "ImageSource", "is_image_list", "is_record_dataset", "open_labelled"]

_COLORS = ("RGB", "BGR")


@dataclasses.dataclass
class ImageItem:
    """One input image: what to call it, where its pixels are, and its label.

    Attributes
    ----------
    source : str
        Name used in reports and error messages (a path, ``"bytes[3]"``, ...).
    kind : {"path", "bytes", "array", "record", "dataset"}
        Where the pixels are: a file, encoded bytes, a decoded array, record
        ``i`` of a record dataset, item ``i`` of a dataset.
    value : object
        The path, the bytes, the array, or ``(dataset, i)``.
    color : {"RGB", "BGR"}
        Colour order of a decoded array or dataset item.
    label : object
        The label when the input carries one, else ``None``.
    """

    source: str
    kind: str
    value: object
    color: str = "RGB"
    label: object = None

    def read(self, color: str = "RGB") -> np.ndarray:
        """The decoded image ``(H, W, 3)`` in ``color`` order.

        Files, bytes and records decode to uint8; arrays keep their values
        (uint8, or float32 for float input in 0–255).
        """
        if self.kind == "path":
            return read_image(self.value, color)
        if self.kind == "bytes":
            return decode_image(self.value, color, source=self.source)
        if self.kind == "record":
            dataset, i = self.value
            return decode_image(dataset.record(i)[2], color, source=self.source)
        value = self.value
        if self.kind == "dataset":
            dataset, i = self.value
            value = dataset[i]
            if isinstance(value, tuple):  # (image, label)
                value = value[0]
        return to_color(pixels(value, self.source), self.color, color)


def is_record_dataset(obj) -> bool:
    """Whether ``obj`` reads like a :class:`~finetune.RecordDataset` (``record(i)``, ``path``, ``len``)."""
    return callable(getattr(obj, "record", None)) and hasattr(obj, "__len__") and hasattr(obj, "path")


def is_image_list(obj) -> bool:
    """Whether ``obj`` reads like an :class:`~finetune.ImageList` (``entries``, ``full_path``)."""
    return callable(getattr(obj, "full_path", None)) and hasattr(obj, "entries")


class ImageSource:
    """The images of one call, from any accepted input form, decoded on demand.

    Parameters
    ----------
    images : path, bytes, numpy.ndarray, sequence, ImageList, RecordDataset or dataset
        An image file or a folder (every image below it, see
        :func:`~finetune.data.list_images`); records (``data/val.rec``, its
        ``.idx`` or the prefix ``data/val``) or a ``.lst`` / ``.csv`` list,
        read as :func:`open_labelled` opens them; encoded bytes; a decoded
        ``(H, W[, C])`` array (1, 3 or 4 channels) or an ``(N, H, W[, C])``
        batch, uint8 (or float, finite) in 0–255, or an MXNet ``NDArray``
        holding one; a list or tuple of any of these and of ``(image, label)``
        pairs; an :class:`~finetune.ImageList` (files with labels); a
        :class:`~finetune.RecordDataset` (the stored images with their labels,
        whatever preprocessing the dataset was built with); or any dataset
        (``len`` and ``[i]`` giving an image or ``(image, label)``).
    color : {"RGB", "BGR"} or None
        Colour order of decoded arrays and dataset items; required when there
        are any (files, bytes and records are decoded by the library itself).
    what : str
        What the images are for, in error messages (``"calibration images"``).

    Raises
    ------
    ConfigError
        An input of an unknown type (a dict), an array of the wrong shape (a
        ``(C, H, W)`` tensor, 2 channels) or values (NaN, integers outside
        0–255, bools), or arrays without ``color``.
    DataError
        A folder holding no image files.

    Examples
    --------
    >>> import numpy as np
    >>> source = ImageSource([np.zeros((4, 6, 3), np.uint8), b"not an image"], color="BGR")
    >>> len(source), [item.source for item in source]
    (2, ['array[0]', 'bytes[1]'])
    >>> source.read(0, "RGB").shape
    (4, 6, 3)
    """

    def __init__(self, images, *, color: str | None = None, what: str = "images"):
        if color is not None and color not in _COLORS:
            raise ConfigError(f"The 'color' parameter must be 'RGB' or 'BGR'. Got {color!r} instead.")
        self.color, self.what = color, what
        self.items = self._items(images)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> ImageItem:
        return self.items[i]

    def __iter__(self):
        return iter(self.items)

    def __repr__(self) -> str:
        return f"ImageSource({len(self)} {self.what})"

    def read(self, i: int, color: str = "RGB") -> np.ndarray:
        """Image ``i`` decoded, ``(H, W, 3)`` in ``color`` order (see :meth:`ImageItem.read`)."""
        return self.items[i].read(color)

    @classmethod
    def labelled(cls, images, labels=None, *, color: str | None = None, what: str = "images") -> "ImageSource":
        """The images of one call, each with its label: for consumers that score predictions.

        Parameters
        ----------
        images : RecordDataset, ImageList, str, sequence of (image, label) or images
            Labelled input: a :class:`~finetune.RecordDataset` or an
            :class:`~finetune.ImageList` (their own labels), a path
            :func:`open_labelled` opens, ``(image, label)`` pairs, or any
            input :class:`ImageSource` reads together with ``labels``.
        labels : sequence, optional
            One label per image, overriding any the input carries.
        color, what
            As for :class:`ImageSource`.

        Raises
        ------
        ConfigError
            The input carries no labels and ``labels`` is not given.
        DataError
            ``labels`` has not one label per image.

        Examples
        --------
        >>> import numpy as np
        >>> image = np.zeros((4, 6, 3), np.uint8)
        >>> [item.label for item in ImageSource.labelled([(image, 1), (image, 0)], color="RGB")]
        [1, 0]
        >>> [item.label for item in ImageSource.labelled([image, image], ["cat", "dog"], color="RGB")]
        ['cat', 'dog']
        >>> ImageSource.labelled([image], color="RGB", what="images to evaluate")
        Traceback (most recent call last):
        ...
        finetune.errors.ConfigError: The images to evaluate must be labelled images: a RecordDataset, an \
ImageList, a list of (image, label) pairs, or images plus labels=[...].
        """
        if labels is None:
            if isinstance(images, (str, os.PathLike)):
                images = open_labelled(images)
            if is_record_dataset(images) or is_image_list(images):
                return cls(images, color=color, what=what)
            pairs = list(images)
            if not all(isinstance(p, tuple) and len(p) == 2 for p in pairs):
                raise ConfigError(f"The {what} must be labelled images: a RecordDataset, an ImageList, a list of "
                                  "(image, label) pairs, or images plus labels=[...].")
            images, labels = [p[0] for p in pairs], [p[1] for p in pairs]
        if isinstance(labels, (str, bytes)):  # never one label per letter
            raise ConfigError(f"The labels of the {what} must be a sequence, one per image. Got the "
                              f"{type(labels).__name__} {labels!r:.80}.")
        source = cls(images, color=color, what=what)
        labels = list(labels)
        if len(labels) != len(source):
            raise DataError(f"{len(labels)} labels for {len(source)} images.")
        for item, label in zip(source, labels):
            item.label = label
        return source

    # ------------------------------------------------------------ listing
    def _items(self, images) -> list:
        if isinstance(images, ImageSource):
            return list(images.items)
        if hasattr(images, "asnumpy") and hasattr(images, "shape"):
            images = images.asnumpy()  # an MXNet NDArray is an array, not a dataset of rows
        if isinstance(images, collections.abc.Mapping):
            raise ConfigError(f"Cannot read {self.what} from a {type(images).__name__}. Pass image files, folders, "
                              "encoded bytes, decoded arrays, an ImageList, a RecordDataset or a dataset.")
        if is_record_dataset(images):
            return _record_items(images)
        if is_image_list(images):
            return [ImageItem(images.full_path(e), "path", images.full_path(e), "RGB", _label_int(e.label))
                    for e in images.entries]
        if isinstance(images, np.ndarray):
            return [self._array(a, i) for i, a in enumerate(split_batch(images))]
        if isinstance(images, (str, os.PathLike, bytes, bytearray)):
            return self._element(images, 0)
        if isinstance(images, (list, tuple)):
            return [item for i, x in enumerate(images) for item in self._element(x, i)]
        if hasattr(images, "__getitem__") and hasattr(images, "__len__"):  # a dataset, read lazily
            return [self._checked(ImageItem(f"item[{i}]", "dataset", (images, i), self.color or "RGB"))
                    for i in range(len(images))]
        if hasattr(images, "__iter__"):
            return self._items(list(images))
        raise ConfigError(
            f"Cannot read {self.what} from a {type(images).__name__}. Pass image files, folders, encoded "
            "bytes, decoded (H, W, 3) uint8 arrays (with color='RGB' or 'BGR'), an ImageList, a "
            "RecordDataset or a dataset."
        )

    def _element(self, x, i) -> list:
        """The items of element ``i`` of a list: a folder gives all its images, records or a list theirs."""
        if isinstance(x, (str, os.PathLike)):
            if _names_a_collection(x):
                return self._items(open_labelled(x))
            if os.path.isdir(x):
                paths = image_paths(x)
                if not paths:
                    raise DataError(
                        f"No {self.what} found: folder {os.fspath(x)!r} holds no image files "
                        f"({', '.join(IMAGE_EXTENSIONS)}). Put images there or pass the files themselves."
                    )
                return [ImageItem(p, "path", p) for p in paths]
            return [ImageItem(os.fspath(x), "path", x)]
        if isinstance(x, (bytes, bytearray)):
            return [ImageItem(f"bytes[{i}]", "bytes", bytes(x))]
        if isinstance(x, np.ndarray) or hasattr(x, "asnumpy"):
            return [self._array(x, i)]
        if isinstance(x, tuple) and len(x) == 2:  # (image, label)
            items = self._element(x[0], i)
            if len(items) == 1:
                items[0].label = x[1]
                return items
        raise ConfigError(
            f"Cannot read input {i} of the {self.what}: a {type(x).__name__}. Pass file paths, folders, "
            "encoded bytes, decoded (H, W, 3) uint8 arrays (with color='RGB' or 'BGR') or (image, label) pairs."
        )

    def _array(self, array, i) -> ImageItem:
        return self._checked(ImageItem(f"array[{i}]", "array", array, self.color or "RGB"))

    def _checked(self, item: ImageItem) -> ImageItem:
        if self.color is None:
            raise ConfigError(
                "Decoded arrays need their colour order: pass color='RGB' (PIL, skimage, matplotlib) "
                "or color='BGR' (cv2.imread). Guessing it is how BGR/RGB bugs happen."
            )
        return item


def _names_a_collection(path) -> bool:
    """Whether ``path`` names records (a ``.rec``/``.idx`` file or a prefix with a ``.rec``) or a ``.lst``/``.csv`` list."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return os.path.splitext(path)[1].lower() in (".rec", ".idx", ".lst", ".csv")
    return not os.path.exists(path) and os.path.isfile(path + ".rec")


def open_labelled(path):
    """The labelled images a path names: records, a list or a class-per-folder tree.

    Parameters
    ----------
    path : str or path-like
        A ``.rec`` file or its prefix (``data/val``): a
        :class:`~finetune.RecordDataset`; a ``.lst`` or ``.csv`` list, or a
        folder with one sub-folder per class: an :class:`~finetune.ImageList`.

    Raises
    ------
    MissingFileError
        ``path`` is none of these.

    Examples
    --------
    >>> import os, tempfile, cv2, numpy as np
    >>> root = tempfile.mkdtemp()
    >>> os.mkdir(os.path.join(root, "cat"))
    >>> _ = cv2.imwrite(os.path.join(root, "cat", "1.png"), np.zeros((8, 8, 3), np.uint8))
    >>> open_labelled(root).class_names
    ['cat']
    """
    from ..errors import MissingFileError
    from ._record import RecordDataset

    path = os.fspath(path)
    stem, ext = os.path.splitext(path)
    stem = stem if ext.lower() in (".rec", ".idx") else path
    if os.path.isfile(stem + ".rec"):
        return RecordDataset(stem)
    if os.path.isdir(path):
        return ImageList.from_folder(path)
    if os.path.isfile(path) and ext.lower() in (".lst", ".csv"):
        return ImageList.from_lst(path) if ext.lower() == ".lst" else ImageList.from_csv(path)
    raise MissingFileError(f"{path!r} is not a .rec file (or its prefix), a .lst / .csv list or a folder of "
                           "class folders.")


def _record_items(dataset) -> list:
    """Items of a RecordDataset: its stored images, named by the ``.lst`` beside it, with their labels."""
    names = _list_names(dataset)
    header = getattr(dataset, "header", None)
    items = []
    for i in range(len(dataset)):
        label, rid = header(i) if callable(header) else dataset.record(i)[:2]
        source = names.get(int(rid), f"record[{i}]")
        items.append(ImageItem(source, "record", (dataset, i), "RGB", _label_int(label)))
    return items


def _list_names(dataset) -> dict:
    """``{record id: image path}`` from the ``.lst`` beside the records, or ``{}``.

    Records store the list index as their id, so reports can name an image by
    its file (the path as the list gives it, relative to the image root)
    instead of its position in the record file.
    """
    lst = os.path.splitext(os.fspath(getattr(dataset, "path", "")))[0] + ".lst"
    if not os.path.isfile(lst):
        return {}
    try:
        images = ImageList.from_lst(lst)
    except (FinetuneError, OSError):  # a name is a courtesy; the records are what is read
        return {}
    return {int(e.index): e.path for e in images.entries}


def _label_int(label):
    if label is None:
        return None
    return int(np.atleast_1d(np.asarray(label, dtype=np.float64))[0])
