"""The format of an image file, told by its first bytes (used by the readers and by the writers' safety checks)."""

from __future__ import annotations

__all__ = ["sniff_format"]

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
