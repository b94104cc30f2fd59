"""Reading Caffe files without Caffe: prototxt (text format) and caffemodel (wire format).

Why hand-written? A ``.prototxt`` is protobuf *text format* and a
``.caffemodel`` / ``.binaryproto`` is protobuf *wire format*. The usual way to
read them is Caffe itself, or ``protoc`` generating ``caffe_pb2`` from
``caffe.proto`` — MXNet's stock converter demands one of the two. Neither is
a dependency we want for reading a few hundred layer descriptions and some
packed float arrays, and generated code ties the reader to a protobuf runtime
version. Both formats are small and stable, and the field numbers of
``caffe.proto`` are public facts, so the reader is written here in three parts:

* ``_text`` — a text-format tokenizer/parser giving a tree of
  :class:`Message` (field name -> list of values), with line numbers for
  error messages;
* ``finetune._protobuf`` — a wire-format decoder driven by the tiny schema
  subset we need (a root module: :class:`~finetune.data.MeanImage` reads
  ``mean.binaryproto`` with it too) (net inputs, layer name/type/bottom/top and weight blobs, in
  both the new ``layer`` (``LayerParameter``) and the old V1 ``layers``
  (``V1LayerParameter``) numbering). Packed float data goes straight to
  :func:`numpy.frombuffer`;
* this module — the common net description built from either.

Both readers return the same :class:`CaffeNetDef`, whose layers carry the V1
enum types translated to the new type strings (``CONVOLUTION`` ->
``"Convolution"``), so the converter sees one format.
"""

from __future__ import annotations

import dataclasses
import os

from ...errors import CaffeFormatError, MissingFileError
from ..._protobuf import Message, blob_array, decode, read_binaryproto, shape_dims
from ._text import parse_text_message

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


def _net_from_message(root: Message, where: str) -> CaffeNetDef:
    new, old = root.all("layer"), root.all("layers")
    if new and old:
        raise CaffeFormatError(f"{where}: mixes new 'layer' and old V1 'layers' entries; use one format.")
    layers = []
    for index, msg in enumerate(new or old):
        layers.append(_layer_from_message(msg, index, v1=bool(old), where=where))
    shapes = [shape_dims(s) for s in root.all("input_shape")]
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
                      blobs=[blob_array(b, where, f"a weight blob of layer {name!r}") for b in msg.all("blobs")],
                      line=msg.line)


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
    root = decode(buf, "NetParameter", where)
    if not root.all("layer") and not root.all("layers"):
        raise CaffeFormatError(f"{where} holds no layers; is it a Caffe .caffemodel?")
    return _net_from_message(root, where)
