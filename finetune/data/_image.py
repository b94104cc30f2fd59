"""Decoding images: the one decoder used by checking, packing, training and prediction.

OpenCV's ``imdecode`` is the decoder MXNet's own record tools use, so an image
that decodes here decodes identically inside ``ImageRecordIter``.

Before decoding, the pixel count an image declares in its header (read with
Pillow, which parses headers without decoding) is compared with
``finetune.data.MAX_IMAGE_PIXELS``, so a small file declaring a huge image
cannot take gigabytes of memory in ``check``, ``pack`` or prediction.
"""

from __future__ import annotations

import io
import os
import sys
import warnings

import cv2
import numpy as np

from ..errors import ConfigError, ImageDecodeError, ImageTooLargeError, MissingFileError

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "decode_image", "declared_pixels", "pixel_problem", "read_image",
           "to_color"]

_COLORS = ("RGB", "BGR", "GRAY")

#: Default of ``finetune.data.MAX_IMAGE_PIXELS``: 16384 x 16384 pixels (768 MiB as RGB uint8).
DEFAULT_MAX_IMAGE_PIXELS = 16384 * 16384


def _max_pixels(max_pixels=None) -> int | None:
    if max_pixels is not None:
        return max_pixels
    package = sys.modules.get(__package__)  # read at call time, so assigning the package attribute works
    return getattr(package, "MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS)


def declared_pixels(buf: bytes):
    """``(width, height)`` declared by an image header, without decoding; ``None`` if unknown.

    Uses Pillow's format plugins directly (what ``PIL.Image.open`` does before
    its own bomb check, whose fixed limit we replace by ours).
    """
    from PIL import Image

    prefix = buf[:16]
    for init in (Image.preinit, Image.init):
        init()
        for fmt in list(Image.ID):
            factory, accept = Image.OPEN[fmt]
            try:
                if accept and not accept(prefix):
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    im = factory(io.BytesIO(buf), None)
                size = im.size
                im.close()
                return size
            except Exception:  # noqa: BLE001 - plugins raise many types on what they cannot parse
                continue
    return None


def pixel_problem(buf: bytes, max_pixels=None):
    """``(reason, detail)`` when ``buf`` declares more pixels than allowed, else ``None``.

    Parameters
    ----------
    buf : bytes
        Encoded image.
    max_pixels : int, optional
        The cap; default ``finetune.data.MAX_IMAGE_PIXELS``. ``0`` or a
        negative value disables the check.
    """
    cap = _max_pixels(max_pixels)
    if not cap or cap <= 0:
        return None
    size = declared_pixels(buf)
    if size is None:
        return None
    w, h = size
    if w * h > cap:
        return "too large", (f"it declares {w}x{h} = {w * h} pixels, more than MAX_IMAGE_PIXELS={cap}; "
                             "raise finetune.data.MAX_IMAGE_PIXELS to accept it")
    return None


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
        The bytes are empty or not a decodable image.

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
    if len(buf) == 0:
        raise ImageDecodeError(f"{source}: the file is empty (0 bytes).")
    problem = pixel_problem(buf, max_pixels)
    if problem:
        raise ImageTooLargeError(f"{source}: the image is too large: {problem[1]}.")
    arr = np.frombuffer(buf, dtype=np.uint8)
    flag = cv2.IMREAD_GRAYSCALE if color == "GRAY" else cv2.IMREAD_COLOR
    img = cv2.imdecode(arr, flag)
    if img is None:
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
