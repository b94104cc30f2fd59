"""Where does the network look? Grad-CAM class-activation maps.

Grad-CAM (Selvaraju et al., 2017) weights the feature maps ``A`` of a
convolutional layer by the spatial mean of the gradient of a class score
``y_c`` (the logit) with respect to them, sums over channels and keeps the
positive part: ``relu(sum_k mean_ij(dy_c / dA_k,ij) * A_k)``.

Gradients with respect to an *intermediate* layer need the graph cut there;
every network offers them (``layer_gradient`` of the model protocol, the graph
surgery of :mod:`finetune.models.graph`). :class:`GradCAM` takes its model through
:func:`~finetune.create_model`, so a plain ``HybridBlock``, a Caffe import or a
deployment folder are explained the same way as a :class:`~finetune.Backbone`
or a :class:`~finetune.Model`, hybridized or not.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from numbers import Integral

import cv2
import mxnet as mx
import numpy as np

from .._context import resolve_ctx
from .._file_writes import atomic_write
from ..data import ImageItem, ImageSource
from .._validation import InstanceOf, Interval, validate
from ..errors import ConfigError, ModelError, UnknownNameError, check_range
from ..models import create_model
from ..models import require_model

__all__ = ["GradCAM", "GradCAMResult", "feature_map_layers"]

#: One backward pass at a time in this process: MXNet's autograd writes the gradient buffers shared
#: by every user of a network (and builds its probe graph once), so concurrent backward passes from
#: several threads corrupt its state and can kill the interpreter.
_BACKWARD_LOCK = threading.RLock()


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
    item : ImageItem or None
        The input ``image`` was read from (its ``source`` names it in
        figures); in memory only, ``None`` for a result built by hand.
    """

    heatmap: np.ndarray
    image: np.ndarray
    class_index: int
    class_name: str
    probability: float
    layer: str
    cam: np.ndarray
    item: ImageItem | None = None

    def overlay(self, alpha: float = 0.5, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
        """The image with the heat map blended over it: ``(H, W, 3)`` uint8 RGB."""
        heat = cv2.applyColorMap(np.uint8(np.round(255 * self.heatmap)), colormap)
        heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
        return cv2.addWeighted(self.image, 1 - alpha, heat, alpha, 0)

    def save(self, path, alpha: float = 0.5) -> None:
        """Write :meth:`overlay` as an image file (PNG, JPEG, ... by extension), atomically; missing folders are created."""
        check_range("GradCAMResult.save", "alpha", alpha, 0, 1)
        path = os.fspath(path)
        if os.path.isdir(path):
            raise ConfigError(f"{path!r} is a folder; give a file name for the picture, e.g. "
                              f"{os.path.join(path, 'gradcam.png')!r}.")
        try:
            ok, data = cv2.imencode(os.path.splitext(path)[1] or ".",
                                    cv2.cvtColor(self.overlay(alpha), cv2.COLOR_RGB2BGR))
        except cv2.error:
            ok = False
        if not ok:
            raise ConfigError(f"Cannot write {path!r}: OpenCV cannot encode images of that extension; "
                              "use a .png or .jpg file name.")
        atomic_write(path, data.tobytes())  # creates the missing folders

    def mass_inside(self, box) -> float:
        """Fraction of the heat map's total inside ``box = (top, left, bottom, right)`` (pixels)."""
        top, left, bottom, right = box
        total = float(self.heatmap.sum())
        return float(self.heatmap[top:bottom, left:right].sum()) / total if total > 0 else 0.0

    def __repr__(self) -> str:
        h, w = self.heatmap.shape
        return (f"GradCAMResult({self.class_name!r}, p={self.probability:.3f}, layer={self.layer!r}, "
                f"{h}x{w})")


def _output_entry(internals_names: list, layer: str) -> str:
    """The internal output name of ``layer`` (accepts ``name`` or ``name_output``)."""
    for cand in (layer, f"{layer}_output", f"{layer}_output0"):
        if cand in internals_names:
            return cand
    matches = [n for n in internals_names if n.endswith(f"_{layer}_output")]
    return matches[0] if len(matches) == 1 else ""


def _named_conv_layers(model, shape, ctx) -> list:
    """``(name_output, shape)`` of the named layers with a 4-D output of spatial size > 1, in graph order."""
    layers = list(model.layer_names)
    outs = model.features(mx.nd.zeros(shape, ctx=ctx), layers)
    return [(f"{n}_output", tuple(o.shape)) for n, o in zip(layers, outs)
            if len(o.shape) == 4 and o.shape[2] * o.shape[3] > 1]


def _conv_layers(symbol, shape) -> list:
    """``(entry, shape)`` of every op output with a 4-D shape and a spatial size > 1, in graph order."""
    internals = symbol.get_internals()
    _, out_shapes, _ = internals.infer_shape_partial(data=shape)
    args = set(symbol.list_inputs())
    return [(name, tuple(s)) for name, s in zip(internals.list_outputs(), out_shapes)
            if s and len(s) == 4 and s[2] * s[3] > 1 and not {name, name.removesuffix("_output")} & args]


def _feature_maps(model, ctx) -> tuple:
    """``(maps, outputs)``: ``(entry, shape)`` of the 4-D spatial outputs in graph order, and every entry name.

    Entries are the traced graph's op outputs when they carry the model's layer
    names, else the named layers themselves (``name_output``).
    """
    pre = model.preprocess
    shape = (1, pre.channels, pre.size[0], pre.size[1])
    symbol = model.to_symbol()  # every op output of the graph, by name
    maps, outputs = _conv_layers(symbol, shape), symbol.get_internals().list_outputs()
    named = set(model.layer_names)
    if not any(entry[: -len("_output")] in named for entry, _ in maps):  # layers named apart from the graph
        maps = _named_conv_layers(model, shape, ctx)
        outputs = [m[0] for m in maps]
    return maps, outputs


def feature_map_layers(model, *, ctx=None) -> list:
    """``(layer, shape)`` of the named layers whose output is a 4-D map larger than 1 x 1, input first.

    The last is the last convolutional block: the layer :class:`GradCAM`
    explains and :class:`~finetune.FeatureExtractor` pools when none is named.

    Parameters
    ----------
    model : model, HybridBlock, str, path or (prototxt, caffemodel)
        Anything :func:`~finetune.create_model` accepts.
    ctx : None or mx.Context
        Device of the probe; ``None`` is the current context.

    Examples
    --------
    >>> import finetune as ft
    >>> feature_map_layers(ft.create_model("mobilenet0.25", weights=None))[-1]
    ('relu26_fwd', (1, 256, 7, 7))
    """
    model = create_model(model, ctx=ctx)
    require_model(model, "full", "feature_map_layers")
    named = set(model.layer_names)
    maps, _ = _feature_maps(model, resolve_ctx(ctx)[0])
    return [(entry[: -len("_output")], shape) for entry, shape in maps if entry[: -len("_output")] in named]


class GradCAM:
    """Grad-CAM heat maps for a network following finetune's model protocol.

    Parameters
    ----------
    model : model, HybridBlock, str, path or (prototxt, caffemodel)
        Anything :func:`~finetune.create_model` accepts (a zoo name gets its
        ImageNet weights): a :class:`~finetune.Backbone`, a
        :class:`~finetune.Model`, a model directory, a deployment folder, a
        Caffe pair or a ``HybridBlock`` with ``.preprocess`` and
        ``.class_names`` returning logits; hybridized or not.
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
        self.model = create_model(model, ctx=ctx)
        self.ctx = resolve_ctx(ctx)[0]
        require_model(self.model, "full", "GradCAM")
        convs, outputs = _feature_maps(self.model, self.ctx)
        if not convs:
            raise ModelError(f"{type(model).__name__} has no layer with a 4-D output to explain.")
        if layer is None:
            entry = convs[-1][0]
        else:
            entry = _output_entry(outputs, layer)
            if not entry:
                raise UnknownNameError("layer", layer, self.model.layer_names)
            if entry not in dict(convs):
                raise ConfigError(f"Layer {layer!r} does not output a 4-D feature map with a spatial size; "
                                  f"pick a convolutional layer, e.g. {convs[-1][0][:-len('_output')]!r}.")
        self.layer = entry.removesuffix("_output")

    def __repr__(self) -> str:
        return f"GradCAM({type(self.model).__name__}, layer={self.layer!r})"

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
        source = ImageSource(image, color=color)
        if len(source) != 1:
            raise ConfigError(f"GradCAM explains one image per call. Got {len(source)} images; call it once "
                              "for each (e.g. for each path of finetune.data.list_images(folder)).")
        item = source[0]
        rgb = item.read("RGB")
        pre = self.model.preprocess
        x = mx.nd.array(pre.transform(rgb, "RGB")[None], ctx=self.ctx)
        index = None if target is None else self._target_index(target)
        with _BACKWARD_LOCK:  # the results are read (waited for) before another thread records
            act, grad, logits = self.model.layer_gradient(x, self.layer, class_index=index)
            logits = logits.reshape((1, -1))
            grad, act = grad.asnumpy()[0], act.asnumpy()[0]
            probs = mx.nd.softmax(logits).asnumpy()[0]
        if index is None:
            index = int(np.argmax(probs))
        weights = grad.mean(axis=(1, 2))
        cam = np.maximum((weights[:, None, None] * act).sum(axis=0), 0).astype(np.float32)
        names = self.model.class_names
        name = names[index] if names is not None and index < len(names) else str(index)
        return GradCAMResult(self._upsample(cam, rgb.shape[:2]), rgb, int(index), str(name),
                             float(probs[index]), self.layer, cam, item)

    def _target_index(self, target) -> int:
        names = list(self.model.class_names or [])
        if isinstance(target, str):
            if target not in names:
                raise UnknownNameError("class", target, names)
            return names.index(target)
        validate("GradCAM", {"target": target},
                 {"target": [Interval(Integral, 0, None), InstanceOf(str, name="a class name")]})
        k = len(names) or int(target) + 1
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
