"""Checking encoded image bytes before they are decoded: sizes, formats, truncation.

Before decoding, :func:`refuse_unsafe` compares the pixel count an image
declares in its header with ``finetune.data.MAX_IMAGE_PIXELS``, so a small
file declaring a huge image cannot take gigabytes of memory, and refuses a
JPEG or PNG that ends early (OpenCV would decode it silently, filling the
missing part with grey). Every decoder of user data (``check``, ``pack``,
prediction, training from records) runs it. JPEG and PNG headers are parsed
here, as they need only a few bytes (and training decodes millions of them);
other formats with Pillow's format plugins, which parse headers without
decoding.

:func:`check_geometry` is the one limit on sizes: from an image's width and
height (its header's, or a decoded array's) and the resize a caller is about
to make, it refuses zero or negative sides, a decoded image or a resized
image over ``MAX_IMAGE_PIXELS``, and an extreme aspect ratio that a resize
would enlarge (``finetune.data.MAX_ASPECT_RATIO``) — before anything is
allocated. A 1,000,000 x 1 PNG is a few kilobytes, but resizing its shorter
side to 32 pixels would make 32,000,000 x 32. Every resize of user images
(packing, training crops, :class:`~finetune.Preprocess`) calls it.

Nothing here decodes pixels; decoding itself is in ``_image.py``.
"""

from __future__ import annotations

import io
import struct
import sys
import warnings

from .._formats import sniff_format
from ..errors import ImageDecodeError, ImageTooLargeError

__all__ = ["DEFAULT_MAX_ASPECT_RATIO", "DEFAULT_MAX_IMAGE_PIXELS", "check_geometry", "declared_pixels",
           "geometry_problem", "pixel_problem", "refuse_unsafe", "sniff_format", "truncation_problem"]

#: Default of ``finetune.data.MAX_IMAGE_PIXELS``: 16384 x 16384 pixels (768 MiB as RGB uint8).
DEFAULT_MAX_IMAGE_PIXELS = 16384 * 16384
#: Default of ``finetune.data.MAX_ASPECT_RATIO``: an image whose longer side is more than
#: 100 times its shorter side is not enlarged by a resize.
DEFAULT_MAX_ASPECT_RATIO = 100


def _limit(name: str, default):
    """``finetune.data.<name>``, read at call time, so assigning the package attribute works."""
    return getattr(sys.modules.get(__package__), name, default)


def geometry_problem(width: int, height: int, resize=None, *, max_pixels=None):
    """``(reason, detail)`` when decoding a ``width x height`` image, or resizing it, must be refused; else ``None``.

    Parameters
    ----------
    width, height : int
        The size the header declares (or a decoded array's).
    resize : callable, optional
        ``resize(height, width) -> (new_height, new_width)``: the size the
        caller will resize the image to, before any crop.
    max_pixels : int, optional
        As for :func:`~finetune.decode_image`.
    """
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        return "corrupt", f"its header declares {width}x{height} pixels; both sides must be positive"
    cap = _limit("MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS) if max_pixels is None else max_pixels
    cap = cap if cap and cap > 0 else None
    if cap is not None and width * height > cap:
        return "too large", (f"it declares {width}x{height} = {width * height} pixels, more than "
                             f"MAX_IMAGE_PIXELS={cap}; raise finetune.data.MAX_IMAGE_PIXELS to accept it")
    if resize is None:
        return None
    new_h, new_w = (int(v) for v in resize(height, width))
    if cap is not None and new_w * new_h > cap:
        return "too large", (f"it is {width}x{height} pixels and the resize would make it {new_w}x{new_h} = "
                             f"{new_w * new_h} pixels, more than MAX_IMAGE_PIXELS={cap}")
    ratio, ratio_cap = max(width, height) / min(width, height), _limit("MAX_ASPECT_RATIO", DEFAULT_MAX_ASPECT_RATIO)
    if ratio_cap and ratio_cap > 0 and ratio > ratio_cap and new_w * new_h > width * height:
        return "too large", (f"it is {width}x{height} pixels (aspect ratio {ratio:.0f}:1, more than "
                             f"MAX_ASPECT_RATIO={ratio_cap}) and the resize would enlarge it to {new_w}x{new_h}; "
                             "crop it first, or raise finetune.data.MAX_ASPECT_RATIO")
    return None


def check_geometry(width: int, height: int, resize=None, *, source: str = "<image>", max_pixels=None) -> None:
    """Raise before decoding or resizing a ``width x height`` image whose size is not allowed.

    The one limit on image sizes (see the module docstring): callers pass the
    header's size before decoding, or a decoded array's size before resizing.

    Parameters
    ----------
    width, height : int
        The image size.
    resize : callable, optional
        ``resize(height, width) -> (new_height, new_width)``, the resize about to be made.
    source : str
        Name used in error messages.
    max_pixels : int, optional
        As for :func:`~finetune.decode_image`.

    Raises
    ------
    ImageDecodeError
        A side is zero or negative.
    ImageTooLargeError
        The image, or the resized image, has more than ``MAX_IMAGE_PIXELS``
        pixels, or a resize would enlarge an image whose aspect ratio is over
        ``MAX_ASPECT_RATIO``.

    Examples
    --------
    >>> check_geometry(1_000_000, 1, lambda h, w: (32, w * 32 // h), source="strip.png")
    Traceback (most recent call last):
    ...
    finetune.errors.ImageTooLargeError: strip.png: the image is too large: it is 1000000x1 pixels and the resize would make it 32000000x32 = 1024000000 pixels, more than MAX_IMAGE_PIXELS=268435456.
    """
    problem = geometry_problem(width, height, resize, max_pixels=max_pixels)
    if problem is None:
        return
    if problem[0] == "corrupt":
        raise ImageDecodeError(f"{source}: the image is corrupt: {problem[1]}.")
    raise ImageTooLargeError(f"{source}: the image is too large: {problem[1]}.")


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


def pixel_problem(buf: bytes, max_pixels=None, fmt: str | None = None, resize=None):
    """``(reason, detail)`` when ``buf`` declares a size that is not allowed, else ``None``.

    See :func:`geometry_problem`: too many pixels (decoded or after
    ``resize``), or a zero side.

    Parameters
    ----------
    buf : bytes
        Encoded image.
    max_pixels : int, optional
        The cap; default ``finetune.data.MAX_IMAGE_PIXELS``. ``0`` or a
        negative value disables the check.
    fmt : str, optional
        The format, when already known (see :func:`sniff_format`).
    resize : callable, optional
        ``resize(height, width) -> (new_height, new_width)``, the resize the caller will make.
    """
    size = declared_pixels(buf, fmt)
    if size is None:
        return None
    return geometry_problem(size[0], size[1], resize, max_pixels=max_pixels)


def refuse_unsafe(buf: bytes, source: str = "<bytes>", max_pixels=None, *, resize=None) -> None:
    """Raise before decoding ``buf`` if it is empty, declares a size not allowed or is truncated.

    Parameters
    ----------
    buf : bytes
        The encoded image.
    source : str
        Name used in error messages.
    max_pixels : int, optional
        As for :func:`~finetune.decode_image`.
    resize : callable, optional
        The resize the caller will make, as for :func:`check_geometry`.

    Raises
    ------
    ImageTooLargeError
        The header declares more than ``max_pixels`` pixels (or the resize would make more).
    ImageDecodeError
        The bytes are empty, the header declares a zero side, or a JPEG / PNG
        ends before its last marker.
    """
    if len(buf) == 0:
        raise ImageDecodeError(f"{source}: the file is empty (0 bytes).")
    fmt = sniff_format(buf)
    size = declared_pixels(buf, fmt)
    if size is not None:
        check_geometry(size[0], size[1], resize, source=source, max_pixels=max_pixels)
    problem = truncation_problem(buf, fmt)
    if problem:
        raise ImageDecodeError(f"{source}: the image is truncated: {problem[1]}; "
                               "OpenCV would fill the missing part with grey. Re-copy or re-encode the file.")
