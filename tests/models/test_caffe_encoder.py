"""A tiny protobuf wire-format *encoder* for tests, and tests of our caffemodel decoder with it.

The other Caffe tests import :func:`caffemodel_bytes` / :func:`binaryproto_bytes`
to write small ``.caffemodel`` / ``mean.binaryproto`` files without Caffe.
Field numbers are those of ``caffe.proto``.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from finetune.errors import CaffeFormatError, MissingFileError
from finetune.models.caffe._proto import read_binaryproto, read_caffemodel

V1_ENUM = {"Convolution": 4, "Pooling": 17, "LRN": 15, "InnerProduct": 14, "ReLU": 18,
           "Concat": 3, "Eltwise": 25, "Dropout": 6, "Softmax": 20, "Data": 5, "Sigmoid": 19,
           "TanH": 23, "Split": 22, "Flatten": 8}


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative numbers: 64-bit two's complement, as protobuf does
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def f_varint(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def f_bytes(number: int, payload: bytes) -> bytes:
    return key(number, 2) + varint(len(payload)) + payload


def f_str(number: int, text: str) -> bytes:
    return f_bytes(number, text.encode())


def blob_bytes(array, *, legacy: bool = False, packed: bool = True) -> bytes:
    """A BlobProto: shape (field 7) or legacy num/channels/height/width (1-4), data (5)."""
    array = np.asarray(array, np.float32)
    if legacy:
        dims = (1,) * (4 - array.ndim) + array.shape
        out = b"".join(f_varint(i + 1, d) for i, d in enumerate(dims))
    else:
        out = f_bytes(7, f_bytes(1, b"".join(varint(d) for d in array.shape)))
    if packed:
        return out + f_bytes(5, array.astype("<f4").tobytes())
    return out + b"".join(key(5, 5) + struct.pack("<f", v) for v in array.ravel())


def caffemodel_bytes(layers, *, v1: bool = False, legacy_blobs: bool = False) -> bytes:
    """A NetParameter with ``layers`` = [(name, type, [arrays]), ...] (new or V1 numbering)."""
    out = f_str(1, "test")
    for name, kind, blobs in layers:
        if v1:
            body = f_str(4, name) + f_varint(5, V1_ENUM[kind])
            body += b"".join(f_bytes(6, blob_bytes(b, legacy=legacy_blobs)) for b in blobs)
            out += f_bytes(2, body)
        else:
            body = f_str(1, name) + f_str(2, kind)
            body += b"".join(f_bytes(7, blob_bytes(b, legacy=legacy_blobs)) for b in blobs)
            out += f_bytes(100, body)
    return out


def binaryproto_bytes(array) -> bytes:
    """A mean file: one BlobProto of shape (1, C, H, W)."""
    return blob_bytes(np.asarray(array, np.float32)[None])


# ---------------------------------------------------------------------- tests
def test_new_format_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)
    path = tmp_path / "m.caffemodel"
    path.write_bytes(caffemodel_bytes([("data", "Input", []), ("conv1", "Convolution", [w, b])]))
    net = read_caffemodel(path)
    assert net.format == "V2"
    assert [(l.name, l.type) for l in net.layers] == [("data", "Input"), ("conv1", "Convolution")]
    np.testing.assert_array_equal(net.layer("conv1").blobs[0], w.astype(np.float32))
    np.testing.assert_array_equal(net.layer("conv1").blobs[1], b.astype(np.float32))


def test_v1_format_legacy_blob_shapes(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = tmp_path / "m.caffemodel"
    path.write_bytes(caffemodel_bytes([("fc", "InnerProduct", [w])], v1=True, legacy_blobs=True))
    net = read_caffemodel(path)
    assert net.format == "V1" and net.layers[0].type == "InnerProduct"
    assert net.layers[0].blobs[0].shape == (1, 1, 3, 4)
    np.testing.assert_array_equal(net.layers[0].blobs[0][0, 0], w)


def test_unpacked_floats_and_unknown_fields_are_read(tmp_path):
    data = np.array([1.5, -2.0, 3.25], np.float32)
    blob = blob_bytes(data, packed=False)
    unknown = f_varint(50, -7) + key(51, 1) + b"\0" * 8 + key(52, 5) + b"\0" * 4 + f_str(53, "x")
    layer = f_str(1, "s") + unknown + f_str(2, "Scale") + f_bytes(7, blob)
    path = tmp_path / "m.caffemodel"
    dims = b"".join(f_varint(4, d) for d in (1, 3, 224, 224))
    path.write_bytes(f_bytes(100, layer) + dims)
    net = read_caffemodel(path)
    np.testing.assert_array_equal(net.layers[0].blobs[0], data)
    assert net.input_shapes == [[1, 3, 224, 224]]


@pytest.mark.parametrize("cut", [1, 7, 30, -3, -1])
def test_truncated_caffemodel_raises(tmp_path, cut):
    raw = caffemodel_bytes([("conv1", "Convolution", [np.ones((2, 3, 3, 3)), np.ones(2)])])
    path = tmp_path / "m.caffemodel"
    path.write_bytes(raw[:cut])
    with pytest.raises(CaffeFormatError, match="truncated|runs past|holds no layers|declares"):
        read_caffemodel(path)


def test_not_a_caffemodel_raises(tmp_path):
    path = tmp_path / "m.caffemodel"
    path.write_bytes(b"layer {\n name: 'x'\n}\n")
    with pytest.raises(CaffeFormatError):
        read_caffemodel(path)
    path.write_bytes(b"")
    with pytest.raises(CaffeFormatError, match="empty"):
        read_caffemodel(path)


def test_missing_caffemodel_raises(tmp_path):
    with pytest.raises(MissingFileError, match="nope.caffemodel"):
        read_caffemodel(tmp_path / "nope.caffemodel")
    with pytest.raises(FileNotFoundError):  # MissingFileError is a FileNotFoundError
        read_binaryproto(tmp_path / "nope.binaryproto")


def test_binaryproto_mean(tmp_path):
    mean = np.random.default_rng(1).uniform(0, 255, size=(3, 6, 5)).astype(np.float32)
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(binaryproto_bytes(mean))
    np.testing.assert_array_equal(read_binaryproto(path), mean)
