"""The format of an image file, told by its first bytes; the mark finetune leaves in the images it writes.

Used by the readers, and by the writers' safety checks: an output may
replace an image only when that image carries finetune's mark.
"""

from __future__ import annotations

import struct
import zlib

__all__ = ["MARK", "image_file_marked", "is_marked", "mark_image", "mark_image_file", "sniff_format"]

_MAGIC = ((b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF8", "gif"),
          (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"))


def sniff_format(buf: bytes) -> str | None:
    """The image format named by the first bytes (12 are enough), or ``None``.

    A bitmap's "BM" counts only with its four reserved header bytes zero, so a
    text file starting with "BM" is no image.

    Examples
    --------
    >>> sniff_format(b"\\x89PNG\\r\\n\\x1a\\n...."), sniff_format(b"BMW is a car maker"), sniff_format(b"")
    ('png', None, None)
    """
    for magic, name in _MAGIC:
        if buf.startswith(magic):
            return name
    if buf[:2] == b"BM" and buf[6:10] == b"\x00\x00\x00\x00":
        return "bmp"
    if buf[:4] == b"RIFF" and buf[8:12] == b"WEBP":
        return "webp"
    return None


#: The mark finetune puts in every PNG and JPEG it writes (a PNG text chunk, a JPEG comment), so that an
#: image output may replace an image finetune wrote, never a user's photo.
MARK = b"written by finetune"
_HEAD = 65536


def mark_image(data: bytes) -> bytes:
    """``data`` (a PNG or JPEG file) with :data:`MARK` added; other bytes, or already marked ones, unchanged.

    Examples
    --------
    >>> import cv2, numpy as np
    >>> png = cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes()
    >>> marked = mark_image(png)
    >>> is_marked(marked), is_marked(png), cv2.imdecode(np.frombuffer(marked, np.uint8), 0).shape
    (True, False, (4, 4))
    """
    if is_marked(data):
        return data
    fmt = sniff_format(data[:12])
    if fmt == "png" and data[12:16] == b"IHDR":
        text = b"finetune\x00" + MARK
        chunk = struct.pack(">I", len(text)) + b"tEXt" + text + struct.pack(">I", zlib.crc32(b"tEXt" + text))
        return data[:33] + chunk + data[33:]  # after the signature and the 25-byte IHDR chunk
    if fmt == "jpeg":
        pos = 2
        while pos + 4 <= len(data) and data[pos] == 0xFF and 0xE0 <= data[pos + 1] <= 0xEF:  # after APPn
            pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
        return data[:pos] + b"\xff\xfe" + struct.pack(">H", len(MARK) + 2) + MARK + data[pos:]
    return data


def is_marked(data: bytes) -> bool:
    """Whether the image bytes ``data`` (its start is enough) carry :data:`MARK`."""
    return MARK in data[:_HEAD]


def mark_image_file(path) -> None:
    """Add :data:`MARK` to the PNG or JPEG file ``path`` (in place; other files are left alone)."""
    with open(path, "rb") as f:
        data = f.read()
    marked = mark_image(data)
    if marked is not data:
        with open(path, "wb") as f:
            f.write(marked)


def image_file_marked(path) -> bool:
    """Whether the file ``path`` carries :data:`MARK` (``False`` when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return is_marked(f.read(_HEAD))
    except OSError:
        return False
