"""Caffe's protobuf *wire format* (``.caffemodel``, ``.binaryproto``): one decoder for the whole library.

A root module because two packages read these files: Caffe import
(``finetune.models.caffe``, see its ``_proto`` for why the reader is
hand-written) and :class:`finetune.data.MeanImage` (a Caffe
``mean.binaryproto``), and data code does not import the models package.
Driven by a schema subset of ``caffe.proto`` (field numbers are public
facts); unknown fields are skipped by wire type; packed float data goes
straight to :func:`numpy.frombuffer`. Truncated or malformed input raises
the caller's error class (:class:`~finetune.errors.CaffeFormatError` by
default, :class:`~finetune.errors.DataError` for a mean image) with the byte
offset.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from .errors import CaffeFormatError, MissingFileError

__all__ = ["Message", "blob_array", "decode", "read_binaryproto", "shape_dims"]


class Message:
    """A decoded protobuf message: field name -> list of values (repeated or not).

    Values are ``int``, ``float``, ``bool``, ``str`` (strings and enum
    identifiers), :class:`numpy.ndarray` (packed floats) or nested
    :class:`Message`. ``line`` is the prototxt line where it starts (0 for
    binary input), used in error messages.
    """

    __slots__ = ("fields", "line")

    def __init__(self, line: int = 0):
        self.fields: dict[str, list] = {}
        self.line = line

    def add(self, name: str, value) -> None:
        self.fields.setdefault(name, []).append(value)

    def all(self, name: str) -> list:
        """Every value of field ``name`` (empty list when absent)."""
        return self.fields.get(name, [])

    def get(self, name: str, default=None):
        """The last value of field ``name`` (protobuf semantics for a non-repeated field)."""
        values = self.fields.get(name)
        return values[-1] if values else default

    def __contains__(self, name: str) -> bool:
        return name in self.fields

    def __repr__(self) -> str:
        return f"Message({', '.join(self.fields)})"


_S = {
    "NetParameter": {1: ("name", "string", None), 3: ("input", "string", None),
                     8: ("input_shape", "message", "BlobShape"), 4: ("input_dim", "int", None),
                     100: ("layer", "message", "LayerParameter"),
                     2: ("layers", "message", "V1LayerParameter")},
    "LayerParameter": {1: ("name", "string", None), 2: ("type", "string", None),
                       3: ("bottom", "string", None), 4: ("top", "string", None),
                       7: ("blobs", "message", "BlobProto"),
                       8: ("include", "message", "NetStateRule")},
    "V1LayerParameter": {4: ("name", "string", None), 5: ("type", "int", None),
                         2: ("bottom", "string", None), 3: ("top", "string", None),
                         6: ("blobs", "message", "BlobProto"),
                         32: ("include", "message", "NetStateRule")},
    "NetStateRule": {1: ("phase", "int", None)},
    "BlobShape": {1: ("dim", "int", None)},
    "BlobProto": {7: ("shape", "message", "BlobShape"), 5: ("data", "float", None),
                  8: ("double_data", "double", None), 1: ("num", "int", None),
                  2: ("channels", "int", None), 3: ("height", "int", None), 4: ("width", "int", None)},
}


_WIRE_TYPES = {"message": (2,), "string": (2,), "float": (5, 2), "double": (1, 2)}  # others: varints


class _Wire:
    """Decodes one buffer against the schema; errors say where the bytes ran out."""

    def __init__(self, buf: bytes, where: str, error: type):
        self.buf, self.where, self.error = memoryview(buf), where, error

    def _fail(self, pos: int, what: str):
        raise self.error(f"{self.where}: {what} at byte {pos} of {len(self.buf)}; "
                               "the file is truncated or not a Caffe protobuf.")

    def varint(self, pos: int, end: int) -> tuple:
        result = shift = 0
        start = pos
        while True:
            if pos >= end:
                self._fail(start, "a number runs past the end of its message")
            b = self.buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 63:
                self._fail(start, "a malformed varint")
        if result >= 1 << 63:  # negative int32/int64 are sign-extended to 64 bits
            result -= 1 << 64
        return result, pos

    def message(self, kind: str, pos: int, end: int, path: str) -> Message:
        schema = _S[kind]
        msg = Message()
        while pos < end:
            tag_pos = pos
            key, pos = self.varint(pos, end)
            number, wire = key >> 3, key & 7
            if number == 0:
                self._fail(tag_pos, f"field number 0 in {path}")
            spec = schema.get(number)
            if spec is not None and wire not in _WIRE_TYPES.get(spec[1], (0, 2)):
                self._fail(tag_pos, f"field {spec[0]!r} of {path} has wire type {wire}, but a {spec[1]} "
                                    f"field is encoded with wire type {' or '.join(map(str, _WIRE_TYPES.get(spec[1], (0, 2))))}")
            if wire == 0:
                value, pos = self.varint(pos, end)
            elif wire == 1:
                if pos + 8 > end:
                    self._fail(pos, f"field {number} of {path} (8 bytes) runs past the end")
                value, pos = (struct.unpack_from("<d", self.buf, pos)[0] if spec else None), pos + 8
            elif wire == 5:
                if pos + 4 > end:
                    self._fail(pos, f"field {number} of {path} (4 bytes) runs past the end")
                value, pos = (struct.unpack_from("<f", self.buf, pos)[0] if spec else None), pos + 4
            elif wire == 2:
                size, pos = self.varint(pos, end)
                if size < 0 or pos + size > end:
                    self._fail(pos, f"field {number} of {path} declares {size} bytes but the data runs past the end")
                value = self._delimited(spec, pos, pos + size, f"{path}.{spec[0] if spec else number}")
                pos += size
            else:
                self._fail(tag_pos, f"unsupported wire type {wire} for field {number} of {path}")
            if spec is not None:
                if isinstance(value, list):
                    for v in value:
                        msg.add(spec[0], v)
                else:
                    msg.add(spec[0], value)
        return msg

    def _delimited(self, spec, start: int, end: int, path: str):
        if spec is None:
            return None
        name, kind, sub = spec
        if kind == "message":
            return self.message(sub, start, end, path)
        if kind == "string":
            return bytes(self.buf[start:end]).decode("utf-8", errors="replace")
        if kind == "float":  # packed floats: the weights
            if (end - start) % 4:
                self._fail(start, f"packed floats of {path} are not a multiple of 4 bytes")
            return np.frombuffer(self.buf[start:end], dtype="<f4").astype(np.float32)
        if kind == "double":
            if (end - start) % 8:
                self._fail(start, f"packed doubles of {path} are not a multiple of 8 bytes")
            return np.frombuffer(self.buf[start:end], dtype="<f8").astype(np.float64)
        values, pos = [], start  # packed varints
        while pos < end:
            value, pos = self.varint(pos, end)
            values.append(value)
        return values


def decode(buf: bytes, kind: str, where: str, error: type = CaffeFormatError) -> Message:
    """Decode ``buf`` as the message type ``kind`` (``"NetParameter"``, ``"BlobProto"``); ``error`` on bad bytes."""
    return _Wire(buf, where, error).message(kind, 0, len(buf), kind)


def shape_dims(shape) -> list:
    """The dimensions of a ``BlobShape`` message (or of an array of them) as ints."""
    if isinstance(shape, Message):
        return [int(d) for d in shape.all("dim")]
    return [int(d) for d in np.asarray(shape).ravel()]


def blob_array(blob: Message, where: str, what: str, error: type = CaffeFormatError) -> np.ndarray:
    """The float32 array of a ``BlobProto``, in its stored shape (``shape``, else legacy num/channels/height/width)."""
    data = blob.get("data")
    parts = blob.all("data")
    if parts and not (len(parts) == 1 and isinstance(data, np.ndarray)):
        data = np.concatenate([np.atleast_1d(np.asarray(p, np.float32)) for p in parts])
    elif not parts:
        dparts = blob.all("double_data")
        data = (np.concatenate([np.atleast_1d(np.asarray(p, np.float64)) for p in dparts])
                if dparts else np.zeros(0, np.float64))
    data = np.asarray(data).astype(np.float32, copy=False)
    if "shape" in blob:
        shape = shape_dims(blob.get("shape"))
    else:
        shape = [int(blob.get(k, 0)) for k in ("num", "channels", "height", "width")]
        if not any(shape):
            shape = [data.size]
    if int(np.prod(shape)) != data.size:
        raise error(f"{where}: {what} declares shape {tuple(shape)} ({int(np.prod(shape))} values) but holds "
                    f"{data.size} values; the file is truncated or corrupt.")
    return data.reshape(shape)


def read_binaryproto(path, error: type = CaffeFormatError) -> np.ndarray:
    """Read a Caffe mean file (``mean.binaryproto``, a ``BlobProto``).

    Returns
    -------
    numpy.ndarray
        ``(C, H, W)`` float32 mean image in raw pixel units, in the colour order
        it was computed in (BGR for Caffe tools).

    Raises
    ------
    MissingFileError
        ``path`` does not exist.
    error
        The file is truncated or not a ``BlobProto`` of shape ``(1, C, H, W)``.
    """
    where = os.fspath(path)
    if not os.path.isfile(where):
        raise MissingFileError(f"The Caffe mean file {where!r} does not exist.")
    with open(where, "rb") as f:
        buf = f.read()
    array = blob_array(decode(buf, "BlobProto", where, error), where, "the mean blob", error)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise error(f"{where}: a mean file must hold a (1, C, H, W) blob; got shape {array.shape}.")
    return array
