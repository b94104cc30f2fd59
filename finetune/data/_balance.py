"""Class balancing: oversample small classes with augmented copies.

The retrieval pipeline's recipe ("800 images per class"): every class of the
*training* list with fewer than ``target`` images gets new images made from
its own, each a random affine change (rotation, shift, shear, zoom, flip) of
an original. Only the list passed in is touched — split first, then balance
the training part, so no augmented copy of a validation image can leak.
"""

from __future__ import annotations

import logging
import math
import numbers
import os

import cv2
import numpy as np

from .._outputs import BALANCED, adopt_folder
from .._validation import SEED, validate
from ..errors import ConfigError, DataError, ListFormatError, check_range
from ._check import _progress
from ._image import read_image
from ._imagelist import ImageList
from ._inputs import open_list

__all__ = ["balance", "random_affine"]

log = logging.getLogger("finetune.data")


def random_affine(img, rng, *, rotation=20.0, shift=0.1, shear=0.1, zoom=0.1, flip=True):
    """One random affine change of an ``(H, W[, C])`` image (borders reflected)."""
    h, w = img.shape[:2]
    angle = math.radians(rng.uniform(-rotation, rotation))
    sh = rng.uniform(-shear, shear)
    zx, zy = rng.uniform(1 - zoom, 1 + zoom, 2)
    tx, ty = rng.uniform(-shift, shift) * w, rng.uniform(-shift, shift) * h
    c, s = math.cos(angle), math.sin(angle)
    m = np.array([[c, -s], [s, c]]) @ np.array([[1, sh], [0, 1]]) @ np.diag([zx, zy])
    if flip and rng.randint(2):
        m = m @ np.diag([-1, 1])
    centre = np.array([w / 2, h / 2])
    offset = centre - m @ centre + [tx, ty]
    affine = np.hstack([m, offset[:, None]]).astype(np.float32)
    return cv2.warpAffine(img, affine, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def _class_folder(out_dir, name) -> str:
    """``out_dir/name``, refused unless it resolves to a folder inside ``out_dir``."""
    base = os.path.realpath(out_dir)
    folder = os.path.realpath(os.path.join(base, str(name)))
    if (not str(name) or os.path.isabs(str(name)) or "\0" in str(name)
            or folder == base or os.path.commonpath([base, folder]) != base):
        raise DataError(f"balance: the class name {name!r} does not name a folder inside {out_dir!r} "
                        "(it is empty, absolute, or leads out of it with '..' or a link). Fix the class names "
                        "(e.g. the classes file) so each is a plain folder name.")
    return folder


def _check_class_labels(images) -> None:
    """Refuse a label that is not a class index (a whole number >= 0): it names no class to balance."""
    for pos, entry in enumerate(images.entries):
        label = entry.label
        whole = isinstance(label, numbers.Real) and not isinstance(label, bool) and float(label).is_integer()
        if not whole or label < 0:
            raise ListFormatError(
                f"balance: entry {pos} ({entry.path!r}) has label {label!r}, which is not a class index (a whole "
                "number >= 0). balance brings each class up to the target, so every label must name one; fix "
                "the list's labels (or drop those lines) first. Nothing was written.")


def _write_image(path: str, img, ext: str) -> None:
    """Encode and write ``img``; unlike ``cv2.imwrite`` any file name works (one that is not UTF-8 too)."""
    ok, data = cv2.imencode(ext, img)
    if not ok:
        raise ConfigError(f"balance: OpenCV cannot encode images as {ext!r}; use ext='.jpg' or '.png'.")
    with open(path, "wb") as f:
        f.write(data.tobytes())


def balance(images: ImageList, target: int, out_dir, *, seed=0, rotation=20.0, shift=0.1, shear=0.1,
            zoom=0.1, flip=True, ext=".jpg") -> ImageList:
    """Bring every class of a training list up to ``target`` images by augmentation.

    New images are written to ``out_dir/<class name>/`` and the returned list
    holds the originals plus the new files (absolute paths). Classes with
    ``target`` or more images are kept as they are.

    Every label must be a class index, a whole number ``>= 0`` (with class
    names, one of theirs): any other label is refused before anything is
    written, since it names no class to bring up to ``target``.

    Parameters
    ----------
    images : ImageList, str or path-like
        The training list (never the validation list), or the path of a ``.lst`` / ``.csv`` / folder.
    target : int
        Images wanted per class.
    out_dir : str or path-like
        Where the generated images go.
    seed : int
        Seed of the choice of originals and of the augmentation.
    rotation : float
        Maximum rotation in degrees.
    shift : float
        Maximum shift as a fraction of width/height.
    shear : float
        Maximum shear factor.
    zoom : float
        Maximum zoom change (``0.1`` zooms by 0.9–1.1).
    flip : bool
        Flip left-right half of the time.
    ext : str
        Image format of the new files.

    Returns
    -------
    ImageList

    Raises
    ------
    ListFormatError
        A label is not a class index (negative, fractional, several values), named with its entry.

    Examples
    --------
    >>> import os, tempfile, cv2, numpy as np
    >>> root = tempfile.mkdtemp()
    >>> for name, n in (("a", 1), ("b", 3)):
    ...     os.mkdir(os.path.join(root, name))
    ...     for i in range(n):
    ...         _ = cv2.imwrite(os.path.join(root, name, f"{i}.png"), np.zeros((16, 16, 3), np.uint8))
    >>> balanced = balance(ImageList.from_folder(root), 3, os.path.join(root, "extra"))
    >>> balanced.class_counts()
    {0: 3, 1: 3}
    """
    if int(target) != target or target < 1:
        raise ConfigError(f"The 'target' parameter of balance must be a positive integer. Got {target!r} instead.")
    check_range("balance", "rotation", rotation, 0, 180)
    for name, value in (("shift", shift), ("shear", shear), ("zoom", zoom)):
        check_range("balance", name, value, 0, 1, high_open=True)
    validate("balance", {"seed": seed}, {"seed": SEED})
    images = open_list(images, "balance")
    _check_class_labels(images)
    rng = np.random.RandomState(seed)
    out_dir = os.fspath(out_dir)
    names = list(images.class_names or []) or [str(label) for label in sorted(set(images.single_labels()))]
    adopt_folder(out_dir, BALANCED, what="balanced images folder", legacy=names)  # never a folder of the user's
    entries = [(e.index, os.path.abspath(images.full_path(e)), e.label) for e in images]
    next_index = max((e.index for e in images), default=-1) + 1
    labels = images.single_labels()
    for label in sorted(set(labels)):
        members = [e for e, lab in zip(images, labels) if lab == label]
        missing = int(target) - len(members)
        if missing <= 0:
            continue
        name = images.class_names[label] if images.class_names and label < len(images.class_names) \
            else str(label)
        folder = _class_folder(out_dir, name)
        os.makedirs(folder, exist_ok=True)
        for k in _progress(range(missing), missing, f"balance {name}"):
            source = members[rng.randint(len(members))]
            try:
                img = read_image(images.full_path(source), "BGR")
            except DataError as exc:
                raise DataError(f"balance: {exc} Run finetune.check first to drop bad images.") from None
            new = random_affine(img, rng, rotation=rotation, shift=shift, shear=shear, zoom=zoom, flip=flip)
            path = os.path.join(folder, f"balance_{k:05d}{ext}")
            _write_image(path, new, ext)
            entries.append((next_index, path, source.label))
            next_index += 1
        log.info("Class %s: %d images + %d augmented.", name, len(members), missing)
    return ImageList(entries, class_names=images.class_names)
