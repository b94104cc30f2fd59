"""Checking images before training: decode every file with the training decoder.

A file is *bad* (left out by :func:`check` and :func:`~finetune.pack`) when it
cannot be read, is empty, is not an image, is truncated (OpenCV would decode a
truncated JPEG silently, filling the missing part with grey), is damaged (its
decoder reports corrupt data but decodes it anyway, with a grey or garbled
region), or is smaller than ``min_size``. A file is *converted* (kept, with a note) when it is
greyscale, has an alpha channel, is CMYK, uses a palette or has 16 bits per
channel: the decoder turns all of these into 8-bit 3-channel images.

The header checks (pixel count, truncation) are those every decoder runs
(``finetune.data._image_checks.refuse_unsafe``); the notes on conversions read a few
header bytes, far cheaper than decoding twice.

Damage inside a JPEG's entropy-coded data is found by libjpeg only while
decoding, and OpenCV merely prints libjpeg's warning ("Corrupt JPEG data: ...")
on the process's standard error. :func:`decode_reporting` therefore points
file descriptor 2 at a temporary file for the duration of one ``imdecode``
and reads the decoder's messages back (other text written there meanwhile is
passed on to the real standard error). Pillow would not help: it decodes with
the same libjpeg and discards its warnings.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import tempfile
from typing import NamedTuple

import cv2
import numpy as np

from .._listing import MAX_LISTED, count_line
from .._parallel import ordered_map
from .._progress import RESULT
from .._text import cell
from ..errors import check_range
from ._image_checks import DEFAULT_MAX_ASPECT_RATIO, _jpeg_info, _limit, pixel_problem, sniff_format, truncation_problem
from ._imagelist import ImageList
from ._inputs import missing_root_hint, open_list

#: The default ``min_size`` of :func:`check` and :func:`~finetune.pack`: one rule for both.
DEFAULT_MIN_SIZE = 1

__all__ = ["BadImage", "CheckReport", "check", "examine"]

log = logging.getLogger("finetune.data")


class ProblemLog:
    """Log the first ``limit`` problem files one by one, then only count them.

    Call it once per problem; :meth:`close` logs one line with the number of
    files not shown, per reason, and where all of them are listed.

    Parameters
    ----------
    message : str
        The start of each line, e.g. ``"Bad image"``.
    what : str
        The problems in the plural, e.g. ``"bad images"``.
    full_list : str
        Where every problem is listed, e.g. ``"the report's 'bad' list"``.
    limit : int
        Problems logged one by one.
    """

    def __init__(self, message: str, what: str, full_list: str, limit: int = MAX_LISTED):
        self.message, self.what, self.full_list, self.limit = message, what, full_list, int(limit)
        self.reasons = []

    def __call__(self, path, reason: str, detail: str) -> None:
        self.reasons.append(reason)
        if len(self.reasons) <= self.limit:
            log.warning("%s %s: %s (%s).", self.message, cell(path), reason, detail, extra=RESULT)

    def close(self) -> None:
        """Log the count of the problems not logged one by one (nothing when all were)."""
        hidden = self.reasons[self.limit:]
        if hidden:
            log.warning("%s; every one is in %s.", count_line(len(hidden), self.what, hidden), self.full_list,
                        extra=RESULT)


class BadImage(NamedTuple):
    """A file that cannot be used, and why.

    Attributes
    ----------
    index : int
        The entry's index in its list.
    path : str
        The full path of the file.
    reason : str
        One of ``"unreadable"``, ``"zero bytes"``, ``"not an image"``,
        ``"unsupported format"``, ``"truncated"``, ``"corrupt"``, ``"damaged"``
        (decodes only partly: the decoder reports corrupt data), ``"too small"``,
        ``"too elongated"`` (one side more than ``finetune.data.MAX_ASPECT_RATIO``
        times the other),
        ``"too large"`` (more pixels than ``finetune.data.MAX_IMAGE_PIXELS``).
    detail : str
        A sentence for humans.
    """

    index: int
    path: str
    reason: str
    detail: str


def inspect_header(buf: bytes):
    """Checks that need no decoding: ``(reason, detail, notes, format)``.

    ``reason`` is ``None`` when the bytes look like a complete image file.
    """
    if len(buf) == 0:
        return "zero bytes", "the file is empty (0 bytes)", [], None
    fmt = sniff_format(buf)
    problem = pixel_problem(buf, fmt=fmt) or truncation_problem(buf, fmt)
    if problem:
        return (*problem, [], fmt)
    notes = []
    if fmt == "jpeg":
        info = _jpeg_info(buf)
        if info and info[2] == 1:
            notes.append("grayscale")
        elif info and info[2] == 4:
            notes.append("CMYK")
    elif fmt == "png":
        if len(buf) >= 26:
            depth, ctype = buf[24], buf[25]
            notes += {0: ["grayscale"], 3: ["palette"], 4: ["grayscale", "alpha channel"],
                      6: ["alpha channel"]}.get(ctype, [])
            if depth == 16:
                notes.append("16-bit")
    return None, "", notes, fmt


def undecodable(fmt, messages=()):
    """``(reason, detail)`` for bytes of format ``fmt`` that OpenCV could not decode.

    ``messages`` are the decoder's own (see :func:`decode_reporting`), quoted in the detail.
    """
    if fmt is None:
        return "not an image", "the content is not in any image format OpenCV reads"
    if fmt == "gif":
        return "unsupported format", "GIF files cannot be decoded by OpenCV"
    said = f" ({'; '.join(messages)})" if messages else ""
    return "corrupt", f"the {fmt.upper()} data cannot be decoded{said}"


# libjpeg's warnings about damaged data ("Warning: unknown JFIF revision" and the like are harmless)
_DAMAGE = ("Corrupt JPEG data", "Premature end of JPEG file", "Invalid SOS parameters")
_DECODER = _DAMAGE + ("libpng error", "libpng warning", "Not a JPEG file", "Warning:")
_CAPTURE = {}


def _capture_file():
    """A temporary file of this process (a forked worker must not share its parent's offset)."""
    pid = os.getpid()
    if _CAPTURE.get("pid") != pid:
        _CAPTURE.update(pid=pid, file=tempfile.TemporaryFile())
    return _CAPTURE["file"]


def decode_reporting(buf: bytes, flag: int = cv2.IMREAD_COLOR):
    """``cv2.imdecode`` that also returns the messages its decoders wrote to standard error.

    Returns
    -------
    (numpy.ndarray or None, list of str, bool)
        The image (``None`` when OpenCV cannot decode it), the messages of
        libjpeg / libpng, and whether libjpeg reported damaged data (the
        image then has a grey or garbled region).
    """
    tmp = _capture_file()
    tmp.seek(0)
    tmp.truncate()
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(tmp.fileno(), 2)
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), flag)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    tmp.seek(0)
    lines = tmp.read(64 * 1024).decode("utf-8", "replace").splitlines()
    messages = [ln.strip() for ln in lines if ln.strip().startswith(_DECODER)]
    other = [ln for ln in lines if ln.strip() and not ln.strip().startswith(_DECODER)]
    if other:  # not ours: pass it on
        os.write(2, ("\n".join(other) + "\n").encode())
    return img, messages, any(m.startswith(_DAMAGE) for m in messages)


def damage(fmt, messages):
    """``(reason, detail)`` for an image its decoder reported damaged but decoded."""
    said = "; ".join(m for m in messages if m.startswith(_DAMAGE))
    return "damaged", (f"the {(fmt or 'image').upper()} data is damaged ({said}): it decodes "
                       "only partly, with a grey or garbled region; re-copy or re-encode the file")


def size_problem(h, w, min_size):
    """``(reason, detail)`` when training could not use an ``h x w`` image, else ``None``.

    The rule :func:`check`, :func:`~finetune.pack` and the loaders share: a
    shorter side below ``min_size`` is too small; a side more than
    ``finetune.data.MAX_ASPECT_RATIO`` times the other would be refused by
    every resize that enlarges the image (:func:`~finetune.data.check_geometry`),
    so such a file is left out before it is packed, not in the middle of training.
    """
    if min(h, w) < min_size:
        return "too small", f"{w}x{h} pixels is smaller than min_size={min_size}"
    ratio, cap = max(h, w) / max(min(h, w), 1), _limit("MAX_ASPECT_RATIO", DEFAULT_MAX_ASPECT_RATIO)
    if cap and cap > 0 and ratio > cap:
        return "too elongated", (f"{w}x{h} pixels: one side is {ratio:.0f} times the other, more than "
                                 f"MAX_ASPECT_RATIO={cap}; training would refuse to resize it (crop it first, "
                                 "or raise finetune.data.MAX_ASPECT_RATIO)")
    return None


def examine(buf: bytes, source: str = "<bytes>", *, min_size: int = 1):
    """Look at an encoded image (header checks, then one decode) without keeping it.

    The header checks are those of the training decoder and the decode is
    its ``cv2.imdecode``, so a file passing here decodes there.

    Returns
    -------
    tuple
        ``(reason, detail, notes)``: ``reason`` is ``None`` for a usable file,
        else one of the bad reasons; ``notes`` lists conversions the decoder
        will make (``"grayscale"``, ``"alpha channel"``, ``"CMYK"``, ``"palette"``,
        ``"16-bit"``).
    """
    reason, detail, notes, fmt = inspect_header(buf)
    if reason is not None:
        return reason, detail, notes
    img, messages, damaged = decode_reporting(buf)
    if img is None:
        return (*undecodable(fmt, messages), [])
    if damaged:
        return (*damage(fmt, messages), [])
    h, w = img.shape[:2]
    problem = size_problem(h, w, min_size)
    if problem:
        return (*problem, notes)
    return None, f"{w}x{h}", notes


class CheckReport:
    """What :func:`check` found.

    Attributes
    ----------
    good : ImageList
        The usable images (same root and class names as the input).
    bad : list of BadImage
        The files left out, with the reason.
    converted : list of (str, list of str)
        Usable files the decoder converts (greyscale, alpha, CMYK, palette,
        16-bit), with what is converted.
    hint : str or None
        When no listed file exists: where they were looked for and what to give
        (the image root), as :func:`~finetune.pack` says it.
    """

    def __init__(self, good, bad, converted, hint=None):
        self.good = good
        self.bad = list(bad)
        self.converted = list(converted)
        self.hint = hint

    @property
    def ok(self) -> bool:
        """True when no file is bad."""
        return not self.bad

    def reasons(self) -> dict:
        """``{reason: count}`` of the bad files."""
        return dict(sorted(collections.Counter(b.reason for b in self.bad).items()))

    def summary(self, max_converted: int = 5, max_bad: int = MAX_LISTED) -> str:
        """A few lines for humans: the first ``max_bad`` bad files (the rest counted per reason), and
        the conversions counted by kind. Paths that are not UTF-8 are shown with ``\\xNN`` escapes."""
        lines = [f"{len(self.good)} good, {len(self.bad)} bad, {len(self.converted)} converted."]
        lines += [f"  {self.hint}"] if self.hint else []
        lines += [f"  bad: {cell(b.path)}: {b.reason} ({b.detail})" for b in self.bad[:max_bad]]
        if len(self.bad) > max_bad:
            lines.append("  " + count_line(len(self.bad) - max_bad, "bad", [b.reason for b in self.bad[max_bad:]]))
        kinds = collections.Counter(note for _, notes in self.converted for note in notes)
        if kinds:
            lines.append("  converted on decoding: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
        lines += [f"  converted: {cell(p)}: {', '.join(n)}" for p, n in self.converted[:max_converted]]
        if len(self.converted) > max_converted:
            lines.append(f"  ... and {len(self.converted) - max_converted} more converted")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"CheckReport(good={len(self.good)}, bad={len(self.bad)}, "
                f"converted={len(self.converted)})")


def read_bytes(path: str):
    """``(bytes, None)`` or ``(None, BadImage-style detail)`` for an unreadable file."""
    try:
        with open(path, "rb") as f:
            return f.read(), None
    except OSError as exc:
        return None, f"cannot be read: {exc.strerror or exc}"


def _check_one(min_size, item):
    try:
        return _check_one_unsafe(min_size, item)
    except (cv2.error, ValueError, OverflowError, MemoryError) as exc:
        return "corrupt", f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1]}", []


def _check_one_unsafe(min_size, item):
    index, path = item
    buf, err = read_bytes(path)
    if buf is None:
        return "unreadable", err, []
    return examine(buf, path, min_size=min_size)


def check(images, *, workers=None, min_size=DEFAULT_MIN_SIZE) -> CheckReport:
    """Decode every image with the training decoder and report the bad ones.

    Never raises on a bad file; runs over ``workers`` processes. The first
    ``MAX_LISTED`` (20) bad files are logged one by one, the rest in one line
    counting them per reason; :attr:`CheckReport.bad` lists every one.

    Parameters
    ----------
    images : ImageList, str, path-like or sequence of paths
        What to check: a list, a folder / ``.lst`` / ``.csv`` path (read as
        ``finetune check`` reads it), or image file paths.
    workers : int, optional
        Processes to use (default: all cores).
    min_size : int
        Images whose shorter side is below this are reported ``"too small"``
        (default 1: every size :func:`~finetune.pack` and training accept).

    Returns
    -------
    CheckReport

    Examples
    --------
    >>> import os, tempfile, cv2, numpy as np
    >>> root = tempfile.mkdtemp()
    >>> _ = cv2.imwrite(os.path.join(root, "ok.png"), np.zeros((32, 32), np.uint8))
    >>> open(os.path.join(root, "empty.jpg"), "wb").close()
    >>> report = check([os.path.join(root, n) for n in ("ok.png", "empty.jpg")], workers=1)
    >>> report
    CheckReport(good=1, bad=1, converted=1)
    >>> report.bad[0].reason, report.converted[0][1]
    ('zero bytes', ['grayscale'])
    """
    check_range("check", "min_size", min_size, 1)
    if isinstance(images, (str, bytes, os.PathLike)):  # a path, never a sequence of letters
        images = open_list(images, "check")
    elif not isinstance(images, ImageList):
        images = ImageList([(i, os.fspath(p), 0) for i, p in enumerate(images)])
    if not len(images):
        log.warning("check: the list holds no images; nothing was checked.", extra=RESULT)
    items = [(e.index, images.full_path(e)) for e in images]
    results = _progress(ordered_map(_check_one, int(min_size), items, workers=workers),
                        len(items), "check")
    good, bad, converted = [], [], []
    warn = ProblemLog("Bad image", "bad images", "the report's 'bad' list")
    for pos, (reason, detail, notes) in enumerate(results):
        index, path = items[pos]
        if reason is None:
            good.append(pos)
            if notes:
                converted.append((path, notes))
        else:
            bad.append(BadImage(index, path, reason, detail))
            warn(path, reason, detail)
    hint = None if good else missing_root_hint(images, bad)
    if hint:
        log.warning("check: %s", hint, extra=RESULT)
    warn.close()
    return CheckReport(images.subset(good), bad, converted, hint)


def _progress(iterable, total, desc):
    """A progress bar (:func:`finetune._progress.progress_bar`), quiet when logging is above INFO."""
    from .._progress import progress_bar

    show = logging.getLogger("finetune").isEnabledFor(logging.INFO) and total >= 2
    unit = "chunk" if desc == "mean image" else "img"
    return progress_bar(iterable, total=total, desc=desc, unit=unit, show=show)
