"""Data: from a folder of images to training-ready MXNet record files.

Listing and splitting (:class:`ImageList`, :func:`list_images` with the one
extension list :data:`IMAGE_EXTENSIONS`), checking (:func:`check`), packing
``.rec`` files (:func:`pack`), :class:`RecordDataset` with :class:`Augment`,
:class:`MeanImage`, class balancing (:func:`balance`), the built-in
Fashion-MNIST reader, and the :class:`Preprocess` config every model carries.

MXNet is imported only when :class:`RecordDataset` is first used, so listing,
checking and packing start fast.
"""

import importlib

from ._augment import Augment
from ._balance import balance
from ._check import BadImage, CheckReport, check
from ._fashion import (FASHION_MNIST_CLASSES, fashion_mnist_dir, load_fashion_mnist,
                       write_fashion_mnist_folder)
from ._folder import IMAGE_EXTENSIONS, list_images
from ._image import DEFAULT_MAX_ASPECT_RATIO, DEFAULT_MAX_IMAGE_PIXELS, decode_image, read_image, to_color
from ._imagelist import DEFAULT_EXTS, ImageEntry, ImageList
from ._mean import MeanImage
from ._pack import PackReport, pack
from ._preprocess import Preprocess

#: Images whose header declares more pixels are refused before decoding (``check``
#: and ``pack`` report them as "too large", decoding raises ImageTooLargeError).
#: Assign a larger number to accept bigger images, or 0 to disable the check.
MAX_IMAGE_PIXELS = DEFAULT_MAX_IMAGE_PIXELS
#: A resize that would enlarge an image whose longer side is more than this many times
#: its shorter side is refused (ImageTooLargeError); 0 disables the check.
MAX_ASPECT_RATIO = DEFAULT_MAX_ASPECT_RATIO

_LAZY = {"RecordDataset": "._record", "RecordLoader": "._record"}  # these import MXNet

__all__ = sorted([
    "Augment", "BadImage", "CheckReport", "DEFAULT_EXTS", "FASHION_MNIST_CLASSES", "IMAGE_EXTENSIONS",
    "ImageEntry", "ImageList", "MAX_ASPECT_RATIO", "MAX_IMAGE_PIXELS", "MeanImage", "PackReport", "Preprocess",
    "RecordDataset", "RecordLoader", "balance", "check", "decode_image", "fashion_mnist_dir", "list_images", "load_fashion_mnist", "pack",
    "read_image", "to_color", "write_fashion_mnist_folder",
])


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'finetune.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
