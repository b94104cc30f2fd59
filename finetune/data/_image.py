"""Decoding images: the one decoder used by checking, packing, training and prediction.

OpenCV's ``imdecode`` is the decoder MXNet's own record tools use, so an image
that decodes here decodes identically inside ``ImageRecordIter``.

Every decode first runs :func:`~finetune.data._image_checks.refuse_unsafe`
(in ``_image_checks.py``), which refuses empty, truncated and too large images
from their header alone. :func:`to_color` converts decoded arrays between
colour orders.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from ..errors import ConfigError, ImageDecodeError, MissingFileError
from ._image_checks import refuse_unsafe, sniff_format

__all__ = ["decode_image", "read_image", "to_color"]

_COLORS = ("RGB", "BGR", "GRAY")


def decode_image(buf: bytes, color: str = "RGB", *, source: str = "<bytes>", max_pixels=None) -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, BMP, ...) to an 8-bit array.

    Parameters
    ----------
    buf : bytes
        The encoded file content.
    color : {"RGB", "BGR", "GRAY"}
        Channel order of the result. Grey, 16-bit, CMYK and RGBA sources are
        converted to 3-channel 8-bit (or 1-channel for ``"GRAY"``).
    source : str
        Name used in error messages.
    max_pixels : int, optional
        Refuse images whose header declares more pixels (default
        ``finetune.data.MAX_IMAGE_PIXELS``; ``0`` disables the check).

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8 in ``color`` order, or ``(H, W)`` for ``"GRAY"``.

    Raises
    ------
    ImageTooLargeError
        The header declares more than ``max_pixels`` pixels; nothing was decoded.
    ImageDecodeError
        The bytes are empty, truncated (a JPEG or PNG ending before its last
        marker) or not a decodable image.

    Examples
    --------
    >>> import cv2, numpy as np
    >>> ok, png = cv2.imencode(".png", np.zeros((2, 3, 3), np.uint8))
    >>> decode_image(png.tobytes()).shape
    (2, 3, 3)
    >>> decode_image(b"not an image", source="x.jpg")
    Traceback (most recent call last):
    ...
    finetune.errors.ImageDecodeError: x.jpg: not a decodable image (OpenCV could not read it; it may be truncated, corrupt, or not an image).
    """
    if color not in _COLORS:
        raise ConfigError(f"The 'color' parameter must be one of {_COLORS}. Got {color!r} instead.")
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        hint = " (a path: use read_image)" if isinstance(buf, (str, os.PathLike)) else ""
        raise ConfigError(f"decode_image takes the encoded bytes of an image{hint}. Got {type(buf).__name__} instead.")
    refuse_unsafe(buf, source, max_pixels)
    arr = np.frombuffer(buf, dtype=np.uint8)
    flag = cv2.IMREAD_GRAYSCALE if color == "GRAY" else cv2.IMREAD_COLOR
    img = cv2.imdecode(arr, flag)
    if img is None:
        if sniff_format(buf) == "gif":  # the reason check and pack give
            raise ImageDecodeError(f"{source}: a GIF, which OpenCV cannot decode; convert it to PNG or JPEG.")
        raise ImageDecodeError(
            f"{source}: not a decodable image (OpenCV could not read it; "
            "it may be truncated, corrupt, or not an image)."
        )
    if color == "RGB":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def read_image(path: str | os.PathLike, color: str = "RGB") -> np.ndarray:
    """Read and decode an image file.

    Parameters
    ----------
    path : str or path-like
        The image file.
    color : {"RGB", "BGR", "GRAY"}
        Channel order of the result.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8 in ``color`` order (``(H, W)`` for ``"GRAY"``).

    Raises
    ------
    MissingFileError
        ``path`` does not exist.
    ImageDecodeError
        The file cannot be decoded.

    Examples
    --------
    >>> import cv2, numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "red.png")
    >>> _ = cv2.imwrite(path, np.dstack([np.zeros((4, 4)), np.zeros((4, 4)), 255 * np.ones((4, 4))]))
    >>> read_image(path)[0, 0].tolist()
    [255, 0, 0]
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except FileNotFoundError:
        raise MissingFileError(f"Image file {path!r} does not exist.") from None
    except IsADirectoryError:
        raise ImageDecodeError(f"{path!r} is a folder, not an image file.") from None
    except OSError as exc:
        raise ImageDecodeError(f"{path!r} cannot be read: {exc.strerror}.") from None
    return decode_image(buf, color, source=path)


def to_color(image: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Convert an ``(H, W[, C])`` uint8 image from colour order ``src`` to ``dst``.

    Grey inputs (2-D or one channel) are replicated to three channels; a fourth
    (alpha) channel is dropped.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``.
    src, dst : {"RGB", "BGR"}
        Colour order of the input and of the result.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` in ``dst`` order.
    """
    for name, value in (("src", src), ("dst", dst)):
        if value not in ("RGB", "BGR"):
            raise ConfigError(f"The {name!r} colour order must be 'RGB' or 'BGR'. Got {value!r} instead.")
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ConfigError(
            f"An image must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4). Got {image.shape} instead."
        )
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    image = image[:, :, :3]
    if src != dst:
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image)
