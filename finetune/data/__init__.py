"""Data: from a folder of images to training-ready MXNet record files.

Listing and splitting (:class:`ImageList`), checking, packing ``.rec`` files,
:class:`RecordDataset`, :class:`MeanImage`, class balancing, and the
:class:`Preprocess` config every model carries.
"""

from ._image import decode_image, read_image, to_color
from ._preprocess import Preprocess

__all__ = sorted(["Preprocess", "decode_image", "read_image", "to_color"])
