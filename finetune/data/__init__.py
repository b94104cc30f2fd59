"""Data: from a folder of images to training-ready MXNet record files.

Listing and splitting (:class:`ImageList`), checking (:func:`check`), packing
``.rec`` files (:func:`pack`), :class:`RecordDataset` with :class:`Augment`,
:class:`MeanImage`, class balancing (:func:`balance`), the built-in
Fashion-MNIST reader, and the :class:`Preprocess` config every model carries.
"""

from ._augment import Augment
from ._check import BadImage, CheckReport, check
from ._image import decode_image, read_image, to_color
from ._imagelist import DEFAULT_EXTS, ImageEntry, ImageList
from ._pack import PackReport, pack
from ._preprocess import Preprocess
from ._record import RecordDataset, RecordLoader

__all__ = sorted([
    "Augment", "BadImage", "CheckReport", "DEFAULT_EXTS", "ImageEntry", "ImageList",
    "PackReport", "Preprocess", "RecordDataset", "RecordLoader", "check", "decode_image",
    "pack", "read_image", "to_color",
])
