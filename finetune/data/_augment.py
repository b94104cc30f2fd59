"""Training augmentation on numpy arrays with OpenCV.

Everything works on ``(H, W, 3)`` uint8/float32 arrays in one process per
worker: decoding with OpenCV (the shared decoder's library), cropping by
slicing, one ``cv2.resize``, and colour changes as a few vectorised float ops.
JPEG records are decoded at reduced size (libjpeg DCT scaling, ``cv2.
IMREAD_REDUCED_COLOR_*``) whenever the crop would be shrunk by two or more
anyway: the result is as sharp and the decode several times faster.
"""

from __future__ import annotations

import dataclasses
import math
from numbers import Real

import cv2
import numpy as np

from .._fields import changed_fields
from .._validation import Interval, Sequence, satisfies
from ..errors import ConfigError, check_range
from ._image_checks import _jpeg_info, check_geometry, refuse_unsafe, sniff_format

__all__ = ["Augment"]

# AlexNet's PCA lighting of ImageNet RGB pixels (0-255 units), as in gluon/gluoncv.
_EIGVAL = np.array([55.46, 4.794, 1.148], np.float32)
_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                    [-0.5808, -0.0045, -0.8140],
                    [-0.5836, -0.6948, 0.4203]], np.float32)
_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


@dataclasses.dataclass(frozen=True)
class Augment:
    """Training-time augmentation settings for :class:`~finetune.RecordDataset`.

    The output size, colour order and normalisation come from the dataset's
    :class:`~finetune.Preprocess`; this object only says how to vary the images.

    Parameters
    ----------
    random_resized_crop : bool
        Crop a random area (fraction ``scale`` of the image, aspect ratio in
        ``ratio``) and resize it to the input size (Inception-style). When
        ``False``, the image is resized as in evaluation and then cropped at
        a random position (``random_crop=True``) or at the centre.
    scale : tuple of float
        Range of the crop area, as a fraction of the image area.
    ratio : tuple of float
        Range of the crop aspect ratio (width / height).
    random_crop : bool
        Without ``random_resized_crop``: crop ``size`` at a random position
        after resizing the shorter side to ``Preprocess.resize``.
    mirror : bool
        Flip left-right with probability 1/2.
    rotation : float
        Rotate by a uniform random angle in ``[-rotation, rotation]`` degrees.
    brightness, contrast, saturation : float
        Colour jitter: multiply by ``1 + U(-v, v)`` (contrast and saturation
        blend with the grey image/mean).
    hue : float
        Rotate the hue by ``U(-hue, hue) * 180`` degrees (in YIQ space).
    pca_noise : float
        Standard deviation of AlexNet-style PCA lighting noise.
    erasing : float
        Probability of random erasing: replace a random rectangle (2-25 % of
        the image area, aspect ratio 0.3-3.3) by uniform noise, so the network
        cannot rely on any one part of an object.

    Examples
    --------
    >>> Augment(rotation=15, brightness=0.4)
    Augment(rotation=15, brightness=0.4)
    """

    random_resized_crop: bool = True
    scale: tuple = (0.08, 1.0)
    ratio: tuple = (3 / 4, 4 / 3)
    random_crop: bool = False
    mirror: bool = True
    rotation: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    pca_noise: float = 0.0
    erasing: float = 0.0

    def __post_init__(self):
        owner = "Augment"
        for name in ("scale", "ratio"):
            raw = getattr(self, name)
            if not satisfies(raw, Sequence(Interval(Real, 0, None, closed="neither"), lengths=(2,))):
                raw = (0, 0)  # refused below with the same message (NaN, infinities, text, wrong lengths)
            value = tuple(float(v) for v in raw)
            if len(value) != 2 or not 0 < value[0] <= value[1]:
                raise ConfigError(f"The {name!r} parameter of {owner} must be (low, high) with "
                                  f"0 < low <= high. Got {getattr(self, name)!r} instead.")
            object.__setattr__(self, name, value)
        check_range(owner, "scale", self.scale[1], 0, 1, low_open=True)
        check_range(owner, "rotation", self.rotation, 0, 180)
        for name in ("brightness", "contrast", "saturation", "hue", "pca_noise"):
            check_range(owner, name, getattr(self, name), 0, None)
        check_range(owner, "erasing", self.erasing, 0, 1)

    def __repr__(self) -> str:
        return f"Augment({changed_fields(self)})"

    @property
    def jitters_colour(self) -> bool:
        """True when any colour change is on."""
        return bool(self.brightness or self.contrast or self.saturation or self.hue or self.pca_noise)


def decode_bgr(buf: bytes, want_h: int, want_w: int, crop=None, source: str = "<bytes>", resize=None):
    """Decode to BGR uint8, at reduced size when the wanted region allows it.

    ``crop`` is a function ``(h, w) -> (top, left, ch, cw)`` choosing a region
    of the full-size image; it is called with the full size (from the JPEG
    header) so the choice is identical whatever the decode size. Returns
    ``(image, (top, left, ch, cw))`` in the coordinates of the returned image,
    or ``(None, None)`` when OpenCV cannot decode it. ``resize`` is the
    resize ``(h, w) -> (new_h, new_w)`` the caller will make, checked with
    the header's size.

    Raises
    ------
    ImageTooLargeError, ImageDecodeError
        From :func:`~finetune.data._image_checks.refuse_unsafe`, before decoding.
    """
    refuse_unsafe(buf, source, resize=resize)
    arr = np.frombuffer(buf, np.uint8)
    info = _jpeg_info(buf) if sniff_format(buf) == "jpeg" else None
    if info is not None:
        h, w = info[0], info[1]
        region = crop(h, w) if crop else (0, 0, h, w)
        factor = min(region[2] / want_h, region[3] / want_w)
        r = 8 if factor >= 8 else 4 if factor >= 4 else 2 if factor >= 2 else 1
        img = cv2.imdecode(arr, _REDUCED[r] if r > 1 else cv2.IMREAD_COLOR)
        if img is None:
            return None, None
        if r > 1:
            sy, sx = img.shape[0] / h, img.shape[1] / w
            top, left, ch, cw = region
            region = (int(top * sy), int(left * sx), max(1, round(ch * sy)), max(1, round(cw * sx)))
        return img, region
    img = cv2.imdecode(arr, cv2.IMREAD_COLOR)
    if img is None:
        return None, None
    h, w = img.shape[:2]
    return img, (crop(h, w) if crop else (0, 0, h, w))


def random_area(rng, scale, ratio):
    """A crop chooser ``(h, w) -> (top, left, ch, cw)`` for a random resized crop."""

    def choose(h, w):
        area = h * w
        log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                return rng.randint(0, h - ch + 1), rng.randint(0, w - cw + 1), ch, cw
        # fall back to a centre crop with the ratio clipped into range
        in_ratio = w / h
        if in_ratio < ratio[0]:
            cw, ch = w, int(round(w / ratio[0]))
        elif in_ratio > ratio[1]:
            ch, cw = h, int(round(h * ratio[1]))
        else:
            ch, cw = h, w
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    return choose


def shorter_side(h, w, target):
    """Size ``(new_h, new_w)`` with the shorter side at ``target``."""
    if h <= w:
        return target, max(target, round(w * target / h))
    return max(target, round(h * target / w)), target


def rotate(img, degrees):
    """Rotate around the centre, filling the corners by reflection."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def jitter_colour(img, aug: Augment, rng, bgr: bool):
    """Brightness, contrast, saturation, hue and PCA lighting on a float32 HWC image."""
    img = img.astype(np.float32)
    luma = np.array([0.114, 0.587, 0.299] if bgr else [0.299, 0.587, 0.114], np.float32)
    if aug.brightness:
        img *= 1 + rng.uniform(-aug.brightness, aug.brightness)
    if aug.contrast:
        alpha = 1 + rng.uniform(-aug.contrast, aug.contrast)
        mean = float((img @ luma).mean())
        img = img * alpha + mean * (1 - alpha)
    if aug.saturation:
        alpha = 1 + rng.uniform(-aug.saturation, aug.saturation)
        grey = (img @ luma)[:, :, None]
        img = img * alpha + grey * (1 - alpha)
    if aug.hue:
        theta = rng.uniform(-aug.hue, aug.hue) * math.pi
        c, s = math.cos(theta), math.sin(theta)
        to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])
        rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
        m = np.linalg.inv(to_yiq) @ rot @ to_yiq
        if bgr:
            m = m[::-1, ::-1]
        img = cv2.transform(img, m.astype(np.float32))
    if aug.pca_noise:
        alpha = rng.normal(0, aug.pca_noise, 3).astype(np.float32)
        rgb = _EIGVEC @ (alpha * _EIGVAL)
        img += rgb[::-1] if bgr else rgb
    return np.clip(img, 0, 255, out=img)


def train_crop(buf, aug: Augment, pre, rng, source: str = "<bytes>"):
    """Decode and geometrically augment one record: ``(H, W, 3)`` BGR array of ``pre.size``.

    ``None`` when OpenCV cannot decode ``buf``; raises as :func:`decode_bgr`.
    """
    out_h, out_w = pre.size
    if aug.random_resized_crop:
        img, region = decode_bgr(buf, out_h, out_w, random_area(rng, aug.scale, aug.ratio), source)
        if img is None:
            return None
        top, left, ch, cw = region
        img = cv2.resize(img[top:top + ch, left:left + cw], (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    else:
        target = pre.resize if pre.resize is not None else max(out_h, out_w)

        def geometry(h, w):
            nh, nw = (target, target) if pre.resize_mode == "stretch" else shorter_side(h, w, target)
            return max(nh, out_h), max(nw, out_w)

        img, _ = decode_bgr(buf, target, target, source=source, resize=geometry)
        if img is None:
            return None
        h, w = img.shape[:2]
        nh, nw = geometry(h, w)
        if (nh, nw) != (h, w):
            check_geometry(w, h, geometry, source=source)
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        if aug.random_crop:
            top, left = rng.randint(0, nh - out_h + 1), rng.randint(0, nw - out_w + 1)
        else:
            top, left = (nh - out_h) // 2, (nw - out_w) // 2
        img = img[top:top + out_h, left:left + out_w]
    if aug.mirror and rng.randint(2):
        img = cv2.flip(np.ascontiguousarray(img), 1)
    if aug.rotation:
        img = rotate(np.ascontiguousarray(img), rng.uniform(-aug.rotation, aug.rotation))
    if aug.jitters_colour:
        img = jitter_colour(img, aug, rng, bgr=True)
    if aug.erasing and rng.uniform() < aug.erasing:
        img = erase(np.ascontiguousarray(img), rng)
    return img


def erase(img, rng, scale=(0.02, 0.25), ratio=(0.3, 3.3)):
    """Random erasing: a random rectangle of ``img`` (HWC) replaced by uniform noise, in place."""
    h, w = img.shape[:2]
    top, left, eh, ew = random_area(rng, scale, ratio)(h, w)
    if (eh, ew) == (h, w):  # no rectangle of that area fits: leave the image alone
        return img
    img[top:top + eh, left:left + ew] = rng.randint(0, 256, (eh, ew, img.shape[2])).astype(img.dtype)
    return img


def eval_crop(buf, pre, source: str = "<bytes>"):
    """Decode and apply the evaluation geometry of ``pre``: ``(H, W, 3)`` BGR.

    Decodes at full size, so the result equals :meth:`Preprocess.transform`'s.
    ``None`` when OpenCV cannot decode ``buf``; raises as :func:`decode_bgr`.
    """
    refuse_unsafe(buf, source, resize=lambda h, w: pre.crop_box(h, w)[:2])
    img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return None
    return pre.resize_crop(img, source=source)
