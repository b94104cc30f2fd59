"""The retrieval geometry of feature extraction.

Conv layers take the whole image with its aspect ratio kept (shorter side
resized per the model's :class:`~finetune.Preprocess`, no centre crop); fully
connected layers need the network's fixed input, so those use the
preprocessing's resize + centre crop. The images themselves come from
:class:`finetune.data.ImageSource`, the one reader of every input form.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..data import check_geometry

__all__ = ["resize_keep_aspect"]


def resize_keep_aspect(image: np.ndarray, target: float, side: str = "shorter",
                       interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Resize ``(H, W, C)`` so that its ``side`` ("shorter" or "longer") is ``target`` pixels (aspect kept).

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W, C)`` (or ``(H, W)``) image.
    target : float
        Length in pixels the chosen side gets.
    side : {"shorter", "longer"}
        Which side is resized to ``target``.
    interpolation : int
        OpenCV interpolation flag.

    Returns
    -------
    numpy.ndarray
        The resized image (``image`` itself when the size does not change).

    Examples
    --------
    >>> import numpy as np
    >>> resize_keep_aspect(np.zeros((40, 80, 3), np.uint8), 20).shape
    (20, 40, 3)
    """
    h, w = image.shape[:2]

    def geometry(h, w):
        f = float(target) / (min(h, w) if side == "shorter" else max(h, w))
        return max(1, int(round(h * f))), max(1, int(round(w * f)))

    check_geometry(w, h, geometry)
    new_h, new_w = geometry(h, w)
    if (new_h, new_w) == (h, w):
        return image
    return cv2.resize(image, (new_w, new_h), interpolation=interpolation)
