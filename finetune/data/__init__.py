"""Data: from a folder of images to training-ready MXNet record files.

Listing and splitting (:class:`ImageList`, :func:`list_images` with the one
extension list :data:`IMAGE_EXTENSIONS`), checking (:func:`check`), packing
``.rec`` files (:func:`pack`), :class:`RecordDataset` with :class:`Augment`,
:class:`MeanImage`, class balancing (:func:`balance`), the built-in
Fashion-MNIST reader, and the :class:`Preprocess` config every model carries.
:class:`ImageSource` is the one reader of images on the "use" side: every input
form (files, folders, bytes, arrays, lists, records, datasets) becomes a list of
:class:`ImageItem` s decoded on demand; :func:`check_geometry` is the one limit
on image sizes; :func:`write_class_names` / :func:`read_class_names` handle the
``<prefix>_classes.txt`` files beside lists and records.

MXNet is imported only when :class:`RecordDataset` is first used, so listing,
checking and packing start fast.
"""

import importlib

from ._augment import Augment
from ._balance import balance
from ._check import BadImage, CheckReport, check
from ._fashion import (FASHION_MNIST_CLASSES, fashion_mnist_dir, load_fashion_mnist,
                       write_fashion_mnist_folder, write_fashion_mnist_unlabeled)
from ._folder import IMAGE_EXTENSIONS, list_images
from ._image import decode_image, read_image, to_color
from ._image_checks import DEFAULT_MAX_ASPECT_RATIO, DEFAULT_MAX_IMAGE_PIXELS, check_geometry, sniff_format
from ._imagelist import DEFAULT_EXTS, ImageEntry, ImageList
from ._listfiles import read_class_names, write_class_names, write_lists
from ._mean import MeanImage
from ._pack import PackReport, pack
from ._preprocess import Preprocess
from ._relabel import write_records
from ._source import ImageItem, ImageSource, open_labelled

#: Images whose header declares more pixels are refused before decoding (``check``
#: and ``pack`` report them as "too large", decoding raises ImageTooLargeError).
#: Assign a larger number to accept bigger images, or 0 to disable the check.
MAX_IMAGE_PIXELS = DEFAULT_MAX_IMAGE_PIXELS
#: A resize that would enlarge an image whose longer side is more than this many times
#: its shorter side is refused (ImageTooLargeError); 0 disables the check.
MAX_ASPECT_RATIO = DEFAULT_MAX_ASPECT_RATIO

_LAZY = {"RecordDataset": "._record", "RecordLoader": "._record_loader"}  # these import MXNet

__all__ = sorted([
    "Augment", "BadImage", "CheckReport", "DEFAULT_EXTS", "FASHION_MNIST_CLASSES", "IMAGE_EXTENSIONS",
    "ImageEntry", "ImageItem", "ImageList", "ImageSource", "MAX_ASPECT_RATIO", "MAX_IMAGE_PIXELS", "MeanImage",
    "PackReport", "Preprocess", "RecordDataset", "RecordLoader", "balance", "check", "check_geometry",
    "decode_image", "fashion_mnist_dir", "list_images", "load_fashion_mnist", "open_labelled", "pack", "read_class_names",
    "read_image", "sniff_format", "to_color", "write_class_names", "write_fashion_mnist_folder",
    "write_fashion_mnist_unlabeled", "write_lists", "write_records",
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
