"""Image inputs of feature extraction: paths, folders, arrays, datasets → ``(H, W, 3)`` uint8.

Also the retrieval geometry: conv layers take the whole image with its aspect
ratio kept (shorter side resized per the model's :class:`~finetune.Preprocess`,
no centre crop), fully connected layers need the network's fixed input, so
those use the preprocessing's resize + centre crop.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from ..data import read_image, to_color
from ..errors import ConfigError, DataError, MissingFileError

__all__ = ["IMAGE_EXTENSIONS", "ImageSource", "list_images", "resize_keep_aspect"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def list_images(folder) -> list:
    """Image files under ``folder`` (recursive), sorted by relative path."""
    folder = os.fspath(folder)
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                out.append(os.path.join(root, name))
    if not out:
        raise DataError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under {folder!r}.")
    return out


def resize_keep_aspect(image: np.ndarray, target: float, side: str = "shorter",
                       interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Resize ``(H, W, C)`` so that its ``side`` ("shorter" or "longer") is ``target`` pixels (aspect kept)."""
    h, w = image.shape[:2]
    f = float(target) / (min(h, w) if side == "shorter" else max(h, w))
    new_h, new_w = max(1, int(round(h * f))), max(1, int(round(w * f)))
    if (new_h, new_w) == (h, w):
        return image
    return cv2.resize(image, (new_w, new_h), interpolation=interpolation)


class ImageSource:
    """A sized, indexable view of the images given to the extractor.

    Parameters
    ----------
    images : str, path-like, numpy.ndarray, sequence or dataset
        A folder (recursive, sorted), one image file, an array ``(H, W[, C])``
        or ``(N, H, W, C)`` uint8, a sequence of paths and/or arrays, an
        :class:`~finetune.ImageList`, a :class:`~finetune.RecordDataset` (its
        raw decoded images: the extractor applies its own geometry), or any
        dataset (``len`` and ``[i]`` returning an ``(H, W, C)`` image or
        ``(image, label)``).
    color : {"RGB", "BGR"}
        Colour order of in-memory arrays and dataset images (files are decoded
        by the library itself).
    target : {"RGB", "BGR"}
        The network's colour order.
    """

    def __init__(self, images, color: str = "RGB", target: str = "RGB"):
        self.color, self.target = color, target
        self.names = None
        self._raw = None
        if isinstance(images, (str, os.PathLike)):
            path = os.fspath(images)
            if os.path.isdir(path):
                items = list_images(path)
            elif os.path.exists(path):
                items = [path]
            else:
                raise MissingFileError(f"Image path {path!r} does not exist.")
            self.names = list(items)
        elif isinstance(images, np.ndarray):
            if images.ndim == 2 or (images.ndim == 3 and images.shape[2] in (1, 3, 4)):
                items = [images]
            elif images.ndim in (3, 4):
                items = images
            else:
                raise ConfigError(f"Image arrays must be (H, W[, C]) or (N, H, W[, C]). Got shape {images.shape}.")
        elif isinstance(images, (list, tuple)):
            items = list(images)
            if all(isinstance(i, (str, os.PathLike)) for i in items):
                self.names = [os.fspath(i) for i in items]
        elif hasattr(images, "paths") and not callable(images.paths):  # ImageList
            items = list(images.paths)
            self.names = list(items)
        elif callable(getattr(images, "image", None)) and hasattr(images, "__len__"):  # RecordDataset
            self.items, self.color = images, "RGB"
            self._raw = images.image
            return
        elif hasattr(images, "__getitem__") and hasattr(images, "__len__"):
            items = images
        else:
            raise ConfigError(
                "Images must be a folder, a file, an array, a list of paths/arrays or a dataset. "
                f"Got {type(images).__name__}."
            )
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> np.ndarray:
        if self._raw is not None:  # undecorated image of a record file, RGB
            return to_color(self._raw(i), "RGB", self.target)
        item = self.items[i]
        if isinstance(item, (str, os.PathLike)):
            return read_image(item, self.target)
        if isinstance(item, tuple):  # dataset (image, label)
            item = item[0]
        if hasattr(item, "asnumpy"):
            item = item.asnumpy()
        img = np.asarray(item)
        if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[2] not in (1, 3, 4):
            raise ConfigError(
                f"Item {i} is a (C, H, W) tensor {img.shape}, i.e. already preprocessed; the extractor "
                "needs raw (H, W, C) images (a RecordDataset is read raw automatically)."
            )
        if img.dtype != np.uint8:
            img = np.clip(img, 0, 255).astype(np.uint8)
        return to_color(img, self.color, self.target)
