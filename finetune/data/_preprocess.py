"""The preprocessing config a network expects — it travels with every model.

Pixels are normalised as::

    y = (x - mean) / std * scale

where ``x`` is the image in **raw pixel units (0–255)** and in the network's
colour order, ``mean`` is either a per-channel tuple or a mean image
``(C, H, W)`` (both in raw pixel units, network colour order), and ``std``
is per-channel. This is the convention of MXNet's ``ImageRecordIter``
(``mean_r/g/b``, ``std_r/g/b``, ``scale``, ``mean_img``) and of Caffe
(mean values or ``mean.binaryproto``, ``scale``):

=====================  =========  ========================  ==================  =====
network                colour     mean                      std                 scale
=====================  =========  ========================  ==================  =====
gluoncv zoo            RGB        (123.675, 116.28, 103.53) (58.395, 57.12,     1
                                                            57.375)
Caffe VGG / ResNet     BGR        (104, 117, 123)           (1, 1, 1)           1
EfficientNet-Lite      RGB        (127, 127, 127)           (128, 128, 128)     1
=====================  =========  ========================  ==================  =====

Evaluation geometry: resize the shorter side to ``resize`` (``resize_mode=
"shorter"``) or the whole image to ``resize × resize`` (``"stretch"``), then
take the centre ``size`` crop.
"""

from __future__ import annotations

import dataclasses
import json
import os
from numbers import Integral, Real

import cv2
import numpy as np

from .._arrays import read_npy
from .._file_writes import atomic_files, atomic_open, settled
from .._validation import InstanceOf, Interval, Options, Sequence, is_number, validate
from ..errors import ConfigError, DataError, MissingFileError, ShapeError
from ._image import read_image, to_color
from ._image_checks import check_geometry

__all__ = ["CONSTRAINTS", "MAX_INPUT_SIZE", "Preprocess"]

_INTERP = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "cubic": cv2.INTER_CUBIC}

#: The largest ``size`` side and ``resize`` a :class:`Preprocess` accepts, in pixels (from a caller or a
#: model directory's config.json): larger values only upsample images to sizes no network is trained at.
MAX_INPUT_SIZE = 4096

_SIDE = Interval(Integral, 1, MAX_INPUT_SIZE)
_CHANNELS = (1, 2, 3, 4)
#: The allowed value of every :class:`Preprocess` field; the constructor and :meth:`Preprocess.from_dict`
#: (a model directory's config.json) check the same table.
CONSTRAINTS = {
    "size": [_SIDE, Sequence(_SIDE, lengths=(2,))],
    "resize": [_SIDE, None],
    "color": Options(["RGB", "BGR"]),
    "mean": Sequence(Interval(Real, None, None), lengths=_CHANNELS),
    "std": Sequence(Interval(Real, 0, None, closed="neither"), lengths=_CHANNELS),
    "scale": Interval(Real, 0, None, closed="neither"),
    "mean_image": [InstanceOf(np.ndarray, name="a (C, H, W) array"), None],
    "resize_mode": Options(["shorter", "stretch"]),
    "interpolation": Options(list(_INTERP)),
}


@dataclasses.dataclass(frozen=True, eq=False)
class Preprocess:
    """How images must be prepared for a network: size, colour order, normalisation.

    A small frozen value; every backbone and every saved model carries one,
    and datasets, :class:`~finetune.Predictor`, feature extraction and
    Grad-CAM read it from there, so training and prediction cannot disagree.

    Parameters
    ----------
    size : tuple of int
        ``(height, width)`` of the network input.
    resize : int or None
        Evaluation resize before the centre crop: the shorter side (or both
        sides with ``resize_mode="stretch"``) is resized to this. ``None``
        uses ``max(size)``, i.e. a crop of the full shorter side.
    color : {"RGB", "BGR"}
        Channel order the network expects.
    mean : tuple of float
        Per-channel mean in raw pixel units, network colour order. Ignored
        where ``mean_image`` is given.
    std : tuple of float
        Per-channel standard deviation in raw pixel units.
    scale : float
        Factor applied after mean subtraction and division by ``std``.
    mean_image : numpy.ndarray or None
        ``(C, H, W)`` float32 mean image in raw pixel units and network colour
        order (e.g. from :class:`~finetune.MeanImage` or a Caffe
        ``mean.binaryproto``). When larger than ``size`` its centre is used.
    resize_mode : {"shorter", "stretch"}
        Keep the aspect ratio (``"shorter"``) or not (``"stretch"``).
    interpolation : {"linear", "area", "cubic"}
        OpenCV interpolation used for resizing.

    Examples
    --------
    >>> import numpy as np
    >>> pre = Preprocess(size=(4, 4), resize=4, mean=(127, 127, 127), std=(128, 128, 128))
    >>> pre.transform(np.full((8, 6, 3), 255, np.uint8)).shape
    (3, 4, 4)
    >>> float(pre.transform(np.full((8, 6, 3), 255, np.uint8))[0, 0, 0])
    1.0
    """

    size: tuple = (224, 224)
    resize: int | None = 256
    color: str = "RGB"
    mean: tuple = (123.675, 116.28, 103.53)
    std: tuple = (58.395, 57.12, 57.375)
    scale: float = 1.0
    mean_image: np.ndarray | None = None
    resize_mode: str = "shorter"
    interpolation: str = "linear"

    def __post_init__(self):
        owner = "Preprocess"
        validate(owner, {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, CONSTRAINTS)
        size = self.size
        size = (int(size), int(size)) if is_number(size) else tuple(int(s) for s in size)
        object.__setattr__(self, "size", size)
        if self.resize is not None:
            object.__setattr__(self, "resize", int(self.resize))
        mean = tuple(float(m) for m in np.atleast_1d(self.mean))
        std = tuple(float(s) for s in np.atleast_1d(self.std))
        if len(mean) == 1:
            mean = mean * 3
        if len(std) == 1:
            std = std * len(mean)
        if len(mean) != len(std):
            raise ConfigError(f"{owner}: 'mean' has {len(mean)} channels but 'std' has {len(std)}.")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "scale", float(self.scale))
        if self.mean_image is not None:
            mi = np.asarray(self.mean_image, dtype=np.float32)
            if mi.ndim != 3 or mi.shape[0] != len(mean):
                raise ShapeError(
                    f"The 'mean_image' of {owner} must be (C, H, W) with C={len(mean)}. Got shape {mi.shape} instead."
                )
            if mi.shape[1] < size[0] or mi.shape[2] < size[1]:
                raise ShapeError(
                    f"The 'mean_image' of {owner} is {mi.shape[1]}x{mi.shape[2]}, smaller than the input size "
                    f"{size[0]}x{size[1]}. Compute the mean image at (at least) the input size."
                )
            mi = np.ascontiguousarray(mi)
            mi.setflags(write=False)
            object.__setattr__(self, "mean_image", mi)

    # ------------------------------------------------------------------ values
    @property
    def channels(self) -> int:
        """Number of input channels."""
        return len(self.mean)

    def replace(self, **changes) -> "Preprocess":
        """Return a copy with some fields changed (the value itself is frozen)."""
        return dataclasses.replace(self, **changes)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Preprocess):
            return NotImplemented
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "mean_image":
                if (a is None) != (b is None) or (a is not None and not np.array_equal(a, b)):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "mean_image":
                if value is not None:
                    parts.append(f"mean_image=<{'x'.join(map(str, value.shape))}>")
            elif value != f.default:
                parts.append(f"{f.name}={value!r}")
        return f"Preprocess({', '.join(parts)})"

    # --------------------------------------------------------------- transforms
    def mean_array(self, height: int | None = None, width: int | None = None) -> np.ndarray:
        """The mean to subtract, broadcastable against ``(C, H, W)``.

        Returns the centre ``height x width`` of the mean image when there is
        one (defaults to ``size``), else the per-channel mean ``(C, 1, 1)``.
        """
        if self.mean_image is None:
            return np.asarray(self.mean, np.float32).reshape(-1, 1, 1)
        h = self.size[0] if height is None else height
        w = self.size[1] if width is None else width
        _, mh, mw = self.mean_image.shape
        if h > mh or w > mw:
            raise ShapeError(
                f"Input is {h}x{w} but the mean image is only {mh}x{mw}; a mean image fixes the input size."
            )
        top, left = (mh - h) // 2, (mw - w) // 2
        return self.mean_image[:, top:top + h, left:left + w]

    def normalize(self, x):
        """Normalise a batch already in network colour order and raw pixel units.

        Parameters
        ----------
        x : numpy.ndarray or mxnet.nd.NDArray
            ``(C, H, W)`` or ``(N, C, H, W)``, float, 0–255, network colour order.

        Returns
        -------
        Same type as ``x``
            ``(x - mean) / std * scale``.
        """
        height, width = x.shape[-2], x.shape[-1]
        mean = self.mean_array(height, width)
        factor = (self.scale / np.asarray(self.std, np.float32)).reshape(-1, 1, 1)
        if isinstance(x, np.ndarray):
            return ((x.astype(np.float32, copy=False) - mean) * factor).astype(np.float32, copy=False)
        import mxnet as mx

        m = mx.nd.array(mean, ctx=x.context)
        f = mx.nd.array(factor, ctx=x.context)
        if x.ndim == 4:
            m, f = m.expand_dims(0), f.expand_dims(0)
        return mx.nd.broadcast_mul(mx.nd.broadcast_sub(x.astype("float32"), m), f)

    def crop_box(self, height: int, width: int) -> tuple:
        """The evaluation geometry for a ``height x width`` image.

        Returns
        -------
        tuple of int
            ``(resized_height, resized_width, top, left)``: the image is
            resized to the first two, then the ``size`` crop starts at
            ``(top, left)``.

        Examples
        --------
        >>> Preprocess(size=(224, 224), resize=256).crop_box(480, 640)
        (256, 341, 16, 58)
        """
        out_h, out_w = self.size
        target = self.resize if self.resize is not None else max(out_h, out_w)
        if self.resize_mode == "stretch":
            new_h = new_w = target
        elif height <= width:
            new_h, new_w = target, max(1, round(width * target / height))
        else:
            new_h, new_w = max(1, round(height * target / width)), target
        new_h, new_w = max(new_h, out_h), max(new_w, out_w)
        return new_h, new_w, (new_h - out_h) // 2, (new_w - out_w) // 2

    def resize_crop(self, image: np.ndarray, *, source: str = "<image>") -> np.ndarray:
        """Apply the evaluation geometry to an ``(H, W, C)`` image: resize, then centre crop ``size``.

        The resize is refused (:func:`~finetune.data._image_checks.check_geometry`,
        naming ``source``) when it would exceed ``finetune.data.MAX_IMAGE_PIXELS``
        or enlarge an image of extreme aspect ratio.
        """
        h, w = image.shape[:2]
        check_geometry(w, h, lambda hh, ww: self.crop_box(hh, ww)[:2], source=source)
        new_h, new_w, top, left = self.crop_box(h, w)
        if (new_h, new_w) != (h, w):
            image = cv2.resize(image, (new_w, new_h), interpolation=_INTERP[self.interpolation])
        return image[top:top + self.size[0], left:left + self.size[1]]

    def transform(self, image: np.ndarray, color: str = "RGB") -> np.ndarray:
        """Prepare one decoded image for the network (evaluation mode).

        Parameters
        ----------
        image : numpy.ndarray
            ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``, uint8 (or float in 0–255).
        color : {"RGB", "BGR"}
            Colour order of ``image`` (OpenCV's ``imread`` gives ``"BGR"``).

        Returns
        -------
        numpy.ndarray
            ``(C, H, W)`` float32, normalised, in the network's colour order.
        """
        image = to_color(image, color, self.color)
        image = self.resize_crop(image)
        chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
        return self.normalize(chw)

    def read(self, path) -> np.ndarray:
        """Read an image file and :meth:`transform` it: ``(C, H, W)`` float32."""
        image = self.resize_crop(read_image(path, self.color), source=os.fspath(path))
        chw = np.ascontiguousarray(image.transpose(2, 0, 1), np.float32)
        return self.normalize(chw)

    # ------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """A JSON-ready dict of every field except ``mean_image`` (saved separately)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "mean_image"}
        for key in ("size", "mean", "std"):
            d[key] = list(d[key])
        d["has_mean_image"] = self.mean_image is not None
        return d

    @staticmethod
    def check_dict(d, where: str = "Preprocess dict", error=ConfigError) -> None:
        """Raise ``error`` unless ``d`` is a dict of fields whose values meet :data:`CONSTRAINTS`.

        What :meth:`from_dict` checks before building anything, for readers
        that check a whole file (a model directory's ``config.json``) before
        reading any part of it. The message names ``where`` and the key.

        Examples
        --------
        >>> Preprocess.check_dict({"size": [224, 224], "color": "BGR"})
        >>> Preprocess.check_dict({"colour": "BGR"}, "config.json of 'm'")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        finetune.errors.ConfigError: The config.json of 'm' has an unknown key 'preprocess.colour'; known: ...
        """
        from .._validation import describe, satisfies, show

        if not isinstance(d, dict):
            raise error(f"The {where} has 'preprocess' = {show(d)}; expected an object with the fields "
                        f"{', '.join(k for k in CONSTRAINTS if k != 'mean_image')}.")
        known = dict(CONSTRAINTS, has_mean_image=Options([True, False]))
        known.pop("mean_image")
        for key, value in d.items():
            if key not in known:
                raise error(f"The {where} has an unknown key 'preprocess.{key}'; known: {', '.join(sorted(known))}.")
            if not satisfies(value, known[key]):
                raise error(f"The {where} has 'preprocess.{key}' = {show(value)}; expected {describe(known[key])}.")

    @classmethod
    def from_dict(cls, d: dict, mean_image: np.ndarray | None = None, *, where: str = "Preprocess dict",
                  error=ConfigError) -> "Preprocess":
        """Rebuild from :meth:`to_dict` output (plus the mean image, if it had one).

        Every key is checked against the constraints the constructor uses
        (:data:`CONSTRAINTS`) before anything is built; ``where`` names the
        source in the message (``"config.json of 'model'"``) and ``error`` is
        the exception raised (a reader of model directories passes
        :class:`~finetune.errors.ModelError`).

        Examples
        --------
        >>> Preprocess.from_dict({"size": "abc"}, where="config.json of 'm'")
        Traceback (most recent call last):
        ...
        finetune.errors.ConfigError: The config.json of 'm' has 'preprocess.size' = 'abc'; expected an int in [1, 4096] or a sequence of 2 items, each an int in [1, 4096].
        """
        cls.check_dict(d, where, error)
        d = dict(d)
        has_mean_image = d.pop("has_mean_image", False)
        if has_mean_image and mean_image is None:
            raise error(f"The {where} says the preprocessing has a mean image; pass it as 'mean_image'.")
        try:
            return cls(**d, mean_image=mean_image)
        except ConfigError as exc:  # a combination of fields that do not fit (mean and std lengths, ...)
            raise error(f"The {where}: {exc}") from None

    def save(self, path) -> None:
        """Save as JSON at ``path``; a mean image goes to ``<path>.mean.npy`` beside it."""
        path = os.fspath(path)
        if self.mean_image is None:
            with atomic_open(path, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, indent=2)
            return
        with atomic_files([path, path + ".mean.npy"], ["w", "wb"], encoding="utf-8") as (f, fm):
            json.dump(self.to_dict(), f, indent=2)
            np.save(fm, self.mean_image)

    @classmethod
    def load(cls, path) -> "Preprocess":
        """Load what :meth:`save` wrote."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise MissingFileError(f"Preprocess file {path!r} does not exist.")
        settled([path, path + ".mean.npy"], what="preprocessing")  # the JSON and its mean image: one save's
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                d = json.load(f)
        except ValueError as exc:
            raise DataError(f"The preprocess file {path!r} is not valid JSON: {exc}") from None
        mean_image = None
        if isinstance(d, dict) and d.get("has_mean_image"):
            mpath = path + ".mean.npy"
            if not os.path.exists(mpath):
                raise MissingFileError(f"The preprocess file {path!r} has a mean image, but {mpath!r} is missing.")
            mean_image = read_npy(mpath, what="mean image", kinds="fiu", ndim=3)
        return cls.from_dict(d, mean_image, where=f"preprocess file {path!r}")
