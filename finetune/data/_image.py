"""Decoding images: the one decoder used by checking, packing, training and prediction.

OpenCV's ``imdecode`` is the decoder MXNet's own record tools use, so an image
that decodes here decodes identically inside ``ImageRecordIter``.

Before decoding, :func:`refuse_unsafe` compares the pixel count an image
declares in its header with ``finetune.data.MAX_IMAGE_PIXELS``, so a small
file declaring a huge image cannot take gigabytes of memory, and refuses a
JPEG or PNG that ends early (OpenCV would decode it silently, filling the
missing part with grey). Every decoder of user data (``check``, ``pack``,
prediction, training from records) runs it. JPEG and PNG headers are parsed
here, as they need only a few bytes (and training decodes millions of them);
other formats with Pillow's format plugins, which parse headers without
decoding.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import warnings

import cv2
import numpy as np

from ..errors import ConfigError, ImageDecodeError, ImageTooLargeError, MissingFileError

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "decode_image", "declared_pixels", "pixel_problem", "read_image",
           "refuse_unsafe", "sniff_format", "to_color", "truncation_problem"]

_COLORS = ("RGB", "BGR", "GRAY")
_MAGIC = ((b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF8", "gif"),
          (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"))

#: Default of ``finetune.data.MAX_IMAGE_PIXELS``: 16384 x 16384 pixels (768 MiB as RGB uint8).
DEFAULT_MAX_IMAGE_PIXELS = 16384 * 16384


def _max_pixels(max_pixels=None) -> int | None:
    if max_pixels is not None:
        return max_pixels
    package = sys.modules.get(__package__)  # read at call time, so assigning the package attribute works
    return getattr(package, "MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS)


def sniff_format(buf: bytes) -> str | None:
    """The image format named by the first bytes, or ``None``."""
    for magic, name in _MAGIC:
        if buf.startswith(magic):
            return name
    if buf[:4] == b"RIFF" and buf[8:12] == b"WEBP":
        return "webp"
    return None


def _jpeg_info(buf: bytes):
    """``(height, width, components)`` from the JPEG SOF marker, or ``None``."""
    pos, n = 2, len(buf)
    while pos + 4 <= n:
        if buf[pos] != 0xFF:
            return None
        marker = buf[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", buf[pos + 2:pos + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 10 > n:
                return None
            _, h, w, comps = struct.unpack(">BHHB", buf[pos + 4:pos + 10])
            return h, w, comps
        pos += 2 + length
    return None


def _jpeg_complete(buf: bytes) -> bool:
    """True when an end-of-image marker follows the last start-of-scan marker.

    Searches backwards for the end-of-image marker (at the very end of a
    complete file), then only the bytes after it for a later scan: about a
    microsecond, where searching the whole entropy-coded data for the last
    scan marker takes tens.
    """
    end = buf.rfind(b"\xff\xd9")
    return end >= 0 and buf.find(b"\xff\xda", end) < 0 and buf.find(b"\xff\xda", 0, end) >= 0


def truncation_problem(buf: bytes, fmt: str | None = None):
    """``("truncated", detail)`` when a JPEG or PNG ends before its last marker, else ``None``.

    OpenCV decodes such files without an error, filling the missing part
    with grey.
    """
    fmt = fmt if fmt is not None else sniff_format(buf)
    if fmt == "jpeg" and not _jpeg_complete(buf):
        return "truncated", "the JPEG data ends before its end-of-image marker"
    if fmt == "png" and b"IEND" not in buf[-32:]:
        return "truncated", "the PNG data ends before its IEND chunk"
    return None


def declared_pixels(buf: bytes, fmt: str | None = None):
    """``(width, height)`` declared by an image header, without decoding; ``None`` if unknown.

    JPEG (its SOF marker) and PNG (its IHDR chunk) are read here; other
    formats with Pillow's format plugins directly (what ``PIL.Image.open``
    does before its own bomb check, whose fixed limit we replace by ours).
    """
    fmt = fmt if fmt is not None else sniff_format(buf)
    if fmt == "jpeg":
        info = _jpeg_info(buf)
        if info is not None:
            return info[1], info[0]
    elif fmt == "png" and len(buf) >= 24 and buf[12:16] == b"IHDR":
        return struct.unpack(">II", buf[16:24])
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


def pixel_problem(buf: bytes, max_pixels=None, fmt: str | None = None):
    """``(reason, detail)`` when ``buf`` declares more pixels than allowed, else ``None``.

    Parameters
    ----------
    buf : bytes
        Encoded image.
    max_pixels : int, optional
        The cap; default ``finetune.data.MAX_IMAGE_PIXELS``. ``0`` or a
        negative value disables the check.
    fmt : str, optional
        The format, when already known (see :func:`sniff_format`).
    """
    cap = _max_pixels(max_pixels)
    if not cap or cap <= 0:
        return None
    size = declared_pixels(buf, fmt)
    if size is None:
        return None
    w, h = size
    if w * h > cap:
        return "too large", (f"it declares {w}x{h} = {w * h} pixels, more than MAX_IMAGE_PIXELS={cap}; "
                             "raise finetune.data.MAX_IMAGE_PIXELS to accept it")
    return None


def refuse_unsafe(buf: bytes, source: str = "<bytes>", max_pixels=None) -> None:
    """Raise before decoding ``buf`` if it is empty, declares too many pixels or is truncated.

    Parameters
    ----------
    buf : bytes
        The encoded image.
    source : str
        Name used in error messages.
    max_pixels : int, optional
        As for :func:`decode_image`.

    Raises
    ------
    ImageTooLargeError
        The header declares more than ``max_pixels`` pixels.
    ImageDecodeError
        The bytes are empty, or a JPEG / PNG ends before its last marker.
    """
    if len(buf) == 0:
        raise ImageDecodeError(f"{source}: the file is empty (0 bytes).")
    fmt = sniff_format(buf)
    problem = pixel_problem(buf, max_pixels, fmt)
    if problem:
        raise ImageTooLargeError(f"{source}: the image is too large: {problem[1]}.")
    problem = truncation_problem(buf, fmt)
    if problem:
        raise ImageDecodeError(f"{source}: the image is truncated: {problem[1]}; "
                               "OpenCV would fill the missing part with grey. Re-copy or re-encode the file.")


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
    refuse_unsafe(buf, source, max_pixels)
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
