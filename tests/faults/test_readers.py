"""Every reader of a file finetune writes, on damaged copies: a result or a FinetuneError, in bounded time.

Each reader gets a fresh copy of a real output (:mod:`tests.faults.conftest`)
with one file mutated by hypothesis: truncated at a random point, random
bytes flipped, or emptied; ``config.json`` of a model directory also gets
each leaf value replaced by ``None``, ``"x"``, ``-1``, ``1e400``, ``[]`` or
``{}``. :func:`assert_typed` is the one check.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finetune.errors import FinetuneError

SECONDS = 10  # a reader that takes longer on a small damaged file hangs
SETTINGS = dict(deadline=None, derandomize=True, database=None,  # the same examples on every run
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# Readers that fail the check because of a known library bug; strict, so a fix shows up.
KNOWN_BUGS = {}


def _cases(names) -> list:
    return [pytest.param(n, marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[n])] if n in KNOWN_BUGS else [])
            for n in names]


class _Hung(Exception):
    pass


def _alarm(signum, frame):
    raise _Hung()


def assert_typed(fn):
    """``fn()`` returns, or raises a :class:`FinetuneError`; any other exception, or a hang, fails."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SECONDS)
    start = time.monotonic()
    try:
        return fn()
    except FinetuneError:
        return None
    except _Hung:
        pytest.fail(f"the reader ran for more than {SECONDS} s")
    except Exception as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{type(exc).__module__}.{type(exc).__name__} is not a FinetuneError: {exc}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        assert time.monotonic() - start < SECONDS


# ------------------------------------------------------------------ mutations
@st.composite
def mutations(draw):
    """A function ``bytes -> bytes``: truncate, flip bytes or empty."""
    kind = draw(st.sampled_from(["truncate", "flip", "empty"]))
    if kind == "empty":
        return lambda data: b""
    if kind == "truncate":
        frac = draw(st.floats(0, 1, exclude_max=True))
        return lambda data: data[:int(len(data) * frac)]
    flips = draw(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=8))

    def flip(data):
        data = bytearray(data)
        for where, xor in flips:
            if data:
                data[int(where * len(data))] ^= xor
        return bytes(data)
    return flip


def _mutate(path, mutation) -> None:
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(mutation(data))


def _copy(sources, folder) -> list:
    out = []
    for src in sources:
        dst = os.path.join(folder, os.path.basename(src))
        (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, dst)
        out.append(dst)
    return out


# ------------------------------------------------------------------ the readers
def _records(prefix):
    from finetune import RecordDataset

    ds = RecordDataset(prefix)
    return [ds[i] for i in range(len(ds))]


def _lst(path):
    from finetune.data._listfiles import read_lst

    return read_lst(path)


def _classes(path):
    from finetune.data._listfiles import read_class_names

    return read_class_names(path)


def _model(path):
    from finetune import load_model

    return load_model(path)


def _mean(path):
    from finetune import MeanImage

    return MeanImage.load(path)


def _descriptors(npy):
    from finetune.cli._features import _load_descriptors

    return _load_descriptors(npy)


def _index(path):
    from finetune import RetrievalIndex

    index = RetrievalIndex.load(path)
    return index.search(np.ones((1, index.dim), np.float32), k=2)


def _preprocess(path):
    from finetune import Preprocess

    return Preprocess.load(path)


def _pca(path):
    from finetune import PCAWhitening

    pca = PCAWhitening.load(path)
    return pca.transform(np.ones((2, 8), np.float32))


def _checkpoint(path):
    from finetune.train._checkpoint import read_checkpoint

    return read_checkpoint(path)


def _history(path):
    from finetune.use._history_plot import load_history

    return load_history(path)


# name: (reader, what it is given, the files to copy, the file(s) a case mutates, examples)
def _readers(i, run=None):
    table = {
        "records.rec": (_records, "rec", [i.rec + ".rec", i.rec + ".idx", i.rec + "_classes.txt"], "rec.rec"),
        "records.idx": (_records, "rec", [i.rec + ".rec", i.rec + ".idx", i.rec + "_classes.txt"], "rec.idx"),
        "records_classes": (_records, "rec", [i.rec + ".rec", i.rec + ".idx", i.rec + "_classes.txt"],
                            "rec_classes.txt"),
        "lst": (_lst, "data_train.lst", [i.lst], "data_train.lst"),
        "classes": (_classes, "data_classes.txt", [i.classes], "data_classes.txt"),
        "model_config": (_model, "model", [i.model], "model/config.json"),
        "model_weights": (_model, "model", [i.model], "model/weights.params"),
        "model_symbol": (_model, "model", [i.model], "model/symbol.json"),
        "mean": (_mean, "mean.bin", [i.mean], "mean.bin"),
        "descriptors": (_descriptors, "feats.npy", [i.feats, i.ids], "feats.npy"),
        "descriptor_ids": (_descriptors, "feats.npy", [i.feats, i.ids], "feats.ids.txt"),
        "index": (_index, "index.npz", [i.index], "index.npz"),
        "preprocess": (_preprocess, "preprocess.json", [i.preprocess], "preprocess.json"),
        "pca": (_pca, "pca.npz", [i.pca], "pca.npz"),
    }
    if run is not None:
        table["checkpoint"] = (_checkpoint, "last.ckpt", [os.path.join(run, "checkpoints", "last.ckpt")], "last.ckpt")
        table["history"] = (_history, "history.json", [os.path.join(run, "history.json")], "history.json")
    return table


FAST = ["records.rec", "records.idx", "records_classes", "lst", "classes", "mean", "descriptors", "descriptor_ids",
        "index", "preprocess", "pca"]
MODEL = ["model_config", "model_weights", "model_symbol"]
RUN = ["checkpoint", "history"]


def _check(table, name, mutation):
    reader, given_name, sources, target = table[name]
    with tempfile.TemporaryDirectory() as folder:
        _copy(sources, folder)
        _mutate(os.path.join(folder, target), mutation)
        assert_typed(lambda: reader(os.path.join(folder, given_name)))


@pytest.mark.parametrize("name", _cases(FAST))
@settings(max_examples=25, **SETTINGS)
@given(mutation=mutations())
def test_damaged_file(name, mutation, inputs):
    _check(_readers(inputs), name, mutation)


@pytest.mark.parametrize("name", _cases(MODEL))
@settings(max_examples=15, **SETTINGS)
@given(mutation=mutations())
def test_damaged_model_directory(name, mutation, inputs):
    _check(_readers(inputs), name, mutation)


@pytest.mark.slow
@pytest.mark.parametrize("name", _cases(RUN))
@settings(max_examples=15, **SETTINGS)
@given(mutation=mutations())
def test_damaged_training_output(name, mutation, inputs, run_folder):
    _check(_readers(inputs, run_folder), name, mutation)


# ------------------------------------------------------------------ wrong JSON types
def _leaves(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list) and value and not all(isinstance(v, str) for v in value):
        for k, v in enumerate(value):
            yield from _leaves(v, (*path, k))
    else:
        yield path


def _replace(doc, path, new):
    doc = json.loads(json.dumps(doc))
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = new
    return doc


def _json_leaves(path) -> list:
    with open(path, encoding="utf-8") as f:
        return list(_leaves(json.load(f)))


WRONG = [None, "x", -1, 1e400, [], {}]


@pytest.mark.parametrize("file", _cases(["model/config.json", "preprocess.json"]))
@settings(max_examples=30, **SETTINGS)
@given(data=st.data())
def test_wrong_json_types(file, data, inputs):
    reader = _model if file.startswith("model") else _preprocess
    source = inputs.model if file.startswith("model") else inputs.preprocess
    with tempfile.TemporaryDirectory() as folder:
        _copy([source], folder)
        target = os.path.join(folder, file)
        with open(target, encoding="utf-8") as f:
            doc = json.load(f)
        leaf = data.draw(st.sampled_from(list(_leaves(doc))), label="leaf")
        new = data.draw(st.sampled_from(WRONG), label="value")
        with open(target, "w", encoding="utf-8") as f:
            f.write(json.dumps(_replace(doc, leaf, new)).replace("Infinity", "1e400"))
        assert_typed(lambda: reader(os.path.join(folder, file.split("/")[0])))
