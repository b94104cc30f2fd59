"""Decoded arrays as images: one image or a batch, and the pixel values finetune reads.

A caller's array is read as what it surely is, or refused with a
:class:`~finetune.errors.ConfigError` saying what to pass: ``(H, W[, C])``
with 1, 3 or 4 channels is one image, ``(N, H, W[, C])`` a batch; a
``(C, H, W)`` tensor, two channels, non-finite pixels and integers outside
0-255 are refused instead of being read as something else.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import ConfigError

__all__ = ["pixels", "split_batch"]


def pixels(value, source: str) -> np.ndarray:
    """A decoded ``(H, W[, C])`` array from an array or NDArray: uint8, or float32 in 0–255."""
    if hasattr(value, "asnumpy"):
        value = value.asnumpy()
    img = np.asarray(value)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[2] not in (1, 3, 4):
        raise ConfigError(
            f"{source} is a (C, H, W) tensor {img.shape}, i.e. already preprocessed; give raw (H, W, C) "
            "images in 0-255 (a RecordDataset is read raw automatically)."
        )
    if img.dtype == np.uint8:
        return img
    if not (np.issubdtype(img.dtype, np.floating) or np.issubdtype(img.dtype, np.integer)) or img.dtype == bool:
        raise ConfigError(f"{source} holds {img.dtype} values; images are uint8 (or float) pixels in 0-255.")
    if np.issubdtype(img.dtype, np.floating):
        if not np.isfinite(img).all():
            raise ConfigError(f"{source} holds NaN or infinite pixels; give finite values in 0-255.")
        if img.size and float(img.max()) <= 1.0 + 1e-6:
            warnings.warn(f"{source}: a float array with values in [0, 1]; finetune expects raw 0-255 "
                          "pixels. Multiply by 255 first.", stacklevel=4)
        return img.astype(np.float32, copy=False)
    if img.size and (int(img.max()) > 255 or int(img.min()) < 0):
        raise ConfigError(f"{source} is a {img.dtype} array with values from {int(img.min())} to {int(img.max())}; "
                          "pixels are 0-255 (for 16-bit images: x // 257, as uint8).")
    return img.astype(np.uint8)


def split_batch(array: np.ndarray) -> list:
    """One image ``(H, W[, C])`` or a batch ``(N, H, W[, C])`` as a list of images.

    A 3-D array is one image when its last axis holds 1, 3 or 4 channels, a
    batch of grey images otherwise, except the layouts that are surely
    something else: ``(C, H, W)`` (refused by :func:`pixels`) and 2 channels.
    """
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4)):
        return [array]
    if array.ndim == 3 and (array.shape[0] in (1, 3) or array.shape[2] == 2):
        pixels(array, "The image array")  # (C, H, W): refused, naming the layout
        raise ConfigError(f"Image arrays must be (H, W[, C]) with 1, 3 or 4 channels, or (N, H, W[, C]). Got shape "
                          f"{array.shape} instead.")
    if array.ndim in (3, 4):
        return list(array)
    raise ConfigError(f"Image arrays must be (H, W[, C]) or (N, H, W[, C]). Got shape {array.shape} instead.")
