"""Image lists: scan a class-per-folder tree, read/write im2rec ``.lst`` and CSV, split.

The class → label mapping of :meth:`ImageList.from_folder` is the one MXNet's
``tools/im2rec.py --list --recursive`` produces: folders are walked top-down in
sorted order (``os.walk`` with sorted ``dirs``), and every folder that holds at
least one matching image gets the next label. The class name is the folder's
path relative to the root (``"cat"``, or ``"animals/cat"`` in deeper trees).

Splitting is stratified per class (the allocation is in ``_split.py``); the
``.lst`` and CSV formats are read and written by ``_listfiles.py``.
"""

from __future__ import annotations

import collections
import logging
import os
from typing import NamedTuple

from .._progress import RESULT
from ..errors import ConfigError, MissingFileError
from ._folder import IMAGE_EXTENSIONS, normalise_exts, scan_folder, warn_lookalikes, warn_same_files
from ._listfiles import check_labels, classes_path_for, find_class_names, read_csv, read_lst, write_lists
from ._split import stratified_split

__all__ = ["ImageEntry", "ImageList", "DEFAULT_EXTS"]

log = logging.getLogger("finetune.data")

#: Extensions :meth:`ImageList.from_folder` accepts by default: :data:`IMAGE_EXTENSIONS`, the
#: one list every folder reader of finetune uses (kept under this name for compatibility).
DEFAULT_EXTS = IMAGE_EXTENSIONS


class ImageEntry(NamedTuple):
    """One image of an :class:`ImageList`.

    Attributes
    ----------
    index : int
        The image's index (the first column of an im2rec ``.lst``; the record
        key in the ``.idx`` file).
    path : str
        Path of the image, relative to the list's ``root`` (or absolute).
    label : int, float or tuple of float
        Class label (an ``int`` for ordinary classification).
    """

    index: int
    path: str
    label: object


class ImageList:
    """A list of labelled images: ``(index, path, label)`` entries plus class names.

    Parameters
    ----------
    entries : iterable of ImageEntry or (index, path, label) tuples
        The images. Paths are relative to ``root`` (or absolute).
    class_names : list of str, optional
        Name of each label, in label order.
    root : str, optional
        Folder the relative paths start from (default: the current folder).
    skipped : dict, optional
        Files left out while scanning, ``{extension: count}``.

    Raises
    ------
    ListFormatError
        With ``class_names``, a single label that is not an integer in
        ``[0, len(class_names))`` (multi-value labels are not checked).

    Notes
    -----
    Paths and class names are kept byte-exact: spaces at either end stay, and
    a name that is not valid UTF-8 (as :func:`os.listdir` returns it, with
    lone surrogates) is written back to lists as the same bytes.

    Examples
    --------
    >>> images = ImageList([(0, "a.jpg", 0), (1, "b.jpg", 1)], class_names=["cat", "dog"])
    >>> len(images), images.class_names, images[1].label
    (2, ['cat', 'dog'], 1)
    """

    def __init__(self, entries=(), *, class_names=None, root=None, skipped=None):
        for param, value in (("entries", entries), ("class_names", class_names)):
            if isinstance(value, (str, bytes, os.PathLike)):  # never its letters as entries or names
                raise ConfigError(f"ImageList's {param!r} must be a sequence, not the {type(value).__name__} "
                                  f"{value!r:.80}. To read a folder or a list file use ImageList.from_folder, "
                                  "from_lst or from_csv.")
        self.entries = [ImageEntry(int(i), str(p), lab) for i, p, lab in entries]
        self.class_names = list(class_names) if class_names is not None else None
        self.root = os.fspath(root) if root is not None else None
        self.skipped = dict(skipped or {})
        check_labels(self.labels, self.class_names,
                     lambda i: f"ImageList entry {i} ({self.entries[i].path!r})")

    # ------------------------------------------------------------- container
    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i) -> ImageEntry:
        return self.entries[i]

    def __iter__(self):
        return iter(self.entries)

    def __repr__(self) -> str:
        k = len(self.class_names) if self.class_names is not None else len(set(self.single_labels()))
        extra = f", skipped={sum(self.skipped.values())}" if self.skipped else ""
        return f"ImageList({len(self)} images, {k} classes, root={self.root!r}{extra})"

    @property
    def paths(self) -> list:
        """Full paths of the images (``root`` joined with each entry's path)."""
        return [self.full_path(e) for e in self.entries]

    @property
    def labels(self) -> list:
        """The label of every entry."""
        return [e.label for e in self.entries]

    def full_path(self, entry: ImageEntry) -> str:
        """The path of ``entry`` joined to ``root``."""
        if self.root is None or os.path.isabs(entry.path):
            return entry.path
        return os.path.join(self.root, entry.path)

    def single_labels(self) -> list:
        """The (first) label of every entry as an int, for stratification and counting."""
        return [int(e.label[0] if isinstance(e.label, tuple) else e.label) for e in self.entries]

    def class_counts(self) -> dict:
        """``{label: number of images}``, sorted by label."""
        return dict(sorted(collections.Counter(self.single_labels()).items()))

    def subset(self, positions) -> "ImageList":
        """A new list holding the entries at ``positions`` (same root and class names)."""
        return ImageList([self.entries[i] for i in positions], class_names=self.class_names,
                         root=self.root)

    # ---------------------------------------------------------- constructors
    @classmethod
    def from_folder(cls, root, *, exts=DEFAULT_EXTS, recursive=True) -> "ImageList":
        """Scan a class-per-folder tree (one sub-folder per class).

        Labels follow MXNet's ``im2rec.py --list --recursive``: folders are
        walked in sorted order and each folder holding images gets the next
        label; the class name is the folder path relative to ``root``.
        Files whose extension is not in ``exts`` (GIFs, text files, ...) are
        skipped and counted in :attr:`skipped` (and logged). Each linked
        folder is followed once (a link loop ends) and each real file is
        listed once, as everywhere finetune reads a folder (:func:`list_images`).

        Parameters
        ----------
        root : str or path-like
            The top folder.
        exts : sequence of str
            Accepted extensions, compared case-insensitively (``".jpg"`` matches ``X.JPG``).
        recursive : bool
            Walk sub-folders, one class per folder. ``False`` takes only the
            files directly in ``root``, all with label 0 (as im2rec does).

        Returns
        -------
        ImageList

        Raises
        ------
        MissingFileError
            ``root`` is not a folder.
        DataError
            ``root`` or a folder under it cannot be read (e.g. no permission).

        Notes
        -----
        A linked folder that points to another folder under ``root`` is
        skipped with a warning (the real folder is the class), and class
        folders whose names differ only in case or Unicode form are named in
        a warning. A file listed twice (hard links) is kept twice, with a warning.

        Examples
        --------
        >>> import os, tempfile, cv2, numpy as np
        >>> root = tempfile.mkdtemp()
        >>> for name in ("dog", "cat"):
        ...     os.mkdir(os.path.join(root, name))
        ...     _ = cv2.imwrite(os.path.join(root, name, "1.png"), np.zeros((8, 8, 3), np.uint8))
        >>> open(os.path.join(root, "cat", "anim.gif"), "wb").close()
        >>> images = ImageList.from_folder(root)
        >>> images.class_names, images.labels, images.skipped
        (['cat', 'dog'], [0, 1], {'.gif': 1})
        """
        root = os.fspath(root)
        scan = scan_folder(root, exts, recursive=recursive)
        cats = {}
        if recursive:  # each folder holding images gets the next label, in walk order
            entries = [(i, os.path.relpath(path, root), cats.setdefault(folder, len(cats)))
                       for i, (folder, path) in enumerate(scan.files)]
            names = [os.path.relpath(f, root) for f in sorted(cats, key=cats.get)]
        else:
            entries = [(i, os.path.relpath(path, root), 0) for i, (_, path) in enumerate(scan.files)]
            names = [os.path.basename(os.path.abspath(root))] if entries else []
        skipped = scan.skipped
        exts = sorted(normalise_exts(exts))
        if skipped:
            detail = ", ".join(f"{n} {ext}" for ext, n in skipped.items())
            log.info("Skipped %d file(s) in %s that are not in %s: %s.", sum(skipped.values()),
                     root, exts, detail, extra=RESULT)
        if not entries:
            subs = [d for d in os.listdir(root) if not d.startswith(".") and os.path.isdir(os.path.join(root, d))]
            how = (f"; only the files directly in it are listed without recursion, and it has {len(subs)} "
                   "sub-folder(s): list them, one class per folder, with recursive=True (im2rec --recursive)"
                   if subs and not recursive else "")
            log.warning("No images with extensions %s found in %s%s.", exts, root, how)
        elif recursive:
            warn_lookalikes(names, root)
            links = {alias for alias, _ in scan.aliases}
            empty = sorted(d for d in os.listdir(root) if not d.startswith(".") and d not in names and d not in links
                           and os.path.isdir(os.path.join(root, d)) and not any(n.startswith(d + os.sep) for n in names))
            if empty:
                log.warning("Class folder(s) without images in %s are not classes: %s.", root, ", ".join(empty))
        return cls(entries, class_names=names, root=root, skipped=skipped)

    @classmethod
    def from_path(cls, source, *, root=None, exts=DEFAULT_EXTS) -> "ImageList":
        """Read what ``finetune check`` / ``pack`` take: a folder (:meth:`from_folder`), a ``.csv``
        (:meth:`from_csv`) or else a ``.lst`` (:meth:`from_lst`); ``root`` is for the list files.

        Raises
        ------
        MissingFileError
            ``source`` does not exist.

        Examples
        --------
        >>> import os, tempfile, cv2, numpy as np
        >>> root = tempfile.mkdtemp()
        >>> os.makedirs(os.path.join(root, "cat")); _ = cv2.imwrite(os.path.join(root, "cat", "1.png"), np.zeros((8, 8)))
        >>> ImageList.from_path(root).class_names
        ['cat']
        """
        path = os.fspath(source)
        if os.path.isdir(path):
            return cls.from_folder(path, exts=exts)
        if not os.path.exists(path):
            raise MissingFileError(f"{path!r} does not exist: give a folder of images (one subfolder per class), "
                                   "a .lst or a .csv list.")
        reader = cls.from_csv if path.lower().endswith(".csv") else cls.from_lst
        return reader(path, root=root)

    @classmethod
    def from_lst(cls, path, *, root=None, class_names=None) -> "ImageList":
        """Read an im2rec ``.lst`` file (``index \\t label[\\t label...] \\t path``).

        Parameters
        ----------
        path : str or path-like
            The ``.lst`` file.
        root : str, optional
            Folder the image paths are relative to (default: the ``.lst``'s folder).
        class_names : list of str, optional
            Default: read from ``<prefix>_classes.txt`` beside the list when it
            exists (for ``data_train.lst`` also ``data_classes.txt``).

        Raises
        ------
        ListFormatError
            A line does not have the im2rec layout, or (with class names) its
            label is not an integer in ``[0, len(class_names))``; the line number is given.

        Notes
        -----
        The path field is kept exactly (spaces included); only the line
        terminator is removed. Text that is not UTF-8 is read byte-exact.
        """
        path = os.fspath(path)
        if class_names is None:
            class_names = find_class_names(path)
        entries = read_lst(path, class_names)
        if root is None:
            root = os.path.dirname(os.path.abspath(path))
        return _warned(cls(entries, class_names=class_names, root=root), path)

    @classmethod
    def from_csv(cls, path, *, root=None, class_names=None) -> "ImageList":
        """Read a CSV of ``path,label`` rows (a header row is recognised and skipped).

        Labels may be integers or class names; names are mapped to labels in
        sorted order (unless ``class_names`` gives the order).

        Parameters
        ----------
        path : str or path-like
            The CSV file.
        root : str, optional
            Folder relative image paths start from (default: the CSV's folder).
        class_names : list of str, optional
            Label order for textual labels.
        """
        path = os.fspath(path)
        entries, class_names = read_csv(path, class_names)
        if root is None:
            root = os.path.dirname(os.path.abspath(path))
        return _warned(cls(entries, class_names=class_names, root=root), path)

    # ------------------------------------------------------------- splitting
    def split(self, ratios=None, *, per_class=None, seed=0) -> tuple:
        """Split into stratified, seeded, deterministic parts.

        Give either ``ratios`` (e.g. ``(0.8, 0.2)`` or ``(0.5, 0.25, 0.25)``,
        summing to 1) or ``per_class=N`` (N images of every class in the first
        part, the rest in the second — the Caltech-256 protocol).

        Every class is divided in the requested proportion (largest-remainder
        rounding), so a class with few images still appears in every part
        where it can. Entries keep their original order inside each part.

        Parameters
        ----------
        ratios : sequence of float, optional
            Fraction of each class going to each part.
        per_class : int, optional
            Images per class in the first part.
        seed : int
            Seed of the shuffle inside each class.

        Returns
        -------
        tuple of ImageList
            One list per ratio, or ``(first, rest)`` with ``per_class``.

        Examples
        --------
        >>> images = ImageList([(i, f"{i}.jpg", i % 2) for i in range(10)], class_names=["a", "b"])
        >>> train, val = images.split((0.8, 0.2), seed=0)
        >>> len(train), len(val), val.class_counts()
        (8, 2, {0: 1, 1: 1})
        >>> first, rest = images.split(per_class=3)
        >>> first.class_counts(), len(rest)
        ({0: 3, 1: 3}, 4)
        """
        parts = stratified_split(self.single_labels(), ratios, per_class=per_class, seed=seed, name=self._name)
        return tuple(self.subset(sorted(p)) for p in parts)

    def _name(self, label) -> str:
        if self.class_names is not None and 0 <= label < len(self.class_names):
            return repr(self.class_names[label])
        return str(label)

    # --------------------------------------------------------------- writing
    def write_lst(self, path, *, shuffle=True, seed=100, classes_path=None) -> str:
        """Write an im2rec ``.lst`` file, and the class names beside it.

        Lines are ``index \\t label \\t path`` with the label written as im2rec
        does (``%f``). The class names go to ``classes_path`` (default
        ``<prefix>_classes.txt`` for ``<prefix>.lst``), one per line in label order.

        Parameters
        ----------
        path : str or path-like
            The ``.lst`` file to write.
        shuffle : bool
            Shuffle the lines (seeded). MXNet's ``ImageRecordIter`` only
            shuffles within chunks when reading without an index, so a
            shuffled list matters.
        seed : int
            Seed of the shuffle (100, as in im2rec).
        classes_path : str, optional
            Where to write the class names.

        Returns
        -------
        str
            The path of the class-names file.

        Raises
        ------
        ListFormatError
            A path or class name is empty or holds a tab, newline or carriage
            return (the list's separators); it is named and nothing is written.
        """
        classes_path = os.fspath(classes_path) if classes_path else classes_path_for(path)
        write_lists({path: self}, classes_path, shuffle=shuffle, seed=seed)
        return classes_path


def _warned(images, path):
    """``images`` after one warning naming the files it lists more than once (:func:`warn_same_files`)."""
    warn_same_files(images.paths, path, [e.path for e in images])
    return images
