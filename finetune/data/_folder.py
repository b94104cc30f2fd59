"""Image files under a folder: the one extension list and the one walker every reader uses.

:meth:`ImageList.from_folder`, :func:`list_images` and through it the
predictor, evaluation, feature extraction, Grad-CAM and quantization
calibration find images the same way: the extensions of
:data:`IMAGE_EXTENSIONS` (case-insensitive), folders walked top-down in sorted
order with ``os.walk(followlinks=True)``, each linked folder followed once (a
link back up the tree ends instead of looping) and each real file listed once
(a second link to it is skipped and counted).
"""

from __future__ import annotations

import collections
import logging
import os
from typing import NamedTuple

from ..errors import DataError, MissingFileError

__all__ = ["IMAGE_EXTENSIONS", "list_images", "scan_folder"]

log = logging.getLogger("finetune.data")

#: Extensions of the image files finetune reads from folders (OpenCV decodes all of them),
#: compared case-insensitively.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class Scan(NamedTuple):
    """What :func:`scan_folder` found.

    Attributes
    ----------
    files : list of (str, str)
        ``(folder, path)`` of every accepted file, in walk order.
    skipped : dict
        Files left out for their extension, ``{extension: count}``.
    links : int
        Files and folders skipped because a link reached them a second time.
    hidden : list of str
        Hidden files and folders left out (names starting with ``.``:
        ``.ipynb_checkpoints``, macOS ``._photo.jpg`` companions).
    broken : list of str
        Names with an image extension that are not readable files (a link to
        nothing, a pipe, a socket), left out and named in a warning.
    """

    files: list
    skipped: dict
    links: int
    hidden: tuple = ()
    broken: tuple = ()


def normalise_exts(exts) -> set:
    """Lower-case extensions with their leading dot: ``["JPG", ".png"]`` → ``{".jpg", ".png"}``."""
    if isinstance(exts, str):
        exts = [exts]
    return {e.lower() if e.startswith(".") else "." + e.lower() for e in exts}


def scan_folder(root, exts=IMAGE_EXTENSIONS, *, recursive: bool = True) -> Scan:
    """Walk ``root`` for image files, following each linked folder once and listing each real file once.

    Hidden files and folders (names starting with ``.``) are left out and
    named in a warning: a ``.ipynb_checkpoints`` folder is not a class, and
    ``._photo.jpg`` (what macOS writes beside a photo on some disks) is not
    an image.

    Parameters
    ----------
    root : str or path-like
        The folder.
    exts : sequence of str
        Accepted extensions, compared case-insensitively.
    recursive : bool
        Walk sub-folders (top-down, sorted); ``False`` takes only the files in ``root``.

    Returns
    -------
    Scan

    Raises
    ------
    MissingFileError
        ``root`` is not a folder.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise MissingFileError(f"Image folder {root!r} does not exist or is not a folder.")
    exts = normalise_exts(exts)
    files, skipped = [], collections.Counter()
    seen_files, seen_dirs, links, hidden, broken = set(), {os.path.realpath(root)}, 0, [], []

    def take(folder, name):
        nonlocal links
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            if os.path.splitext(name)[1].lower() in exts and not os.path.isdir(path):
                broken.append(os.path.relpath(path, root))
            return
        if name.startswith(".") and os.path.splitext(name)[1].lower() in exts:
            hidden.append(os.path.relpath(path, root))
            return
        suffix = os.path.splitext(name)[1].lower()
        if suffix not in exts:
            if not (name.startswith(".") and name.endswith((".lock", ".finetune"))):  # finetune's own locks/markers
                skipped[suffix or "(no extension)"] += 1
            return
        real = os.path.realpath(path)
        if real in seen_files:  # the same file again, through a link
            links += 1
            return
        seen_files.add(real)
        files.append((folder, path))

    if recursive:
        for folder, dirs, names in os.walk(root, followlinks=True):
            dirs.sort()
            keep = []
            for d in dirs:  # follow each linked folder once: no loops, no folder listed twice
                if d.startswith("."):
                    hidden.append(os.path.relpath(os.path.join(folder, d), root))
                    continue
                real = os.path.realpath(os.path.join(folder, d))
                if real in seen_dirs:
                    links += 1
                    continue
                seen_dirs.add(real)
                keep.append(d)
            dirs[:] = keep
            for name in sorted(names):
                take(folder, name)
    else:
        for name in sorted(os.listdir(root)):
            take(root, name)
    if links:
        log.warning("Skipped %d file(s) or folder(s) in %s reached a second time through links "
                    "(each real file is listed once).", links, root)
    if hidden:
        log.warning("Skipped %d hidden file(s) or folder(s) in %s (names starting with '.'): %s.", len(hidden), root,
                    ", ".join(hidden[:5]) + (", ..." if len(hidden) > 5 else ""))
    if broken:
        log.warning("Skipped %d name(s) in %s that look like images but are not files (a link to nothing, a pipe): "
                    "%s.", len(broken), root, ", ".join(broken[:5]) + (", ..." if len(broken) > 5 else ""))
    return Scan(files, dict(sorted(skipped.items())), links, hidden, broken)


def image_paths(folder, exts=IMAGE_EXTENSIONS, *, recursive: bool = True) -> list:
    """The image files under ``folder`` sorted by relative path; ``[]`` when there are none."""
    folder = os.fspath(folder)
    paths = [path for _, path in scan_folder(folder, exts, recursive=recursive).files]
    return sorted(paths, key=lambda p: os.path.relpath(p, folder).split(os.sep))


def list_images(folder, *, exts=IMAGE_EXTENSIONS, recursive: bool = True) -> list:
    """The image files under a folder, sorted by their path relative to it.

    The files :meth:`ImageList.from_folder` finds, without labels: the
    extensions of ``exts``, each linked folder followed once (a link loop
    ends) and each real file listed once.

    Parameters
    ----------
    folder : str or path-like
        The folder.
    exts : sequence of str
        Accepted extensions, compared case-insensitively (default
        :data:`IMAGE_EXTENSIONS`).
    recursive : bool
        Include the images of sub-folders.

    Returns
    -------
    list of str
        ``folder`` joined with each file's relative path, sorted by the
        relative path (``a/2.jpg`` before ``b.jpg``).

    Raises
    ------
    MissingFileError
        ``folder`` is not a folder.
    DataError
        It holds no image files.

    Examples
    --------
    >>> import os, tempfile, cv2, numpy as np
    >>> root = tempfile.mkdtemp()
    >>> os.mkdir(os.path.join(root, "a"))
    >>> for name in ("b.png", os.path.join("a", "2.pgm")):
    ...     _ = cv2.imwrite(os.path.join(root, name), np.zeros((4, 4), np.uint8))
    >>> open(os.path.join(root, "notes.txt"), "w").close()
    >>> [os.path.relpath(p, root) for p in list_images(root)]
    ['a/2.pgm', 'b.png']
    """
    paths = image_paths(folder, exts, recursive=recursive)
    if not paths:
        names = ", ".join(sorted(normalise_exts(exts)))
        raise DataError(f"Folder {os.fspath(folder)!r} holds no image files ({names}). "
                        "Put images there or pass another folder.")
    return paths
