"""Reading Caffe files without Caffe: prototxt (text format) and caffemodel (wire format).

Why hand-written? A ``.prototxt`` is protobuf *text format* and a
``.caffemodel`` / ``.binaryproto`` is protobuf *wire format*. The usual way to
read them is Caffe itself, or ``protoc`` generating ``caffe_pb2`` from
``caffe.proto`` — MXNet's stock converter demands one of the two. Neither is
a dependency we want for reading a few hundred layer descriptions and some
packed float arrays, and generated code ties the reader to a protobuf runtime
version. Both formats are small and stable, and the field numbers of
``caffe.proto`` are public facts, so this module holds

* a text-format tokenizer/parser giving a tree of :class:`Message` (field
  name -> list of values), with line numbers for error messages;
* a wire-format decoder driven by the tiny schema subset we need (net inputs,
  layer name/type/bottom/top and weight blobs, in both the new ``layer``
  (``LayerParameter``) and the old V1 ``layers`` (``V1LayerParameter``)
  numbering). Packed float data goes straight to :func:`numpy.frombuffer`.

Both readers return the same :class:`CaffeNetDef`, whose layers carry the V1
enum types translated to the new type strings (``CONVOLUTION`` ->
``"Convolution"``), so the converter sees one format.
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct

import numpy as np

from ..errors import CaffeFormatError, MissingFileError

__all__ = ["CaffeLayer", "CaffeNetDef", "Message", "parse_prototxt", "read_binaryproto",
           "read_caffemodel"]

# V1LayerParameter.LayerType enum (caffe.proto) -> the new-format type string.
V1_TYPES = {
    0: "None", 35: "AbsVal", 1: "Accuracy", 30: "ArgMax", 2: "BNLL", 3: "Concat",
    37: "ContrastiveLoss", 4: "Convolution", 5: "Data", 39: "Deconvolution", 6: "Dropout",
    32: "DummyData", 7: "EuclideanLoss", 25: "Eltwise", 38: "Exp", 8: "Flatten", 9: "HDF5Data",
    10: "HDF5Output", 28: "HingeLoss", 11: "Im2col", 12: "ImageData", 13: "InfogainLoss",
    14: "InnerProduct", 15: "LRN", 29: "MemoryData", 16: "MultinomialLogisticLoss", 34: "MVN",
    17: "Pooling", 26: "Power", 18: "ReLU", 19: "Sigmoid", 27: "SigmoidCrossEntropyLoss",
    36: "Silence", 20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split", 33: "Slice", 23: "TanH",
    24: "WindowData", 31: "Threshold",
}
_V1_NAMES = {
    "NONE": 0, "ABSVAL": 35, "ACCURACY": 1, "ARGMAX": 30, "BNLL": 2, "CONCAT": 3,
    "CONTRASTIVE_LOSS": 37, "CONVOLUTION": 4, "DATA": 5, "DECONVOLUTION": 39, "DROPOUT": 6,
    "DUMMY_DATA": 32, "EUCLIDEAN_LOSS": 7, "ELTWISE": 25, "EXP": 38, "FLATTEN": 8,
    "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "HINGE_LOSS": 28, "IM2COL": 11, "IMAGE_DATA": 12,
    "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15, "MEMORY_DATA": 29,
    "MULTINOMIAL_LOGISTIC_LOSS": 16, "MVN": 34, "POOLING": 17, "POWER": 26, "RELU": 18,
    "SIGMOID": 19, "SIGMOID_CROSS_ENTROPY_LOSS": 27, "SILENCE": 36, "SOFTMAX": 20,
    "SOFTMAX_LOSS": 21, "SPLIT": 22, "SLICE": 33, "TANH": 23, "WINDOW_DATA": 24, "THRESHOLD": 31,
}


# ----------------------------------------------------------------- data model
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


@dataclasses.dataclass
class CaffeLayer:
    """One Caffe layer, whatever the file format.

    Attributes
    ----------
    name, type : str
        Layer name and new-format type string (V1 enums are translated).
    bottoms, tops : list of str
        Input and output blob names.
    params : Message
        The whole layer message (``convolution_param`` etc. are inside).
    blobs : list of numpy.ndarray
        Weight blobs (float32, in their stored shape); empty for prototxt input.
    line : int
        Line of the prototxt where the layer starts (0 for binary input).
    """

    name: str
    type: str
    bottoms: list
    tops: list
    params: Message
    blobs: list
    line: int = 0

    def param(self, name: str) -> Message:
        """The ``<name>`` sub-message (e.g. ``"convolution_param"``), empty if absent."""
        return self.params.get(name) or Message(self.line)

    def phase(self) -> str | None:
        """``"TRAIN"`` / ``"TEST"`` from ``include { phase: ... }``, else None."""
        for rule in self.params.all("include"):
            phase = rule.get("phase")
            if phase is not None:
                return {0: "TRAIN", 1: "TEST"}.get(phase, phase)
        return None


@dataclasses.dataclass
class CaffeNetDef:
    """A parsed Caffe net: name, deploy inputs, layers and the file's format.

    ``format`` is ``"V1"`` (``layers { type: CONVOLUTION }``) or ``"V2"``
    (``layer { type: "Convolution" }``). ``inputs`` / ``input_shapes`` are the
    net-level ``input:`` / ``input_dim:`` / ``input_shape`` declarations.
    """

    name: str
    format: str
    inputs: list
    input_shapes: list
    layers: list
    path: str = ""

    def layer(self, name: str) -> CaffeLayer | None:
        """The layer called ``name``, or None."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        return None


# ------------------------------------------------------------- text format
_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\f\v]+) | (?P<nl>\n) | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?)
  | (?P<ident>[-+]?[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}<>:\[\],;])
""", re.VERBOSE)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "?": "?"}


def _unescape(body: str) -> str:
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            octal = re.match(r"[0-7]{1,3}", body[i + 1:])
            if octal:
                out.append(chr(int(octal.group(), 8)))
                i += 1 + len(octal.group())
                continue
        out.append(c)
        i += 1
    return "".join(out)


def _tokenize(text: str, where: str) -> list:
    tokens, line, pos = [], 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise CaffeFormatError(f"{where}, line {line}: unexpected character {text[pos]!r}.")
        kind = m.lastgroup
        if kind == "nl":
            line += 1
        elif kind not in ("ws", "comment"):
            tokens.append((kind, m.group(), line))
        pos = m.end()
    return tokens


def _scalar(kind: str, text: str):
    if kind == "string":
        return _unescape(text[1:-1])
    if kind == "number":
        body = text[:-1] if text[-1] in "fF" and not text.lower().startswith(("0x", "-0x")) else text
        if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", body):
            return int(body, 16)
        if re.fullmatch(r"[-+]?\d+", body):
            return int(body)
        return float(body)
    low = text.lower()
    if low in ("true", "t"):
        return True
    if low in ("false", "f"):
        return False
    if low.lstrip("+-") in ("inf", "infinity", "nan"):
        return float(low)
    return text


class _TextParser:
    def __init__(self, tokens: list, where: str):
        self.tokens, self.pos, self.where = tokens, 0, where

    def _error(self, msg: str):
        line = self.tokens[self.pos][2] if self.pos < len(self.tokens) else (
            self.tokens[-1][2] if self.tokens else 1)
        raise CaffeFormatError(f"{self.where}, line {line}: {msg}")

    def _peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else (None, None, None)

    def _take(self):
        tok = self._peek()
        self.pos += 1
        return tok

    def message(self, closing: str | None, line: int) -> Message:
        msg = Message(line)
        while True:
            kind, text, tline = self._peek()
            if kind is None:
                if closing is not None:
                    self._error(f"missing {closing!r}: the message opened on line {line} is never closed.")
                return msg
            if kind == "punct" and text == closing:
                self.pos += 1
                return msg
            if kind == "punct" and text in ",;":
                self.pos += 1
                continue
            if kind != "ident":
                self._error(f"expected a field name, got {text!r}.")
            self.pos += 1
            self._field(msg, text, tline)

    def _field(self, msg: Message, name: str, line: int) -> None:
        kind, text, _ = self._peek()
        colon = kind == "punct" and text == ":"
        if colon:
            self.pos += 1
            kind, text, _ = self._peek()
        if kind == "punct" and text in "{<":
            self.pos += 1
            msg.add(name, self.message("}" if text == "{" else ">", line))
        elif kind == "punct" and text == "[":
            self.pos += 1
            while True:
                kind, text, _ = self._peek()
                if kind == "punct" and text == "]":
                    self.pos += 1
                    break
                if kind == "punct" and text == ",":
                    self.pos += 1
                    continue
                if kind == "punct" and text in "{<":
                    self.pos += 1
                    msg.add(name, self.message("}" if text == "{" else ">", line))
                else:
                    msg.add(name, self._value(name))
        elif not colon:
            self._error(f"expected ':' or '{{' after field {name!r}, got {text!r}.")
        else:
            msg.add(name, self._value(name))

    def _value(self, name: str):
        kind, text, _ = self._take()
        if kind in ("string", "number", "ident"):
            value = _scalar(kind, text)
            while kind == "string" and self._peek()[0] == "string":  # "a" "b" concatenation
                value += _scalar("string", self._take()[1])
            return value
        self.pos -= 1
        self._error(f"expected a value for field {name!r}, got {text!r}.")


def parse_text_message(text: str, where: str = "<prototxt>") -> Message:
    """Parse protobuf text format into a :class:`Message` tree (no schema needed)."""
    return _TextParser(_tokenize(text, where), where).message(None, 1)


def _read_bytes(path, what: str) -> bytes:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"The Caffe {what} {path!r} does not exist.")
    with open(path, "rb") as f:
        return f.read()


def parse_prototxt(path) -> CaffeNetDef:
    """Parse a Caffe ``.prototxt`` (new ``layer {}`` or old V1 ``layers {}`` format).

    Parameters
    ----------
    path : str or os.PathLike
        The network definition, e.g. ``deploy.prototxt``.

    Returns
    -------
    CaffeNetDef
        Layers in file order; V1 enum types translated to new type strings.

    Raises
    ------
    MissingFileError
        ``path`` does not exist.
    CaffeFormatError
        The text is not valid protobuf text format, or a layer lacks a name/type
        (the message gives the line).
    """
    where = os.fspath(path)
    raw = _read_bytes(path, "prototxt")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CaffeFormatError(f"{where} is not a text prototxt (byte {exc.start} is not UTF-8); "
                               "is it a binary .caffemodel?") from None
    root = parse_text_message(text, where)
    return _net_from_message(root, where)


def _shape_dims(shape) -> list:
    if isinstance(shape, Message):
        return [int(d) for d in shape.all("dim")]
    return [int(d) for d in np.asarray(shape).ravel()]


def _net_from_message(root: Message, where: str) -> CaffeNetDef:
    new, old = root.all("layer"), root.all("layers")
    if new and old:
        raise CaffeFormatError(f"{where}: mixes new 'layer' and old V1 'layers' entries; use one format.")
    layers = []
    for index, msg in enumerate(new or old):
        layers.append(_layer_from_message(msg, index, v1=bool(old), where=where))
    shapes = [_shape_dims(s) for s in root.all("input_shape")]
    dims = [int(d) for d in root.all("input_dim")]
    if dims:
        if len(dims) % 4:
            raise CaffeFormatError(f"{where}: {len(dims)} 'input_dim' values; expected 4 per input.")
        shapes += [dims[i:i + 4] for i in range(0, len(dims), 4)]
    return CaffeNetDef(name=str(root.get("name", "")), format="V1" if old else "V2",
                       inputs=[str(s) for s in root.all("input")], input_shapes=shapes,
                       layers=layers, path=where)


def _layer_from_message(msg: Message, index: int, *, v1: bool, where: str) -> CaffeLayer:
    name = msg.get("name")
    kind = msg.get("type")
    if name is None or not isinstance(name, str):
        raise CaffeFormatError(f"{where}, line {msg.line}: layer #{index} has no 'name'.")
    if kind is None:
        raise CaffeFormatError(f"{where}, line {msg.line}: layer {name!r} has no 'type'.")
    if v1 or isinstance(kind, int) or (isinstance(kind, str) and kind in _V1_NAMES):
        number = kind if isinstance(kind, int) else _V1_NAMES.get(kind)
        if number not in V1_TYPES:
            raise CaffeFormatError(f"{where}, line {msg.line}: layer {name!r} has unknown V1 type {kind!r}.")
        kind = V1_TYPES[number]
    return CaffeLayer(name=name, type=str(kind), bottoms=[str(b) for b in msg.all("bottom")],
                      tops=[str(t) for t in msg.all("top")], params=msg,
                      blobs=[_blob_array(b, name, where) for b in msg.all("blobs")], line=msg.line)


def _blob_array(blob: Message, layer: str, where: str) -> np.ndarray:
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
        shape = _shape_dims(blob.get("shape"))
    else:
        shape = [int(blob.get(k, 0)) for k in ("num", "channels", "height", "width")]
        if not any(shape):
            shape = [data.size]
    if int(np.prod(shape)) != data.size:
        raise CaffeFormatError(f"{where}: a weight blob of layer {layer!r} declares shape {tuple(shape)} "
                               f"({int(np.prod(shape))} values) but holds {data.size} values; "
                               "the file is truncated or corrupt.")
    return data.reshape(shape)


# ------------------------------------------------------------- wire format
# schema subset: message -> {field number: (name, kind, message type)}
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


def read_caffemodel(path) -> CaffeNetDef:
    """Read the layers and weight blobs of a binary ``.caffemodel``.

    Only what conversion needs is decoded (net inputs, layer name, type,
    bottoms, tops, ``include`` phase and blobs); other fields are skipped.
    Both the new ``layer`` and the old V1 ``layers`` numbering are read.

    Parameters
    ----------
    path : str or os.PathLike
        The weights file.

    Returns
    -------
    CaffeNetDef
        ``layers[i].blobs`` hold float32 arrays in their stored shapes.

    Raises
    ------
    MissingFileError
        ``path`` does not exist.
    CaffeFormatError
        The file is truncated or is not a Caffe ``NetParameter``.
    """
    where = os.fspath(path)
    buf = _read_bytes(path, "caffemodel")
    if not buf:
        raise CaffeFormatError(f"{where} is empty.")
    root = _Wire(buf, where).message("NetParameter", 0, len(buf), "NetParameter")
    if not root.all("layer") and not root.all("layers"):
        raise CaffeFormatError(f"{where} holds no layers; is it a Caffe .caffemodel?")
    return _net_from_message(root, where)


def read_binaryproto(path) -> np.ndarray:
    """Read a Caffe mean file (``mean.binaryproto``, a ``BlobProto``).

    Returns
    -------
    numpy.ndarray
        ``(C, H, W)`` float32 mean image in raw pixel units, in the colour order
        it was computed in (BGR for Caffe tools).
    """
    where = os.fspath(path)
    buf = _read_bytes(path, "mean file")
    blob = _Wire(buf, where).message("BlobProto", 0, len(buf), "BlobProto")
    array = _blob_array(blob, "<mean>", where)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise CaffeFormatError(f"{where}: a mean file must hold a (1, C, H, W) blob; got shape {array.shape}.")
    return array
