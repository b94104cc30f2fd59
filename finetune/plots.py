"""Deprecated alias of :mod:`finetune.use`; import from ``finetune`` or ``finetune.use`` instead.

Kept so that code written for earlier versions (``from finetune.plots import ...``)
keeps working; every access warns with a :class:`DeprecationWarning`.
"""

from __future__ import annotations

import warnings

from .use import _confusion_plot, _figures, _history_plot, _plots

_MODULES = (_plots, _history_plot, _confusion_plot, _figures)


def __getattr__(name: str):
    if not name.startswith("__"):
        for module in _MODULES:
            if hasattr(module, name):
                warnings.warn(f"finetune.plots.{name} is deprecated; use finetune.use.{name} "
                              f"(or finetune.{name}) instead.", DeprecationWarning, stacklevel=2)
                return getattr(module, name)
    raise AttributeError(f"module 'finetune.plots' has no attribute {name!r}")
