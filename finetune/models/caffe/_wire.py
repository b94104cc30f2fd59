"""Protobuf *wire format* decoder for the Caffe messages we need (``.caffemodel``, ``.binaryproto``).

Part of the hand-written Caffe reader (see ``_proto`` for why).
Driven by a schema subset of ``caffe.proto`` (field numbers are public
facts); unknown fields are skipped by wire type; packed float data goes
straight to :func:`numpy.frombuffer`. Truncated input raises
:class:`~finetune.errors.CaffeFormatError` with the byte offset.
"""

from __future__ import annotations

import struct

import numpy as np

from ...errors import CaffeFormatError
from ._text import Message

__all__ = ["decode"]

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

    def __init__(self, buf: bytes, where: str):
        self.buf, self.where = memoryview(buf), where

    def _fail(self, pos: int, what: str):
        raise CaffeFormatError(f"{self.where}: {what} at byte {pos} of {len(self.buf)}; "
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


def decode(buf: bytes, kind: str, where: str) -> Message:
    """Decode ``buf`` as the message type ``kind`` (``"NetParameter"``, ``"BlobProto"``)."""
    return _Wire(buf, where).message(kind, 0, len(buf), kind)
