"""Every input form a :class:`~finetune.Predictor` accepts, normalised to one list of items.

Files, folders, encoded bytes, decoded arrays (with their colour order), an
:class:`~finetune.ImageList` or a :class:`~finetune.RecordDataset` all become
:class:`_Item` s that :func:`_load_pixels` decodes and transforms with the
model's own :class:`~finetune.Preprocess`.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np

from ..data import ImageList, decode_image, read_image
from ..errors import ConfigError, DataError, FinetuneError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jpe")


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
    names = _list_names(dataset)
    items = []
    for i in range(len(dataset)):
        label, rid, buf = dataset.record(i)
        source = names.get(int(rid), f"record[{i}]")
        items.append(_Item(source, "bytes", buf, "RGB", _label_int(label)))
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
    except (FinetuneError, OSError):  # a name is a courtesy; the records are what is evaluated
        return {}
    return {int(e.index): e.path for e in images.entries}


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
