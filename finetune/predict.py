"""Deprecated alias of :mod:`finetune.use`; import from ``finetune`` or ``finetune.use`` instead.

Kept so that code written for earlier versions (``from finetune.predict import ...``)
keeps working; every access warns with a :class:`DeprecationWarning`.
"""

from __future__ import annotations

import warnings

from . import use

# the public names of finetune.use this module held
_NAMES = ("Prediction", "Predictions", "Predictor", "load_name_map")


def __getattr__(name: str):
    if name == "IMAGE_EXTENSIONS":  # now the one list of finetune.data
        from .data import IMAGE_EXTENSIONS

        warnings.warn("finetune.predict.IMAGE_EXTENSIONS is deprecated; use finetune.data.IMAGE_EXTENSIONS "
                      "instead.", DeprecationWarning, stacklevel=2)
        return IMAGE_EXTENSIONS
    if name in _NAMES:
        warnings.warn(f"finetune.predict.{name} is deprecated; use finetune.use.{name} "
                      f"(or finetune.{name}) instead.", DeprecationWarning, stacklevel=2)
        return getattr(use, name)
    raise AttributeError(f"module 'finetune.predict' has no attribute {name!r}")
