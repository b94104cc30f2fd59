"""Where does the network look? Grad-CAM class-activation maps.

Grad-CAM (Selvaraju et al., 2017) weights the feature maps ``A`` of a
convolutional layer by the spatial mean of the gradient of a class score
``y_c`` (the logit) with respect to them, sums over channels and keeps the
positive part: ``relu(sum_k mean_ij(dy_c / dA_k,ij) * A_k)``.

Gradients with respect to an *intermediate* layer need the graph cut there.
finetune's own networks (:class:`~finetune.Backbone`, :class:`~finetune.Model`)
provide them (``layer_gradient``, the graph surgery of
:mod:`finetune.models._graph`), and :class:`GradCAM` uses that. For any other
``HybridBlock`` (e.g. a deployment ``SymbolBlock``) it falls back on a private
split. Every such block is a Gluon ``HybridBlock``, so tracing it with a symbol
gives its whole graph (``model(mx.sym.var("data"))``) whatever its origin
(gluoncv zoo, Caffe import, fine-tuned head). The graph is split at the chosen
layer into ``input -> A`` and ``A -> logits`` (the second with ``A`` turned into
an input variable), both as ``SymbolBlock`` sharing the model's parameters;
autograd then gives ``dy_c / dA`` directly. This works the same whether the
model is hybridized or not. The split is done here (``_split_graph``) rather
than by hand-written per-architecture hooks.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError, ModelError, UnknownNameError

__all__ = ["GradCAM", "GradCAMResult"]

_CUT_INPUT = "gradcam_cut_input"


@dataclasses.dataclass(frozen=True, eq=False)
class GradCAMResult:
    """A class-activation map for one image.

    Attributes
    ----------
    heatmap : numpy.ndarray
        ``(H, W)`` float32 in ``[0, 1]``, in the geometry of ``image`` (the
        part of the image the network did not see, outside its centre crop,
        is 0).
    image : numpy.ndarray
        ``(H, W, 3)`` uint8 **RGB**, the original image.
    class_index : int
        The class explained.
    class_name : str
        Its name.
    probability : float
        Softmax probability the network gives that class.
    layer : str
        The layer whose activations were used.
    cam : numpy.ndarray
        ``(h, w)`` the raw map at the layer's resolution (before upsampling).
    """

    heatmap: np.ndarray
    image: np.ndarray
    class_index: int
    class_name: str
    probability: float
    layer: str
    cam: np.ndarray

    def overlay(self, alpha: float = 0.5, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
        """The image with the heat map blended over it: ``(H, W, 3)`` uint8 RGB."""
        heat = cv2.applyColorMap(np.uint8(np.round(255 * self.heatmap)), colormap)
        heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
        return cv2.addWeighted(self.image, 1 - alpha, heat, alpha, 0)

    def save(self, path, alpha: float = 0.5) -> None:
        """Write :meth:`overlay` as an image file (PNG, JPEG, ... by extension)."""
        path = os.fspath(path)
        if not cv2.imwrite(path, cv2.cvtColor(self.overlay(alpha), cv2.COLOR_RGB2BGR)):
            raise ConfigError(f"Cannot write {path!r}; use a .png or .jpg file name in an existing folder.")

    def mass_inside(self, box) -> float:
        """Fraction of the heat map's total inside ``box = (top, left, bottom, right)`` (pixels)."""
        top, left, bottom, right = box
        total = float(self.heatmap.sum())
        return float(self.heatmap[top:bottom, left:right].sum()) / total if total > 0 else 0.0

    def __repr__(self) -> str:
        h, w = self.heatmap.shape
        return (f"GradCAMResult({self.class_name!r}, p={self.probability:.3f}, layer={self.layer!r}, "
                f"{h}x{w})")


def _trace(model):
    """The model's graph as a symbol (input ``data``) and its first output."""
    import mxnet as mx

    out = model(mx.sym.var("data"))
    if isinstance(out, (list, tuple)):
        out = out[0]
    return out


def _output_entry(internals_names: list, layer: str) -> str:
    """The internal output name of ``layer`` (accepts ``name`` or ``name_output``)."""
    for cand in (layer, f"{layer}_output", f"{layer}_output0"):
        if cand in internals_names:
            return cand
    matches = [n for n in internals_names if n.endswith(f"_{layer}_output")]
    if len(matches) == 1:
        return matches[0]
    return ""


def _split_graph(symbol, entry: str):
    """Split ``symbol`` at internal output ``entry``: (input -> A, A -> output with A as input)."""
    import mxnet as mx

    feature = symbol.get_internals()[entry]
    graph = json.loads(symbol.tojson())
    node_name = entry[: -len("_output")] if entry.endswith("_output") else entry
    ids = [i for i, n in enumerate(graph["nodes"]) if n["name"] == node_name]
    if len(ids) != 1:
        raise ModelError(f"Cannot cut the graph at {entry!r}: {len(ids)} nodes are named {node_name!r}.")
    node = graph["nodes"][ids[0]]
    if node["op"] == "null":
        raise ConfigError(f"{node_name!r} is an input or a parameter, not a layer.")
    graph["nodes"][ids[0]] = {"op": "null", "name": _CUT_INPUT, "inputs": []}
    graph["arg_nodes"] = sorted(set(graph["arg_nodes"]) | {ids[0]})
    for n in graph["nodes"]:  # every consumer must read output 0 of the cut node
        for ref in n["inputs"]:
            if ref[0] == ids[0] and ref[1] != 0:
                raise ModelError(f"Cannot cut at {node_name!r}: later layers use its output {ref[1]}.")
    head = mx.sym.load_json(json.dumps(graph))
    return feature, head


def _conv_layers(symbol, shape) -> list:
    """``(entry, shape)`` of every op output with a 4-D shape and a spatial size > 1, in graph order."""
    internals = symbol.get_internals()
    _, out_shapes, _ = internals.infer_shape_partial(data=shape)
    args = set(symbol.list_inputs())
    found = []
    for name, s in zip(internals.list_outputs(), out_shapes):
        base = name[: -len("_output")] if name.endswith("_output") else name
        if base in args or name in args or not s or len(s) != 4:
            continue
        if s[2] * s[3] > 1:
            found.append((name, tuple(s)))
    return found


class GradCAM:
    """Grad-CAM heat maps for a network following finetune's model protocol.

    Parameters
    ----------
    model : mxnet.gluon.HybridBlock
        A :class:`~finetune.Backbone`, :class:`~finetune.Model` or any
        ``HybridBlock`` with ``.preprocess`` and ``.class_names`` returning logits.
        Hybridized or not; Caffe imports included.
    layer : str or None
        The convolutional layer (a name from ``model.layer_names`` or of the
        traced graph). ``None`` takes the last layer whose output is 4-D with a
        spatial size above 1 (the last convolutional block).
    ctx : None or mx.Context
        Device; ``None`` is the current context.

    Examples
    --------
    >>> import mxnet as mx, numpy as np
    >>> from finetune import Preprocess
    >>> net = mx.gluon.nn.HybridSequential(prefix="net_")
    >>> with net.name_scope():
    ...     net.add(mx.gluon.nn.Conv2D(4, 3, padding=1), mx.gluon.nn.GlobalAvgPool2D(),
    ...             mx.gluon.nn.Dense(2))
    >>> net.initialize()
    >>> net.preprocess, net.class_names = Preprocess(size=(8, 8), resize=8), ["a", "b"]
    >>> cam = GradCAM(net)
    >>> cam.layer
    'net_conv0_fwd'
    >>> result = cam(np.zeros((10, 12, 3), np.uint8), color="RGB")
    >>> result.heatmap.shape, result.overlay().dtype
    ((10, 12), dtype('uint8'))
    """

    def __init__(self, model, layer: str | None = None, *, ctx=None):
        from .._context import resolve_ctx

        if getattr(model, "preprocess", None) is None:
            raise ModelError("GradCAM needs a model with .preprocess (a finetune.Preprocess).")
        self.model = model
        self.ctx = resolve_ctx(ctx)[0]
        pre = model.preprocess
        symbol = model.to_symbol() if callable(getattr(model, "to_symbol", None)) else _trace(model)
        shape = (1, pre.channels, pre.size[0], pre.size[1])
        convs = _conv_layers(symbol, shape)
        if not convs:
            raise ModelError(f"{type(model).__name__} has no layer with a 4-D output to explain.")
        if layer is None:
            entry = convs[-1][0]
        else:
            entry = _output_entry(symbol.get_internals().list_outputs(), layer)
            if not entry:
                known = getattr(model, "layer_names", None) or [c[0][: -len("_output")] for c in convs]
                raise UnknownNameError("layer", layer, known)
            if entry not in dict(convs):
                raise ConfigError(f"Layer {layer!r} does not output a 4-D feature map with a spatial size; "
                                  f"pick a convolutional layer, e.g. {convs[-1][0][:-len('_output')]!r}.")
        self.layer = entry[: -len("_output")] if entry.endswith("_output") else entry
        # finetune models do the graph surgery themselves (models._graph probe); other blocks here
        self._native = callable(getattr(model, "layer_gradient", None))
        self._symbol, self._entry = symbol, entry
        self._features = self._head = None

    def _build(self, symbol, entry):
        import warnings

        import mxnet as mx

        feature_sym, head_sym = _split_graph(symbol, entry)
        params = self.model.collect_params()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Cannot decide type")
            features = mx.gluon.SymbolBlock(feature_sym, mx.sym.var("data"), params=params)
            head = mx.gluon.SymbolBlock(head_sym, mx.sym.var(_CUT_INPUT), params=params)
        return features, head

    def __repr__(self) -> str:
        return f"GradCAM({type(self.model).__name__}, layer={self.layer!r})"

    def _read(self, image, color):
        from ..data import decode_image, read_image, to_color

        if isinstance(image, (str, os.PathLike)):
            return read_image(image, "RGB"), Path(image).name
        if isinstance(image, (bytes, bytearray)):
            return decode_image(bytes(image), "RGB"), "bytes"
        if color is None:
            raise ConfigError("Decoded arrays need their colour order: pass color='RGB' or color='BGR'.")
        return to_color(np.asarray(image), color, "RGB"), "array"

    def __call__(self, image, target=None, *, color: str | None = None) -> GradCAMResult:
        """The class-activation map of one image.

        Parameters
        ----------
        image : path, bytes or numpy.ndarray
            An image file, encoded bytes, or a decoded ``(H, W, 3)`` uint8
            array (then give ``color``).
        target : int, str or None
            The class to explain, by index or name; ``None`` explains the
            predicted (top-1) class.
        color : {"RGB", "BGR"} or None
            Colour order of a decoded array.

        Returns
        -------
        GradCAMResult
        """
        import mxnet as mx

        rgb, _ = self._read(image, color)
        pre = self.model.preprocess
        x = mx.nd.array(pre.transform(rgb, "RGB")[None], ctx=self.ctx)
        if self._native:
            index = None if target is None else self._target_index(target, None, None)
            act, grad, logits = self.model.layer_gradient(x, self.layer, class_index=index)
            logits = logits.reshape((1, -1))
            if index is None:
                index = int(logits.argmax(axis=1).asscalar())
        else:
            act, grad, logits, index = self._split_gradient(x, target)
        grads = grad.asnumpy()[0]
        acts = act.asnumpy()[0]
        weights = grads.mean(axis=(1, 2))
        cam = np.maximum((weights[:, None, None] * acts).sum(axis=0), 0).astype(np.float32)
        probs = mx.nd.softmax(logits).asnumpy()[0]
        names = getattr(self.model, "class_names", None)
        name = names[index] if names is not None and index < len(names) else str(index)
        return GradCAMResult(self._upsample(cam, rgb.shape[:2]), rgb, int(index), str(name),
                             float(probs[index]), self.layer, cam)

    def _split_gradient(self, x, target):
        """Activation, gradient and logits through the private graph split (any HybridBlock)."""
        import mxnet as mx

        if self._features is None:
            self._features, self._head = self._build(self._symbol, self._entry)
        feats = self._features(x)
        feats = feats[0] if isinstance(feats, (list, tuple)) else feats
        feats = feats.detach()
        feats.attach_grad()
        with mx.autograd.record(train_mode=False):
            logits = self._head(feats)
            logits = logits[0] if isinstance(logits, (list, tuple)) else logits
            logits = logits.reshape((1, -1))
            index = self._target_index(target, logits.shape[1], logits)
            score = logits[0, index]
        score.backward()
        return feats, feats.grad, logits, index

    def _target_index(self, target, k, logits) -> int:
        if target is None:
            return int(logits.argmax(axis=1).asscalar())
        if isinstance(target, str):
            names = list(getattr(self.model, "class_names", None) or [])
            if target not in names:
                raise UnknownNameError("class", target, names)
            return names.index(target)
        if k is None:
            k = len(getattr(self.model, "class_names", None) or []) or int(target) + 1
        if not 0 <= int(target) < k:
            raise ConfigError(f"The 'target' class of GradCAM must be in [0, {k - 1}]. Got {target!r} instead.")
        return int(target)

    def _upsample(self, cam: np.ndarray, image_shape) -> np.ndarray:
        """Map the layer-resolution CAM back onto the original image through the crop geometry."""
        pre = self.model.preprocess
        h, w = image_shape
        out_h, out_w = pre.size
        peak = float(cam.max())
        cam = cam / peak if peak > 0 else cam
        crop = cv2.resize(cam, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        new_h, new_w, top, left = pre.crop_box(h, w)
        canvas = np.zeros((new_h, new_w), np.float32)
        canvas[top:top + out_h, left:left + out_w] = crop
        heat = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.clip(heat, 0, 1).astype(np.float32)
