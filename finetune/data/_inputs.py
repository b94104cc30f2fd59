"""What the data functions accept: an image list or a path to one, an output prefix, unique indices.

One place for the rules every public data function applies to its inputs,
so the Python API takes what the command line takes (a folder, a ``.lst`` or
a ``.csv`` path) and refuses what the command line refuses (an output prefix
without a name), with the same messages:

* :func:`open_list` turns an :class:`ImageList` or a path into an :class:`ImageList`;
  a string is never iterated as a sequence of file names;
* :func:`check_prefix` refuses ``"data/"``, ``"."`` and ``""`` as an output prefix;
* :func:`check_unique_indices` refuses two entries with one index (one ``.idx`` key);
* :func:`missing_root_hint` says, when no listed file exists, that the list's
  paths are relative to an image root that was not given.
"""

from __future__ import annotations

import collections
import os

from .._outputs import name_example
from ..errors import ConfigError, ListFormatError
from ._imagelist import ImageList

__all__ = ["check_prefix", "check_unique_indices", "missing_root_hint", "open_list"]


def open_list(source, owner: str, *, root=None, exts=None) -> ImageList:
    """``source`` as an :class:`ImageList`: itself, or the folder / ``.lst`` / ``.csv`` it names.

    Parameters
    ----------
    source : ImageList, str or path-like
        The images, or a folder (one sub-folder per class), a ``.csv`` or a ``.lst`` file.
    owner : str
        The function, for messages.
    root : str, optional
        Image root of a ``.lst`` / ``.csv`` (default: its folder).
    exts : sequence of str, optional
        Extensions for a folder (default: :data:`~finetune.data.IMAGE_EXTENSIONS`).

    Returns
    -------
    ImageList

    Raises
    ------
    MissingFileError
        The path does not exist.
    ConfigError
        ``source`` is neither an :class:`ImageList` nor a path (``bytes`` included).

    Examples
    --------
    >>> open_list(ImageList([(0, "a.jpg", 0)]), "check")
    ImageList(1 images, 1 classes, root=None)
    >>> open_list(b"images", "check")
    Traceback (most recent call last):
    ...
    finetune.errors.ConfigError: check needs an ImageList or the path of a folder, .lst or .csv file. Got bytes \
b'images' instead.
    """
    if isinstance(source, ImageList):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"{owner} needs an ImageList or the path of a folder, .lst or .csv file. "
                          f"Got {type(source).__name__} {source!r:.80} instead.")
    path = os.fspath(source)
    if isinstance(path, bytes):
        raise ConfigError(f"{owner} needs a text path (str). Got bytes {path!r:.80} instead.")
    return ImageList.from_path(path, root=root, **({"exts": exts} if exts else {}))


def check_prefix(prefix, owner: str) -> str:
    """``prefix`` as a ``str``, refused when it has no name after its folder (``"data/"``, ``"."``, ``""``).

    Such a prefix would write hidden files (``data/.rec``, ``data/_classes.txt``).

    Examples
    --------
    >>> check_prefix("data/train", "pack")
    'data/train'
    >>> check_prefix("data/", "pack")
    Traceback (most recent call last):
    ...
    finetune.errors.ConfigError: pack: the output prefix 'data/' needs a name after the folder, e.g. \
'data/train'.
    """
    text = os.fspath(prefix)
    if not isinstance(text, str):
        raise ConfigError(f"{owner}: the output prefix must be a text path. Got {text!r:.80}.")
    stem = text[:-4] if text.lower().endswith(".rec") else text
    example = name_example(stem, "train")
    if example is not None:
        raise ConfigError(f"{owner}: the output prefix {text!r} needs a name after the folder, e.g. {example!r}.")
    return text


def check_unique_indices(images: ImageList, owner: str) -> None:
    """Refuse two entries with the same index: it is the record key in the ``.idx`` file.

    Raises
    ------
    ListFormatError
        Names the index and the two paths.

    Examples
    --------
    >>> check_unique_indices(ImageList([(1, "a.jpg", 0), (1, "b.jpg", 0)]), "pack")
    Traceback (most recent call last):
    ...
    finetune.errors.ListFormatError: pack: entries 0 and 1 ('a.jpg', 'b.jpg') both have index 1; each record \
needs its own index (its .idx key: MXNet would read one image for both). Renumber the list.
    """
    first = {}
    for pos, entry in enumerate(images.entries):
        if entry.index in first:
            k = first[entry.index]
            raise ListFormatError(
                f"{owner}: entries {k} and {pos} ({images[k].path!r}, {entry.path!r}) both have index {entry.index}; "
                "each record needs its own index (its .idx key: MXNet would read one image for both). "
                "Renumber the list.")
        first[entry.index] = pos


def missing_root_hint(images: ImageList, bad) -> str | None:
    """When no file of ``bad`` exists (and none of ``images`` was usable): where the paths were looked for.

    ``None`` when some file exists (then the files are damaged, not misplaced) or every path is absolute.
    """
    if not bad or not all(not os.path.exists(b.path) for b in bad) or all(os.path.isabs(e.path) for e in images):
        return None  # some file exists (damaged, not misplaced), or no path depends on the root
    where = images.root if images.root is not None else "the current folder"
    return (f"None of the files exist (the first: {bad[0].path!r}). A list's paths are relative to its image root, "
            f"here {where!r}: give the folder the list was made from as root (--root).")


def empty_classes(images: ImageList, kept) -> list:
    """Names of the classes that had images in ``images`` but none among the positions ``kept``."""
    if images.class_names is None:
        return []
    labels = [e.label for e in images.entries]
    had = collections.Counter(lab for lab in labels if not isinstance(lab, tuple))
    left = collections.Counter(labels[i] for i in kept if not isinstance(labels[i], tuple))
    return [f"{images.class_names[int(lab)]!r} ({n} listed)" for lab, n in sorted(had.items()) if not left[lab]]
