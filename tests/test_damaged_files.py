"""Every binary file finetune writes, damaged every way: its reader raises a FinetuneError or reads it whole.

Each row is (writer, reader): the writer makes a valid file with the library,
the test damages it (truncations at several points, seeded byte flips, an
empty file, another dtype or number of dimensions) and the reader must
either raise a :class:`~finetune.errors.FinetuneError` naming the file or
return a result of the same structure (a flipped byte inside raw numbers is
undetectable without a checksum) - never numpy's, pickle's, MXNet's, zlib's
or struct's own exception.
"""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from finetune.data import MeanImage, load_fashion_mnist
from finetune.errors import FinetuneError
from finetune.features import RetrievalIndex
from finetune.features._oxford import RevisitedGroundTruth

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 8)).astype(np.float32)


def _varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


# ------------------------------------------------------------------ writers: folder -> the file to damage
def write_mean_bin(d):
    MeanImage(RNG.uniform(0, 255, (3, 4, 5)).astype(np.float32)).save(d / "mean.bin")
    return d / "mean.bin"


def write_binaryproto(d):
    data = np.arange(12, dtype=np.float32).tobytes()
    blob = b"".join([b"\x08" + _varint(1), b"\x10" + _varint(3), b"\x18" + _varint(2), b"\x20" + _varint(2),
                     b"\x2a" + _varint(len(data)) + data])
    (d / "mean.binaryproto").write_bytes(blob)
    return d / "mean.binaryproto"


def write_descriptors(d):
    np.save(d / "db.npy", X)
    (d / "db.ids.txt").write_text("".join(f"img{i}.jpg\n" for i in range(len(X))))
    return d / "db.npy"


def write_index(d):
    index = RetrievalIndex()
    index.add(X)
    index.save(d / "index.npz")
    return d / "index.npz"


def _faiss_index(d, **params):
    pytest.importorskip("faiss")
    index = RetrievalIndex(method="ivf", nlist=2, **params)
    index.add(X)
    index.save(d / "ivf.npz")
    return index


def write_faiss(d):
    _faiss_index(d)
    return d / "ivf.npz.faiss"


def write_faiss_npz(d):
    _faiss_index(d)
    return d / "ivf.npz"


def write_gt_pkl(d):
    gt = {"imlist": [f"im{i}" for i in range(6)], "qimlist": ["q0", "q1"],
          "gnd": [{"easy": np.array([0, 1]), "hard": np.array([2]), "junk": np.array([], np.int64),
                   "bbx": np.array([1.0, 2.0, 30.0, 40.0])},
                  {"easy": [3], "hard": [], "junk": [4, 5], "bbx": [0, 0, 10, 10]}]}
    with open(d / "gnd_rtest.pkl", "wb") as f:
        pickle.dump(gt, f)
    return d / "gnd_rtest.pkl"


def write_fashion(d):
    images = RNG.integers(0, 255, (20, 28, 28), dtype=np.uint8)
    labels = RNG.integers(0, 10, 20, dtype=np.uint8)
    with gzip.open(d / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, 20, 28, 28) + images.tobytes())
    with gzip.open(d / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 0x801, 20) + labels.tobytes())
    return d / "t10k-images-idx3-ubyte.gz"


def read_descriptors(path):
    from finetune.cli._features import _load_descriptors

    return _load_descriptors(str(path))


def read_faiss_index(path):
    return RetrievalIndex.load(str(path).removesuffix(".faiss"))


def _structure(result):
    """What must not change when a reader accepts a damaged file: types and shapes, not values."""
    if isinstance(result, MeanImage):
        return ("MeanImage", result.image.shape)
    if isinstance(result, RetrievalIndex):
        return ("RetrievalIndex", len(result), result.method)
    if isinstance(result, RevisitedGroundTruth):
        return ("gt", len(result.imlist), len(result.qimlist))
    if isinstance(result, tuple):
        return tuple(_structure(r) for r in result)
    if isinstance(result, np.ndarray):
        return (result.dtype.str, result.shape)
    if isinstance(result, list):
        return ("list", len(result))
    return type(result).__name__


FILES = {
    "mean.bin": (write_mean_bin, MeanImage.load),
    "mean.binaryproto": (write_binaryproto, MeanImage.load),
    "descriptors .npy": (write_descriptors, read_descriptors),
    "index .npz": (write_index, RetrievalIndex.load),
    "faiss index .npz": (write_faiss_npz, RetrievalIndex.load),
    "faiss index .faiss": (write_faiss, read_faiss_index),
    "revisited ground truth .pkl": (write_gt_pkl, RevisitedGroundTruth.load),
    "Fashion-MNIST .gz": (write_fashion, lambda p: load_fashion_mnist("test", folder=str(p.parent))),
}


def _damages(size: int):
    """(name, function(bytes) -> bytes): a fixed, seeded set of damages for a file of ``size`` bytes."""
    rng = np.random.default_rng(size)
    cuts = sorted({0, 1, 8, size // 10, size // 2, size - size // 10, size - 1} - {size})
    out = [(f"truncated at {c}", lambda b, c=c: b[:c]) for c in cuts if c >= 0]
    for k, pos in enumerate(rng.integers(0, size, 12)):
        out.append((f"byte {pos} flipped", lambda b, p=int(pos): b[:p] + bytes([b[p] ^ 0xFF]) + b[p + 1:]))
    out.append(("garbage appended", lambda b: b + b"\x00garbage" * 8))
    out.append(("random bytes", lambda b: rng.integers(0, 256, len(b), dtype=np.uint8).tobytes()))
    return out


def _check_reader(reader, path, expected):
    try:
        result = reader(path)
    except FinetuneError as exc:
        assert os.path.basename(str(path)).split(".")[0] in str(exc) or str(path.parent) in str(exc), exc
        return "refused"
    assert _structure(result) == expected
    return "read"


@pytest.mark.parametrize("name", list(FILES))
def test_a_damaged_file_is_refused_with_a_typed_error_or_read_whole(name, tmp_path):
    writer, reader = FILES[name]
    path = writer(tmp_path)
    good = path.read_bytes()
    expected = _structure(reader(path))
    outcomes = {}
    for label, damage in _damages(len(good)):
        path.write_bytes(damage(good))
        try:
            outcomes[label] = _check_reader(reader, path, expected)
        except AssertionError as exc:
            raise AssertionError(f"{name}, {label}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the point: nothing but FinetuneError may escape
            raise AssertionError(f"{name}, {label}: raw {type(exc).__module__}.{type(exc).__name__}: {exc}") from exc
    path.write_bytes(good)
    assert _structure(reader(path)) == expected
    assert outcomes["truncated at 0"] == "refused" and outcomes["truncated at 1"] == "refused"


# ------------------------------------------------------------------ right format, wrong content
@pytest.mark.parametrize("array", [
    np.zeros(64, np.float32),  # 1-D
    np.zeros((2, 4, 8), np.float32),  # 3-D
    np.array([["a", "b"]]),  # text
    np.array([[None, 1]], dtype=object),  # objects: pickle
    np.zeros((64, 8), np.complex64),
], ids=["1-D", "3-D", "text", "object", "complex"])
def test_descriptors_of_another_dtype_or_shape_are_refused(array, tmp_path):
    path = tmp_path / "db.npy"
    np.save(path, array, allow_pickle=True)
    with pytest.raises(FinetuneError, match="db.npy"):
        read_descriptors(path)


@pytest.mark.parametrize("member, value", [
    ("vectors", np.zeros(5, np.float32)),
    ("vectors", np.array([[None]], dtype=object)),
    ("ids", np.zeros((3, 2), np.int64)),
    ("ids", np.arange(5)),  # 5 ids for 64 descriptors
    ("meta", np.array("not json")),
    ("meta", np.array('["a list"]')),
    ("meta", np.array('{"metric": "cosine"}')),  # keys missing
    ("meta", np.array(3.0)),
])
def test_an_index_whose_members_do_not_fit_is_refused(member, value, tmp_path):
    path = write_index(tmp_path)
    with np.load(path) as f:
        members = dict(f)
    members[member] = value
    np.savez(path, **members)
    with pytest.raises(FinetuneError, match="index.npz"):
        RetrievalIndex.load(path)


@pytest.mark.parametrize("change", [
    lambda g: g.update(imlist=5),
    lambda g: g.update(qimlist=[1, 2]),
    lambda g: g.update(gnd="nope"),
    lambda g: g.update(gnd=g["gnd"][:1]),
    lambda g: g["gnd"][0].update(easy=["a", "b"]),
    lambda g: g["gnd"][0].update(easy=np.array([0.5])),
    lambda g: g["gnd"][0].update(hard=[99]),  # outside the 6 database images
    lambda g: g["gnd"][0].update(junk=[-1]),
    lambda g: g["gnd"][0].update(bbx=[1, 2, 3]),
    lambda g: g["gnd"][0].update(bbx="abcd"),
    lambda g: g["gnd"].__setitem__(1, [3]),
    lambda g: g["gnd"][1].pop("easy"),
])
def test_ground_truth_of_the_wrong_types_is_refused(change, tmp_path):
    path = write_gt_pkl(tmp_path)
    with open(path, "rb") as f:
        gt = pickle.load(f)
    change(gt)
    with open(path, "wb") as f:
        pickle.dump(gt, f)
    with pytest.raises(FinetuneError, match="gnd_rtest.pkl"):
        RevisitedGroundTruth.load(path)


@pytest.mark.parametrize("array", [np.zeros((4, 5), np.float32), np.zeros((2, 3, 4, 5), np.float32),
                                   np.zeros((7, 4, 5), np.float32), np.full((3, 2, 2), np.nan, np.float32)],
                         ids=["2-D", "4-D", "7 channels", "NaN"])
def test_a_mean_file_of_another_shape_is_refused(array, tmp_path):
    import mxnet as mx

    mx.nd.save(str(tmp_path / "mean.bin"), {"mean_img": mx.nd.array(array)})
    with pytest.raises(FinetuneError, match="mean.bin"):
        MeanImage.load(tmp_path / "mean.bin")


def test_a_model_directory_holding_another_networks_weights_fails_at_load(tmp_path):
    import shutil

    import finetune as ft
    from finetune.errors import ModelError

    ft.Backbone.from_zoo("mobilenet0.25", weights=None).save(tmp_path / "a")
    ft.Backbone.from_zoo("mobilenet0.5", weights=None).save(tmp_path / "b")  # same parameter names, wider
    shutil.copyfile(tmp_path / "b" / "weights.params", tmp_path / "a" / "weights.params")
    with pytest.raises(ModelError, match="but the network needs"):
        ft.load_model(tmp_path / "a")
