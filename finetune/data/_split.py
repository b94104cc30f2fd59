"""Stratified, seeded splits of labelled items (the allocation behind :meth:`ImageList.split`).

Written here rather than with ``sklearn.model_selection.train_test_split(stratify=...)``:
that function refuses classes with a single image and has no "N images per
class" mode (the Caltech-256 protocol), while the per-class allocation below
handles both and gives every class the requested proportion (largest-remainder rounding).
"""

from __future__ import annotations

import collections
import logging
import numbers

import numpy as np

from .._validation import SEED, validate
from ..errors import ConfigError, DataError, check_range

__all__ = ["stratified_split"]

log = logging.getLogger("finetune.data")


def stratified_split(labels, ratios=None, *, per_class=None, seed=0, name=str) -> list:
    """The positions of ``labels`` in each part: one list per ratio, or ``[first, rest]`` with ``per_class``.

    The parameters are those of :meth:`ImageList.split`; ``name(label)`` names a
    class in the warning about classes smaller than ``per_class``.
    """
    if (ratios is None) == (per_class is None):
        raise ConfigError("ImageList.split needs exactly one of 'ratios' or 'per_class'. "
                          f"Got ratios={ratios!r}, per_class={per_class!r}.")
    if per_class is not None:
        if int(per_class) != per_class or per_class < 1:
            raise ConfigError(f"The 'per_class' parameter of ImageList.split must be a positive "
                              f"integer. Got {per_class!r} instead.")
    else:
        ratios = _numbers(ratios)
        for r in ratios:
            check_range("ImageList.split", "ratios", r, 0, 1)
        if len(ratios) < 1 or abs(sum(ratios) - 1) > 1e-6:
            raise ConfigError(f"The 'ratios' of ImageList.split must sum to 1. Got {ratios} "
                              f"(sum {sum(ratios):g}) instead.")
    validate("ImageList.split", {"seed": seed}, {"seed": SEED})
    if not len(labels):
        raise DataError("ImageList.split: the list holds no images, so there is nothing to split (no part would "
                        "hold an image). Check the folder or list it was read from.")
    rng = np.random.RandomState(seed)
    by_class = collections.defaultdict(list)
    for pos, lab in enumerate(labels):
        by_class[lab].append(pos)
    nparts = 2 if per_class is not None else len(ratios)
    parts = [[] for _ in range(nparts)]
    for lab in sorted(by_class):
        members = np.array(by_class[lab])
        members = members[rng.permutation(len(members))]
        if per_class is not None:
            k = min(int(per_class), len(members))
            if k < per_class:
                log.warning("Class %s has only %d images (< per_class=%d); none left for the "
                            "second part.", name(lab), len(members), per_class)
            counts = [k, len(members) - k]
        else:
            counts = _allocate(len(members), ratios)
        start = 0
        for part, c in zip(parts, counts):
            part.extend(members[start:start + c].tolist())
            start += c
    return parts


def _numbers(ratios) -> list:
    """``ratios`` as a list of floats; a string, a single number or an item that is not a number is refused."""
    values = None if isinstance(ratios, (str, bytes)) or not hasattr(ratios, "__iter__") else list(ratios)
    if values is None or not all(isinstance(r, numbers.Real) and not isinstance(r, bool) for r in values):
        raise ConfigError(f"The 'ratios' of ImageList.split must be a sequence of numbers such as (0.8, 0.2). "
                          f"Got {ratios!r:.80} ({type(ratios).__name__}) instead.")
    return [float(r) for r in values]


def _allocate(n: int, ratios) -> list:
    """Split ``n`` items by ``ratios`` with largest-remainder rounding."""
    exact = [n * r for r in ratios]
    counts = [int(np.floor(x)) for x in exact]
    order = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts
