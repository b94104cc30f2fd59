"""Image files under a folder: the one extension list and the one walker every reader uses.

:meth:`ImageList.from_folder`, :func:`list_images` and through it the
predictor, evaluation, feature extraction, Grad-CAM and quantization
calibration find images the same way: the extensions of
:data:`IMAGE_EXTENSIONS` (case-insensitive), folders walked top-down in sorted
order with ``os.walk(followlinks=True)``, each linked folder followed once (a
link back up the tree ends instead of looping) and each real file listed once
(a second link to it is skipped and counted). A linked folder that points to
another folder under the same root is skipped with a warning naming its
target, so the real folder keeps its name. A folder that cannot be read
raises :class:`~finetune.errors.DataError` naming it and the reason: an
unreadable class is never taken for an empty one.
"""

from __future__ import annotations

import collections
import logging
import os
import stat
import unicodedata
from typing import NamedTuple

from ..errors import ConfigError, DataError, MissingFileError

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
    aliases: tuple = ()


def _unreadable(path, exc, root) -> DataError:
    """The error for a folder (or a name in it) the walk cannot read."""
    reason = getattr(exc, "strerror", None) or str(exc)
    where = "" if os.path.normpath(os.fspath(path)) == os.path.normpath(root) else f" (under image root {root!r})"
    return DataError(f"Cannot read folder {os.fspath(path)!r}{where}: {reason}. Fix its "
                     "permissions or move it out of the root; an unreadable folder is never taken as one "
                     "without images.")


def _inside(real, base) -> bool:
    """Whether the resolved path ``real`` is ``base`` or below it, in no hidden folder."""
    rel = os.path.relpath(real, base)
    return rel != os.pardir and not rel.startswith(os.pardir + os.sep) and not any(
        part.startswith(".") for part in rel.split(os.sep) if part != os.curdir)


def normalise_exts(exts) -> set:
    """Lower-case extensions with their leading dot: ``["JPG", ".png"]`` → ``{".jpg", ".png"}``."""
    if isinstance(exts, str):
        exts = [exts]
    if isinstance(exts, bytes) or not all(isinstance(e, str) for e in exts):
        raise ConfigError(f"Image extensions must be text such as '.jpg' or ['.jpg', '.png']. Got {exts!r:.80}.")
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
    DataError
        ``root`` or a folder under it cannot be read (no permission): named, with the reason.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise MissingFileError(f"Image folder {root!r} does not exist or is not a folder.")
    exts = normalise_exts(exts)
    files, skipped = [], collections.Counter()
    top = os.path.realpath(root)
    seen_files, seen_dirs, links, hidden, broken, aliases = set(), {top}, 0, [], [], []

    def is_file(path):
        try:
            return stat.S_ISREG(os.stat(path).st_mode)
        except PermissionError as exc:  # the folder holding it (or a link's target) is not searchable
            raise _unreadable(os.path.dirname(path), exc, root) from None
        except OSError:  # a link to nothing, a link loop
            return False

    def take(folder, name):
        nonlocal links
        path = os.path.join(folder, name)
        if not is_file(path):
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

    def refuse(exc):
        raise _unreadable(exc.filename or root, exc, root)

    if recursive:
        for folder, dirs, names in os.walk(root, followlinks=True, onerror=refuse):
            dirs.sort()
            keep = []
            for d in dirs:  # follow each linked folder once: no loops, no folder listed twice
                if d.startswith("."):
                    hidden.append(os.path.relpath(os.path.join(folder, d), root))
                    continue
                real = os.path.realpath(os.path.join(folder, d))
                if real != top and os.path.islink(os.path.join(folder, d)) and _inside(real, top):
                    # a second name for a folder the walk reaches anyway: the real name is the class
                    aliases.append((os.path.relpath(os.path.join(folder, d), root), os.path.relpath(real, top)))
                    continue
                if real in seen_dirs:
                    links += 1
                    continue
                seen_dirs.add(real)
                keep.append(d)
            dirs[:] = keep
            for name in sorted(names):
                take(folder, name)
    else:
        try:
            names = sorted(os.listdir(root))
        except OSError as exc:
            raise _unreadable(root, exc, root) from None
        for name in names:
            take(root, name)
    if aliases:
        log.warning("Skipped %d linked folder(s) in %s that point to folders under it (each real folder is "
                    "listed once, under its own name): %s.", len(aliases), root,
                    ", ".join(f"{a} is a link to {t}" for a, t in aliases[:5]) + (", ..." if len(aliases) > 5 else ""))
    if links:
        log.warning("Skipped %d file(s) or folder(s) in %s reached a second time through links "
                    "(each real file is listed once).", links, root)
    if hidden:
        log.warning("Skipped %d hidden file(s) or folder(s) in %s (names starting with '.'): %s.", len(hidden), root,
                    ", ".join(hidden[:5]) + (", ..." if len(hidden) > 5 else ""))
    if broken:
        log.warning("Skipped %d name(s) in %s that look like images but are not files (a link to nothing, a pipe): "
                    "%s.", len(broken), root, ", ".join(broken[:5]) + (", ..." if len(broken) > 5 else ""))
    warn_same_files([path for _, path in files], root)
    return Scan(files, dict(sorted(skipped.items())), links, hidden, broken, tuple(aliases))


def same_files(paths) -> list:
    """Groups of positions in ``paths`` that name one file: the same path, or hard links (same device and inode).

    Paths that do not exist are compared by their normalised text.

    Examples
    --------
    >>> same_files(["a/x.png", "b.png", "a/./x.png"])
    [[0, 2]]
    """
    groups = collections.defaultdict(list)
    for pos, path in enumerate(paths):
        try:
            st = os.stat(path)
            key = (st.st_dev, st.st_ino)
        except (OSError, ValueError):
            key = os.path.normpath(os.path.abspath(path))
        groups[key].append(pos)
    return [g for g in groups.values() if len(g) > 1]


def warn_same_files(paths, where, names=None) -> list:
    """Log one warning naming the files of ``paths`` listed more than once (:func:`same_files`); return the groups.

    ``names`` (default ``paths``) are what the warning shows; ``where`` names the folder or list.
    Nothing is dropped: each listing stays an image of its own.
    """
    groups = same_files(paths)
    if groups:
        names = paths if names is None else names
        shown = "; ".join(" = ".join(repr(os.fspath(names[i])) for i in g) for g in groups[:5])
        log.warning("%d file(s) in %s are listed more than once (the same path, or hard links to one file): %s%s. "
                    "Each listing is kept as an image of its own (a record each when packed, possibly in "
                    "both training and validation); remove the extra names if that is not meant.",
                    len(groups), os.fspath(where), shown, "; ..." if len(groups) > 5 else "")
    return groups


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


def warn_lookalikes(names, root) -> None:
    """Warn about class names that look alike: they differ only in their Unicode form (NFC "café" and NFD
    "café" print the same) or only in case (``Dog`` / ``dog``: one folder on a case-insensitive disk)."""
    seen = {}
    for name in names:
        seen.setdefault(unicodedata.normalize("NFC", name).casefold(), []).append(name)
    alike = [group for group in seen.values() if len(group) > 1]
    if alike:
        log.warning("Class folders in %s whose names look the same (they differ only in case or are spelt with "
                    "other Unicode characters) are different classes: %s. Rename one of each: a copy to a "
                    "case-insensitive disk (macOS, Windows) would merge them.", root,
                    "; ".join(" / ".join(ascii(n) for n in group) for group in alike))
