"""Packing images into MXNet RecordIO files (``.rec`` + ``.idx``).

The records are what MXNet's ``tools/im2rec.py`` writes — an ``IRHeader``
(``flag, label, id, id2``) followed by the encoded image — so
``mx.io.ImageRecordIter`` and :class:`~finetune.RecordDataset` both read them.
Images are decoded and re-encoded with OpenCV in worker processes; the main
process writes the records in list order (in the format of
``mx.recordio.MXIndexedRecordIO``) into temporary files that replace the
previous ``.rec``, ``.idx`` and class names together, as one unit, when
complete (see ``finetune._file_writes``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import NamedTuple

import cv2
import numpy as np

from .._file_writes import atomic_files
from .._units import written_with
from .._parallel import default_workers, ordered_map
from .._progress import RESULT
from .._text import TEXT
from ..errors import DataError, ListFormatError, check_choice, check_range
from ._check import (DEFAULT_MIN_SIZE, BadImage, ProblemLog, _progress, damage, decode_reporting, inspect_header, read_bytes,
                     size_problem, undecodable)
from ._image_checks import _jpeg_info, geometry_problem, pixel_problem, sniff_format
from ._imagelist import ImageList
from ._inputs import check_prefix, check_unique_indices, empty_classes, missing_root_hint, open_list
from ._listfiles import check_labels, class_names_text, classes_path_for, lst_text
from ._recordio import RecordWriter

__all__ = ["PackReport", "pack"]

log = logging.getLogger("finetune.data")

_COLOR_FLAGS = {1: cv2.IMREAD_COLOR, 0: cv2.IMREAD_GRAYSCALE, -1: cv2.IMREAD_UNCHANGED,
                "color": cv2.IMREAD_COLOR, "gray": cv2.IMREAD_GRAYSCALE,
                "unchanged": cv2.IMREAD_UNCHANGED}
_REDUCED = {
    cv2.IMREAD_COLOR: {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8},
    cv2.IMREAD_GRAYSCALE: {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                           8: cv2.IMREAD_REDUCED_GRAYSCALE_8},
}


class PackReport(NamedTuple):
    """What :func:`pack` wrote.

    Attributes
    ----------
    rec, idx : str
        The files written.
    written : int
        Number of records.
    bad : list of BadImage
        Images left out, with the reason.
    seconds : float
        Wall time.
    """

    rec: str
    idx: str
    written: int
    bad: list
    seconds: float


def im2rec_size(h: int, w: int, resize: int, center_crop: bool) -> tuple:
    """``(new_h, new_w)`` that :func:`im2rec_resize` makes of an ``h x w`` image."""
    if center_crop:
        h = w = min(h, w)
    if not resize:
        return h, w
    return (h * resize // w, resize) if h > w else (resize, w * resize // h)


def im2rec_resize(img: np.ndarray, resize: int, center_crop: bool) -> np.ndarray:
    """im2rec's geometry: optional square centre crop, then shorter side to ``resize``."""
    h, w = img.shape[:2]
    if center_crop:
        h = w = min(h, w)
        top, left = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
        img = img[top:top + h, left:left + w]
    if resize:
        new_h, new_w = im2rec_size(h, w, resize, False)
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA
                         if min(h, w) >= 2 * resize else cv2.INTER_LINEAR)
    return img


def _header(label, index, pack_label):
    import struct

    if isinstance(label, tuple):
        if pack_label:
            arr = np.asarray(label, np.float32)
            return struct.pack("IfQQ", len(arr), 0.0, index, 0) + arr.tobytes()
        label = label[0]
    return struct.pack("IfQQ", 0, float(label), index, 0)


def _decode_flag(buf, opts):
    """``(OpenCV flag, scale factor)``: a 1/2, 1/4 or 1/8 scale JPEG decode (libjpeg's
    DCT scaling) when the image would be shrunk at least that much anyway —
    the same picture after resizing, several times faster."""
    flag, resize = opts["flag"], opts["resize"]
    if opts["pass_through"]:
        resize = 16  # only checking that it decodes: the smallest decode will do
    if not resize or flag not in _REDUCED or sniff_format(buf) != "jpeg":
        return flag, 1
    info = _jpeg_info(buf)
    if info is None:
        return flag, 1
    shorter = min(info[0], info[1])
    for r in (8, 4, 2):
        if shorter // r >= resize:
            return _REDUCED[flag][r], r
    return flag, 1


def _pack_one(opts, item):
    """Worker: ``(record bytes, None)`` or ``(None, (reason, detail))``; never raises."""
    try:
        return _pack_one_unsafe(opts, item)
    except (cv2.error, ValueError, OverflowError, MemoryError) as exc:
        return None, ("corrupt", f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1]}")


def _pack_one_unsafe(opts, item):
    """Decode once, check, transform and encode one image."""
    index, path, label = item
    buf, err = read_bytes(path)
    if buf is None:
        return None, ("unreadable", err)
    reason, detail, _, fmt = inspect_header(buf)
    if reason is not None:
        return None, (reason, detail)

    def geometry(h, w):
        return im2rec_size(h, w, opts["resize"], opts["center_crop"])

    problem = None if opts["pass_through"] else pixel_problem(buf, fmt=fmt, resize=geometry)
    if problem:
        return None, problem
    header = _header(label, index, opts["pack_label"])
    flag, factor = _decode_flag(buf, opts)
    img, messages, damaged = decode_reporting(buf, flag)
    if img is None:
        return None, undecodable(fmt, messages)
    if damaged:
        return None, damage(fmt, messages)
    problem = size_problem(img.shape[0] * factor, img.shape[1] * factor, opts["min_size"])
    if problem:
        return None, problem
    if opts["pass_through"]:
        return header + buf, None
    if img.dtype != np.uint8:  # 16-bit kept by color=-1: scale to 8 bits
        img = (img // 257).astype(np.uint8)
    if opts["encoding"] == ".jpg" and img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)  # JPEG has no alpha channel
    problem = geometry_problem(img.shape[1], img.shape[0], geometry)
    if problem:
        return None, problem
    img = im2rec_resize(img, opts["resize"], opts["center_crop"])
    params = ([cv2.IMWRITE_JPEG_QUALITY, opts["quality"]] if opts["encoding"] == ".jpg"
              else [cv2.IMWRITE_PNG_COMPRESSION, opts["quality"]])
    ok, enc = cv2.imencode(opts["encoding"], img, params)
    if not ok:
        return None, ("corrupt", f"OpenCV could not encode it as {opts['encoding']}")
    return header + enc.tobytes(), None


def _listable(lst_path, images) -> bool:
    """Whether every path of ``images`` fits in a ``.lst`` line (a name with a tab or newline does not)."""
    try:
        lst_text(lst_path, images.entries)
    except ListFormatError:
        return False
    return True


def _nothing_packed(images, bad) -> str:
    """Why a pack wrote no image, and what to do about it."""
    if not bad:
        return "The list holds no images; nothing was written."
    what = f"None of the {len(bad)} images could be packed; nothing was written."
    hint = missing_root_hint(images, bad)
    if hint:
        return f"{what} {hint}"
    return f"{what} The first: {bad[0].path!r} ({bad[0].reason}). See the report's 'bad' list (finetune check)."


def pack(images: ImageList, prefix, *, resize=0, center_crop=False, quality=None, encoding=".jpg",
         pass_through=False, color=1, workers=None, pack_label=False, min_size=DEFAULT_MIN_SIZE) -> PackReport:
    """Write ``<prefix>.rec`` and ``<prefix>.idx`` from an image list, as im2rec does.

    Records keep the list order (also with several workers); the record key
    and header id are each entry's index. Bad images are skipped and
    reported (the first 20 logged one by one, the rest counted); a pack
    that would write no image at all raises :class:`~finetune.errors.DataError`
    and leaves the previous output. The files are written under temporary names and
    replace the previous ones as one unit at the end, so an interrupted pack
    leaves the previous output (or the complete new one), never a new
    ``.rec`` beside an old ``.idx``; a full disk raises
    :class:`~finetune.errors.WriteError` and leaves no temporary file.
    The class names, when known, are written to ``<prefix>_classes.txt``
    byte-exact; a name the file cannot hold (empty, or with a tab, newline or
    carriage return) or a label that is not an integer in
    ``[0, len(class_names))`` raises :class:`~finetune.errors.ListFormatError`
    before anything is written. ``<prefix>.lst`` lists the packed images
    (im2rec's layout), so reports name a record by its file; a
    ``<prefix>.lst`` that pack did not write (the list being packed, say)
    is left as it is.

    Two entries with one index are refused (:class:`~finetune.errors.ListFormatError`):
    the index is the record's ``.idx`` key. A file listed twice is packed
    twice, after a warning (:meth:`ImageList.from_lst`). A class whose every
    image was skipped is named in a warning: its name stays in the class
    names, with no record.

    Parameters
    ----------
    images : ImageList, str or path-like
        What to pack: a list, or a folder / ``.lst`` / ``.csv`` path (read as ``finetune pack`` reads it).
    prefix : str or path-like
        Output prefix (``"data/train"`` writes ``data/train.rec`` and ``data/train.idx``); a
        prefix without a name after its folder (``"data/"``) is refused.
    resize : int
        Resize the shorter side to this many pixels (0: keep the size).
    center_crop : bool
        Crop the centre square first (im2rec's ``--center-crop``).
    quality : int, optional
        JPEG quality 1–100 (default 95), or PNG compression 0–9 (default 3).
    encoding : {".jpg", ".png"}
        Encoding of the stored images.
    pass_through : bool
        Store the original file bytes unchanged (they are still checked).
    color : {1, 0, -1}
        im2rec's ``--color``: 1 colour (3 channels), 0 greyscale, -1 unchanged.
    workers : int, optional
        Processes encoding in parallel (default: all cores).
    pack_label : bool
        Store multi-value labels whole (im2rec's ``--pack-label``).
    min_size : int
        Images whose shorter side is below this are skipped as ``"too small"``.

    Returns
    -------
    PackReport

    Examples
    --------
    >>> import os, tempfile, cv2, numpy as np
    >>> root = tempfile.mkdtemp()
    >>> os.mkdir(os.path.join(root, "a"))
    >>> _ = cv2.imwrite(os.path.join(root, "a", "1.png"), np.zeros((40, 60, 3), np.uint8))
    >>> open(os.path.join(root, "a", "2.jpg"), "w").write("not an image")
    12
    >>> report = pack(ImageList.from_folder(root), os.path.join(root, "out"), resize=20, workers=1)
    >>> report.written, [b.reason for b in report.bad]
    (1, ['not an image'])
    """
    owner = "pack"
    check_choice(owner, "encoding", encoding, (".jpg", ".png"))
    check_choice(owner, "color", color, tuple(_COLOR_FLAGS))
    if quality is None:
        quality = 95 if encoding == ".jpg" else 3
    check_range(owner, "quality", quality, *((1, 100) if encoding == ".jpg" else (0, 9)))
    check_range(owner, "resize", resize, 0)
    images = open_list(images, owner)
    prefix = check_prefix(prefix, owner)
    check_unique_indices(images, owner)
    if prefix.endswith(".rec"):
        prefix = prefix[:-4]
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    opts = dict(resize=int(resize), center_crop=bool(center_crop), quality=int(quality),
                encoding=encoding, pass_through=bool(pass_through), flag=_COLOR_FLAGS[color],
                pack_label=bool(pack_label), min_size=int(min_size))
    items = [(e.index, images.full_path(e), e.label) for e in images]
    workers = default_workers() if workers is None else int(workers)
    rec_path, idx_path = prefix + ".rec", prefix + ".idx"
    outputs, modes = [rec_path, idx_path], ["wb", "w"]
    if images.class_names is not None:  # names and labels refused before anything is written
        outputs.append(classes_path_for(prefix))
        modes.append("w")
        classes = class_names_text(images.class_names, outputs[-1])
        check_labels(images.labels, images.class_names, lambda i: f"pack: entry {i} ({images[i].path!r})")
    lst_path = prefix + ".lst"  # names the records for reports; a list of the user's own stays untouched
    ours = written_with(rec_path, lst_path)
    names_list = (ours or not os.path.lexists(lst_path)) and _listable(lst_path, images)
    if (ours or not os.path.lexists(lst_path)) and not names_list:
        log.warning("%s is not written: a file name holds a tab or newline, which a .lst line cannot; reports "
                    "will name these records by position (record[i]).", lst_path)
    if names_list:
        outputs.append(lst_path)
        modes.append("w")
    start = time.time()
    bad, written, kept = [], 0, []
    # records, index, class names and list replace the previous ones as one unit
    warn = ProblemLog("Skipped", "skipped images", "the report's 'bad' list")
    stale = [p for p, keep in ((classes_path_for(prefix), images.class_names is not None), (lst_path, names_list))
             if not keep and written_with(rec_path, p)]
    with atomic_files(outputs, modes, **TEXT) as files:
        writer = RecordWriter(files[0], files[1])
        results = ordered_map(_pack_one, opts, items, workers=workers, chunksize=4)
        for pos, ((index, path, _), (record, problem)) in enumerate(zip(items, _progress(results, len(items), "pack"))):
            if record is None:
                bad.append(BadImage(index, path, *problem))
                warn(path, *problem)
                continue
            writer.write(index, record)
            written += 1
            kept.append(pos)
        writer.close()
        if not written:  # raised inside the unit: the previous output stays as it was
            warn.close()
            raise DataError(_nothing_packed(images, bad))
        if images.class_names is not None:
            files[2].write(classes)
        if names_list:
            skipped = {b.index for b in bad}
            files[-1].write(lst_text(lst_path, [e for e in images.entries if e.index not in skipped]))
    warn.close()
    lost = empty_classes(images, kept)
    if lost:
        log.warning("%s: %d class(es) have no record, every image of theirs was skipped: %s. The class names still "
                    "list them; fix or replace those images (finetune check) and pack again.", rec_path, len(lost),
                    ", ".join(lost))
    for path in stale:  # an earlier pack's names do not describe these records (files written by hand stay)
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    seconds = time.time() - start
    log.info("Packed %d images into %s (%d skipped) in %.1f s.", written, rec_path, len(bad), seconds, extra=RESULT)
    return PackReport(rec_path, idx_path, written, bad, seconds)
