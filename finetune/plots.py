"""Deprecated alias of :mod:`finetune.use`; import from ``finetune`` or ``finetune.use`` instead.

Kept so that code written for earlier versions (``from finetune.plots import ...``)
keeps working; every access warns with a :class:`DeprecationWarning`.
"""

from __future__ import annotations

import warnings

from . import use

# the public names of finetune.use this module held
_NAMES = ("load_history", "plot_confusion_matrix", "plot_errors", "plot_gradcam",
          "plot_history", "plot_predictions")


def __getattr__(name: str):
    if name in _NAMES:
        warnings.warn(f"finetune.plots.{name} is deprecated; use finetune.use.{name} "
                      f"(or finetune.{name}) instead.", DeprecationWarning, stacklevel=2)
        return getattr(use, name)
    raise AttributeError(f"module 'finetune.plots' has no attribute {name!r}")
