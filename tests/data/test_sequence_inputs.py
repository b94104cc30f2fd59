"""A str (or bytes) given where a sequence is expected is read as a path or refused: never iterated letter by letter.

The parameters are found in the NumPy docstrings of every public callable of
``finetune.data`` (a type that says "sequence", "list of", "tuple of" or
"iterable"), so a new function with such a parameter is covered as soon as it
is documented; :data:`CALLS` says how to call each with the other arguments valid.
"""

import inspect
import os
import re

import numpy as np
import pytest

import finetune.data as fdata
from finetune.errors import ConfigError, FinetuneError

SEQUENCE = re.compile(r"sequence|list of|tuple of|iterable")


def _documented(obj) -> dict:
    doc = inspect.getdoc(obj) or ""
    found = re.search(r"Parameters\n-+\n(.*?)(?:\n\n[A-Z][a-z]+\n-+\n|\Z)", doc, re.S)
    params = {}
    for line in (found.group(1).splitlines() if found else []):
        head = re.match(r"^(\w+(?:, \w+)*) : (.*)$", line)
        if head:
            params.update(dict.fromkeys(head.group(1).split(", "), head.group(2)))
    return params


def _targets():
    for name in fdata.__all__:
        obj = getattr(fdata, name)
        members = [(name, obj)]
        if inspect.isclass(obj):
            members += [(f"{name}.{m}", getattr(obj, m)) for m in vars(obj)
                        if not m.startswith("_") and callable(getattr(obj, m))]
        for label, member in members:
            if callable(member):
                for param, kind in _documented(member).items():
                    if SEQUENCE.search(kind):
                        yield label, param


def _images(tmp):
    return fdata.ImageList([(0, os.path.join(tmp, "a.png"), 0)], class_names=["a"])


# label -> (callable given tmp folder and the keyword arguments, the other valid arguments given tmp)
CALLS = {
    "Augment": (lambda tmp, **kw: fdata.Augment(**kw), lambda tmp: {}),
    "ImageList": (lambda tmp, **kw: fdata.ImageList(**kw), lambda tmp: {"entries": []}),
    "ImageList.from_folder": (lambda tmp, **kw: fdata.ImageList.from_folder(tmp, **kw), lambda tmp: {}),
    "ImageList.from_lst": (lambda tmp, **kw: fdata.ImageList.from_lst(os.path.join(tmp, "x.lst"), **kw),
                           lambda tmp: {}),
    "ImageList.from_csv": (lambda tmp, **kw: fdata.ImageList.from_csv(os.path.join(tmp, "x.csv"), **kw),
                           lambda tmp: {}),
    "ImageList.split": (lambda tmp, **kw: fdata.ImageList([(i, f"{i}.png", 0) for i in range(4)]).split(**kw),
                        lambda tmp: {"ratios": (0.5, 0.5)}),
    "ImageSource": (lambda tmp, **kw: len(fdata.ImageSource(**kw)), lambda tmp: {}),
    "ImageSource.labelled": (lambda tmp, **kw: len(fdata.ImageSource.labelled(**kw)),
                             lambda tmp: {"images": [os.path.join(tmp, "a.png"), os.path.join(tmp, "b.png")]}),
    "MeanImage": (lambda tmp, **kw: fdata.MeanImage(np.zeros((3, 2, 2)), **kw), lambda tmp: {}),
    "MeanImage.to_preprocess": (lambda tmp, **kw: fdata.MeanImage(np.zeros((3, 2, 2))).to_preprocess(**kw),
                                lambda tmp: {}),
    "MeanImage.compute": (lambda tmp, **kw: fdata.MeanImage.compute(_images(tmp), workers=0, **kw),
                          lambda tmp: {}),
    "Preprocess": (lambda tmp, **kw: fdata.Preprocess(**kw), lambda tmp: {"size": (4, 4)}),
    "RecordDataset": (lambda tmp, **kw: fdata.RecordDataset(os.path.join(tmp, "x"), **kw), lambda tmp: {}),
    "RecordLoader.iter_batches": None,  # internal batches of a loader, not a user's input
    "check": (lambda tmp, **kw: fdata.check(workers=0, **kw), lambda tmp: {}),
    "list_images": (lambda tmp, **kw: fdata.list_images(tmp, **kw), lambda tmp: {}),
    "write_fashion_mnist_folder": (lambda tmp, **kw: fdata.write_fashion_mnist_folder(
        os.path.join(tmp, "fm"), 1, **kw), lambda tmp: {}),
    "write_records": (lambda tmp, **kw: fdata.write_records(os.path.join(tmp, "r"), **kw),
                      lambda tmp: {"parts": []}),
}


@pytest.mark.parametrize("label,param", sorted(set(_targets())))
def test_a_string_for_a_sequence_is_a_path_or_refused(label, param, tmp_path):
    """``"zz"`` names no file: a reader of paths says it does not exist, the rest refuse a string."""
    assert label in CALLS, f"add {label} to CALLS: how to call it with {param!r} given as a string"
    if CALLS[label] is None:
        return
    call, valid = CALLS[label]
    for text in ("zz", b"zz"):
        kwargs = {**valid(str(tmp_path)), param: text}
        try:
            result = call(str(tmp_path), **kwargs)
        except FinetuneError:
            continue
        # accepted: only as one value (an extension, a path), never as the letters 'z', 'z'
        assert result is None or "'z', 'z'" not in repr(result), (label, param, result)
        assert not (isinstance(result, int) and result == 2), (label, param, "two items made of two letters")


def test_check_reads_a_folder_path_as_the_command_does(tmp_path):
    import cv2

    (tmp_path / "cat").mkdir()
    cv2.imwrite(str(tmp_path / "cat" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    for source in (str(tmp_path), tmp_path):
        report = fdata.check(source, workers=0)
        assert len(report.good) == 1 and not report.bad and report.good.class_names == ["cat"]
    with pytest.raises(ConfigError, match="ImageList or the path"):
        fdata.check(b"zz", workers=0)


def test_split_ratios_given_as_a_string_are_refused():
    images = fdata.ImageList([(i, f"{i}.png", i % 2) for i in range(4)])
    for ratios in ("0.8", 0.8, ["0.5", "0.5"]):
        with pytest.raises(ConfigError, match="'ratios' of ImageList.split"):
            images.split(ratios)
