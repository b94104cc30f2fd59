"""Replayable batches: the order of an epoch is a function of (seed, epoch).

:class:`EpochSampler` yields the index batches of one epoch from a
permutation drawn from ``numpy.random.RandomState((seed, epoch))``; a resumed
run starts at any batch of any epoch and sees the same data. With several
workers (``dist_sync``) every *global* batch of ``batch_size * num_parts``
indices is split into ``num_parts`` slices and worker ``part_index`` reads
only its slice, so N workers with batch B see exactly the batches one worker
with batch N*B would see.

:class:`SeededItems` seeds ``numpy.random`` and ``random`` from
``(seed, epoch, index)`` before each item is read, so random augmentation
that draws from those generators is replayed identically, with or without
loader worker processes.
"""

from __future__ import annotations

import logging
import os
import random

import numpy as np
from mxnet import gluon

from ..data import RecordDataset
from ..errors import ConfigError, DataError

__all__ = ["EpochSampler", "RecordBatches", "SeededItems", "as_dataset", "check_dataset_labels", "check_labels", "non_empty",
           "train_loader", "warn_if_validation_is_training"]

log = logging.getLogger("finetune.train")


def _mix(*values) -> int:
    """A 32-bit seed from a few integers (stable across runs and platforms)."""
    return int(np.random.SeedSequence([int(v) & 0xFFFFFFFF for v in values]).generate_state(1)[0])


def as_dataset(data, what: str = "train"):
    """A Gluon ``Dataset`` from a dataset, or from an ``(X, y)`` pair of arrays; :class:`DataError` when it is empty."""
    if data is None:
        return None
    return non_empty(_as_dataset(data, what), what)


def non_empty(dataset, what: str = "train"):
    """``dataset``, unless it holds no items: then a :class:`DataError` (training or scoring nothing is a mistake)."""
    if len(dataset) == 0:
        where = f" ({dataset.path})" if isinstance(getattr(dataset, "path", None), str) else ""
        raise DataError(f"The {what!r} data{where} holds no images. Check the folder or list it was packed from "
                        "(finetune check), then pack it again.")
    return dataset


def warn_if_validation_is_training(train, val) -> bool:
    """Warn (and return True) when the records ``val`` are the records ``train`` (the same file).

    ``train`` and ``val``: record paths or datasets with a ``path``. Every
    training mode calls this once per run, so each warns the same way.
    """
    paths = [getattr(d, "path", d) for d in (train, val)]
    if not all(isinstance(p, (str, os.PathLike)) for p in paths):
        return False
    if os.path.realpath(paths[0]) != os.path.realpath(paths[1]):
        return False
    log.warning("the validation records are the training records: validation accuracy will not say how the "
                "model does on new images, and the best epoch is chosen on images it trained on")
    return True


def _as_dataset(data, what: str):
    if isinstance(data, tuple) and len(data) == 2:
        x, y = data
        x = np.asarray(x, dtype=np.float32) if not hasattr(x, "asnumpy") else x.asnumpy().astype(np.float32)
        y = np.asarray(y) if not hasattr(y, "asnumpy") else y.asnumpy()
        if len(x) != len(y):
            raise ConfigError(f"The {what!r} arrays have {len(x)} images but {len(y)} labels.")
        return gluon.data.ArrayDataset(x, y.astype(np.float32))
    if hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        return data
    raise ConfigError(
        f"The {what!r} data must be a Dataset (e.g. finetune.RecordDataset or a gluon Dataset) or an "
        f"(images, labels) pair of arrays. Got {type(data).__name__} instead."
    )


_WARNED: set = set()


def check_labels(labels, num_classes: int | None = None, what: str = "train") -> None:
    """Raise :class:`DataError` unless every label is a class index: a whole number in ``[0, num_classes)``.

    ``labels`` of more than one dimension (one-hot or soft labels) are not
    class indices and are left alone. The message names the first bad item
    (its index in the data set) and how many are bad.

    Examples
    --------
    >>> check_labels([0, 1, 2], 3)
    >>> check_labels([0, float("nan"), 1], 3)
    Traceback (most recent call last):
    ...
    finetune.errors.DataError: The 'train' data has 1 label(s) that are not class indices (whole numbers in [0, 2]); the first is item 1, with label nan.
    """
    y = np.asarray(labels)
    if y.ndim != 1 or not len(y):
        return
    allowed = f"whole numbers in [0, {num_classes - 1}]" if num_classes else "whole numbers >= 0"
    if y.dtype == bool or not np.issubdtype(y.dtype, np.number):
        raise DataError(f"The {what!r} labels must be class indices ({allowed}). Got {y.dtype} values, "
                        f"e.g. {y[0]!r}.")
    yf = y.astype(np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(yf) | (yf < 0) | (yf != np.floor(yf))
        if num_classes:
            bad |= yf >= num_classes
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"The {what!r} data has {int(bad.sum())} label(s) that are not class indices ({allowed}); "
                        f"the first is item {i}, with label {y[i].item()!r}.")
    if num_classes and what == "train":
        empty = sorted(set(range(num_classes)) - set(yf.astype(np.int64).tolist()))
        key = (num_classes, len(y), tuple(empty))
        if empty and key not in _WARNED:  # once, not again for the fine-tuning after the head warm-up
            _WARNED.add(key)
            shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
            logging.getLogger("finetune").warning(
                "%d of the %d classes have no image in the training data (class %s): the model will learn never "
                "to predict them. Check the class list (a _classes.txt with more names than the records' labels, "
                "--num-classes) or add their images.", len(empty), num_classes, shown)


def check_dataset_labels(dataset, num_classes: int | None = None, what: str = "train") -> None:
    """:func:`check_labels` on a data set whose labels can be had without reading the images.

    That is an ``(images, labels)`` pair turned into an ``ArrayDataset`` by
    :func:`as_dataset`, a data set with a ``labels()`` method, or a
    :class:`~finetune.RecordDataset` (its ``labels`` read only the record headers).
    Other data sets are not checked here.
    """
    if dataset is None:
        return
    if isinstance(dataset, gluon.data.ArrayDataset) and len(dataset._data) == 2:
        labels = dataset._data[1]
    elif callable(getattr(dataset, "labels", None)):
        labels = dataset.labels()
    elif isinstance(dataset, RecordDataset):
        labels = dataset.labels
    else:
        return
    check_labels(labels.asnumpy() if hasattr(labels, "asnumpy") else labels, num_classes, what)


class EpochSampler(gluon.data.Sampler):
    """Batch sampler whose order depends only on ``(seed, epoch)``.

    Parameters
    ----------
    length : int
        Number of items.
    batch_size : int
        Items per batch **per part** (worker).
    shuffle : bool
    seed : int
    num_parts, part_index : int
        Split each global batch between ``num_parts`` workers.
    encode : bool
        Yield *encoded* indices ``epoch * length + i`` (decoded by
        :class:`SeededItems`) instead of plain indices.

    Examples
    --------
    >>> s = EpochSampler(10, batch_size=4, shuffle=False, encode=False)
    >>> list(s)
    [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    """

    def __init__(self, length: int, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 num_parts: int = 1, part_index: int = 0, encode: bool = True):
        self.length, self.batch_size, self.shuffle, self.seed = int(length), int(batch_size), shuffle, int(seed)
        self.num_parts, self.part_index, self.encode = int(num_parts), int(part_index), encode
        self.epoch, self.start = 0, 0
        if self.length < self.num_parts:
            raise ConfigError(f"{self.length} items cannot be shared by {self.num_parts} workers.")

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch to iterate, starting at batch ``start_batch``."""
        self.epoch, self.start = int(epoch), int(start_batch)

    def order(self, epoch: int) -> np.ndarray:
        """The permutation of ``range(length)`` used in ``epoch``."""
        if not self.shuffle:
            return np.arange(self.length)
        return np.random.RandomState(_mix(self.seed, epoch, 0x5EED)).permutation(self.length)

    def global_batches(self, epoch: int) -> list:
        """The global batches of ``epoch`` (each a list of ``num_parts`` index arrays)."""
        g = self.batch_size * self.num_parts
        order = self.order(epoch)
        out = []
        for start in range(0, self.length, g):
            chunk = order[start:start + g]
            if len(chunk) < self.num_parts:  # a part would be empty: drop the tiny tail
                break
            out.append(np.array_split(chunk, self.num_parts))
        return out

    def global_sizes(self, epoch: int) -> list:
        """Number of items of every global batch of ``epoch`` (all parts together)."""
        return [sum(len(p) for p in gb) for gb in self.global_batches(epoch)]

    def __len__(self) -> int:
        g = self.batch_size * self.num_parts
        n = self.length // g
        tail = self.length - n * g
        return n + (1 if tail >= self.num_parts else 0)

    def __iter__(self):
        offset = self.epoch * self.length if self.encode else 0
        for gb in self.global_batches(self.epoch)[self.start:]:
            yield [int(i) + offset for i in gb[self.part_index]]


class SeededItems(gluon.data.Dataset):
    """Wrap a dataset so item ``epoch * n + i`` is item ``i`` read under seeds from ``(seed, epoch, i)``.

    Examples
    --------
    >>> ds = SeededItems(gluon.data.ArrayDataset([1, 2, 3]), seed=0)
    >>> ds[4]  # epoch 1, item 1
    2
    """

    def __init__(self, dataset, seed: int = 0):
        self.dataset, self.seed, self.n = dataset, int(seed), len(dataset)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k):
        epoch, i = divmod(int(k), self.n)
        s = _mix(self.seed, epoch, i)
        np.random.seed(s)
        random.seed(s)
        if hasattr(self.dataset, "seed_item"):
            self.dataset.seed_item(s)
        return self.dataset[i]


class RecordBatches:
    """The batches of an :class:`EpochSampler`, read by a ``RecordDataset``'s fast loader.

    Same items, same order and the same per-item seeds ``(seed, epoch, i)`` as
    ``DataLoader(SeededItems(dataset, seed), batch_sampler=sampler)``, so
    augmentation, resumption and ``dist_sync`` slicing behave identically —
    but images are decoded and augmented by forked workers writing into
    shared memory (see :meth:`finetune.RecordDataset.loader`).
    """

    def __init__(self, dataset, sampler: EpochSampler, seed: int, workers: int):
        self.sampler, self.seed, self.n = sampler, int(seed), len(dataset)
        self.loader = dataset.loader(sampler.batch_size, shuffle=False, workers=workers)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        batches = []
        for encoded in self.sampler:
            items = [divmod(int(k), self.n) for k in encoded]
            batches.append(([i for _, i in items], [_mix(self.seed, e, i) for e, i in items]))
        return self.loader.iter_batches(batches)

    def close(self) -> None:
        """Stop the loader's worker processes."""
        self.loader.close()


def train_loader(dataset, sampler: EpochSampler, seed: int, workers: int):
    """The batches of ``sampler``'s items: a ``RecordDataset``'s fast loader with workers, else a ``DataLoader``."""
    if isinstance(dataset, RecordDataset) and workers > 0:
        return RecordBatches(dataset, sampler, seed, workers)
    return gluon.data.DataLoader(SeededItems(dataset, seed), batch_sampler=sampler, num_workers=workers)
