"""Built-in data: Fashion-MNIST from the Debian package ``dataset-fashion-mnist``.

The idx files are read directly (16-byte image header, 8-byte label header):
MXNet's own ``FashionMNIST`` loader checks download checksums that the Debian
files do not match, and then tries to download.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import zlib
from numbers import Integral

import cv2
import numpy as np

from .._folder_swap import atomic_dir
from .._validation import SEED, Interval, validate
from ..errors import ConfigError, DataError, MissingFileError, UnknownNameError, check_choice
from ._imagelist import ImageList

log = logging.getLogger("finetune.data")
_FOLDER = "Fashion-MNIST image folder"  # written and replaced as a whole; any other folder is refused

__all__ = ["FASHION_MNIST_CLASSES", "fashion_mnist_dir", "load_fashion_mnist",
           "write_fashion_mnist_folder",
           "write_fashion_mnist_unlabeled"]

#: Fashion-MNIST class names, in label order (usable as folder names).
FASHION_MNIST_CLASSES = ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle_boot")

_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def fashion_mnist_dir() -> str:
    """The folder with the idx files.

    Looked up in ``$FINETUNE_FASHION_MNIST``, ``/usr/share/datasets/fashion-mnist``
    (``apt-get install dataset-fashion-mnist``) and ``.cache/debian/usr/share/
    datasets/fashion-mnist`` in the source tree (``apt-get download`` + ``dpkg -x``).
    """
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    candidates = [os.environ.get("FINETUNE_FASHION_MNIST"), "/usr/share/datasets/fashion-mnist",
                  os.path.join(here, ".cache/debian/usr/share/datasets/fashion-mnist")]
    for cand in candidates:
        if cand and any(os.path.exists(os.path.join(cand, "t10k-labels-idx1-ubyte" + s))
                        for s in ("", ".gz")):
            return cand
    raise MissingFileError(
        "Fashion-MNIST not found. Install the Debian package: 'apt-get install "
        "dataset-fashion-mnist' (or 'apt-get download dataset-fashion-mnist && dpkg -x *.deb "
        "DIR' and set FINETUNE_FASHION_MNIST=DIR/usr/share/datasets/fashion-mnist).")


def _read_idx(folder, name, magic, header):
    for suffix, opener in (("", open), (".gz", gzip.open)):
        path = os.path.join(folder, name + suffix)
        if os.path.exists(path):
            try:
                with opener(path, "rb") as f:
                    buf = f.read()
            except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
                raise DataError(f"{path} cannot be read (a truncated or damaged download?): "
                                f"{type(exc).__name__}: {exc}. Download it again.") from None
            break
    else:
        raise MissingFileError(f"{os.path.join(folder, name)}(.gz) does not exist.")
    if len(buf) < header or struct.unpack(">I", buf[:4])[0] != magic:
        raise DataError(f"{path} is not an idx file (bad magic number).")
    dims = struct.unpack(">" + "I" * ((header - 4) // 4), buf[4:header])
    data = np.frombuffer(buf, np.uint8, offset=header)
    if data.size != int(np.prod(dims, dtype=np.int64)):
        raise DataError(f"{path} is truncated: {data.size} bytes for shape {dims}.")
    return data.reshape(dims)


def load_fashion_mnist(split: str = "train", folder=None):
    """Load Fashion-MNIST as arrays.

    Parameters
    ----------
    split : {"train", "test"}
        60,000 training or 10,000 test images.
    folder : str, optional
        Where the idx files are (default: :func:`fashion_mnist_dir`).

    Returns
    -------
    images : numpy.ndarray
        ``(N, 28, 28)`` uint8 greyscale.
    labels : numpy.ndarray
        ``(N,)`` int64, indices into :data:`FASHION_MNIST_CLASSES`.

    Examples
    --------
    >>> images, labels = load_fashion_mnist("test")  # doctest: +SKIP
    >>> images.shape, labels[:3]                     # doctest: +SKIP
    ((10000, 28, 28), array([9, 2, 1]))
    """
    check_choice("load_fashion_mnist", "split", split, tuple(_FILES))
    folder = folder or fashion_mnist_dir()
    img_name, lab_name = _FILES[split]
    images = _read_idx(folder, img_name, 0x803, 16)
    labels = _read_idx(folder, lab_name, 0x801, 8).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels.")
    return images, labels


def write_fashion_mnist_folder(out_dir, per_class: int = 100, *, split: str = "train", seed: int = 0,
                               size=None, classes=None, folder=None) -> ImageList:
    """Write a class-per-folder PNG tree of Fashion-MNIST (``per_class`` images per class).

    The images are a seeded, stratified sample; the folder names are
    :data:`FASHION_MNIST_CLASSES`, so :meth:`ImageList.from_folder` labels them in
    sorted folder order, as im2rec does (``"Ankle_boot"`` is 0), not in the
    official label order; the names travel with the list.

    Parameters
    ----------
    out_dir : str or path-like
        Created if missing, replaced as a whole if an earlier call wrote it;
        a folder that holds anything else is refused
        (:class:`~finetune.errors.OutputExistsError`): a user's images never
        mix with these.
    per_class : int
        Images per class (at most 6,000 for ``"train"``, 1,000 for ``"test"``;
        a larger number writes every image of the split, with a warning saying how many).
    split : {"train", "test"}
        Which official split to sample.
    seed : int
        Seed of the sample.
    size : int, optional
        Upscale the 28x28 images to ``size x size`` (bilinear).
    classes : int or list of str, optional
        Write only these classes: a number ``N`` takes the first ``N`` in
        sorted name order (labels ``0 .. N-1`` once listed), or give names.
        The sample of each class does not depend on this choice.
    folder : str, optional
        Where the idx files are.

    Returns
    -------
    ImageList
        The written tree, as :meth:`ImageList.from_folder` reads it.
    """
    validate("write_fashion_mnist_folder", {"per_class": per_class, "seed": seed, "size": size},
             {"per_class": Interval(Integral, 1, None), "seed": SEED, "size": [Interval(Integral, 1, 4096), None]})
    if classes is None:
        keep = set(FASHION_MNIST_CLASSES)
    elif isinstance(classes, (int, np.integer)):
        if not 1 <= classes <= len(FASHION_MNIST_CLASSES):
            raise ConfigError(f"The 'classes' parameter must be in [1, {len(FASHION_MNIST_CLASSES)}]. "
                              f"Got {classes!r} instead.")
        keep = set(sorted(FASHION_MNIST_CLASSES)[:int(classes)])
    elif isinstance(classes, (str, bytes)):
        raise ConfigError(f"The 'classes' parameter of write_fashion_mnist_folder must be a number or a list of "
                          f"names. Got the string {classes!r}; for one class give [{classes!r}].")
    else:
        keep = set(classes)
        unknown = keep - set(FASHION_MNIST_CLASSES)
        if unknown:
            raise UnknownNameError("Fashion-MNIST class", sorted(unknown)[0], FASHION_MNIST_CLASSES)
    images, labels = load_fashion_mnist(split, folder)
    held = min(int(np.sum(labels == FASHION_MNIST_CLASSES.index(name))) for name in keep)
    if per_class > held:
        log.warning("The Fashion-MNIST %s split holds %d images per class: writing %d per class, not the "
                    "per_class=%d asked for.", split, held, held, per_class)
    out_dir = os.fspath(out_dir)
    with atomic_dir(out_dir, what=_FOLDER) as tmp:
        for label, chosen in enumerate(_sample(labels, per_class, seed)):
            name = FASHION_MNIST_CLASSES[label]
            if name not in keep:
                continue
            os.makedirs(os.path.join(tmp, name), exist_ok=True)
            for i in chosen:
                _write(os.path.join(tmp, name, f"{split}_{i:05d}.png"), images[i], size)
    return ImageList.from_folder(out_dir, exts=(".png",))


def _sample(labels, per_class, seed) -> list:
    """The indices :func:`write_fashion_mnist_folder` takes, one sorted array per official label."""
    rng = np.random.RandomState(seed)
    return [np.sort(rng.choice(members, size=min(int(per_class), len(members)), replace=False))
            for members in (np.flatnonzero(labels == label) for label in range(len(FASHION_MNIST_CLASSES)))]


def _write(path, img, size) -> None:
    if size:
        img = cv2.resize(img, (int(size), int(size)), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(path, img)


def write_fashion_mnist_unlabeled(out_dir, count: int, *, per_class: int = 100, seed: int = 0, size=None,
                                  folder=None) -> list:
    """Write ``count`` official training images the labelled sample does not hold, without labels.

    The images :func:`write_fashion_mnist_folder` does not take with the same
    ``per_class`` and ``seed`` (split ``"train"``), drawn at random, written
    into one flat folder as ``00000.png``, ``00001.png``, ... — no class folder,
    no label in the name: unlabelled images, for learning from unlabelled data
    (``Recipe.fit(..., unlabeled=...)``).

    Parameters
    ----------
    out_dir : str or path-like
        As for :func:`write_fashion_mnist_folder`.
    count : int
        How many (at most ``60000 - 10 * per_class``).
    per_class, seed : int
        The labelled sample to leave out.
    size, folder
        As for :func:`write_fashion_mnist_folder`.

    Returns
    -------
    list of str
        The files written.
    """
    validate("write_fashion_mnist_unlabeled", {"count": count, "per_class": per_class, "seed": seed, "size": size},
             {"count": Interval(Integral, 1, None), "per_class": Interval(Integral, 1, None), "seed": SEED,
              "size": [Interval(Integral, 1, 4096), None]})
    images, labels = load_fashion_mnist("train", folder)
    rest = np.setdiff1d(np.arange(len(labels)), np.concatenate(_sample(labels, per_class, seed)))
    if count > rest.size:
        raise ConfigError(f"Only {rest.size} training images are outside a sample of {per_class} per class; "
                          f"asked for {count}. Ask for at most {rest.size}.")
    chosen = np.random.RandomState([seed, 1]).choice(rest, size=int(count), replace=False)
    out_dir = os.fspath(out_dir)
    with atomic_dir(out_dir, what=_FOLDER) as tmp:
        for k, i in enumerate(chosen):
            _write(os.path.join(tmp, f"{k:05d}.png"), images[i], size)
    return [os.path.join(out_dir, f"{k:05d}.png") for k in range(len(chosen))]
