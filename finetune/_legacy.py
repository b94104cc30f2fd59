"""What earlier versions of finetune wrote or exported, in one place, and the version that drops it.

Two kinds of compatibility end in finetune :data:`REMOVED_IN`:

* **files of an earlier layout** — a deployment folder with ``deploy.json``
  and ``model-preprocess.json`` instead of ``config.json``, an MXNet
  checkpoint's class names in ``prefix-classes.json``. Their readers call
  :func:`earlier_layout`, which warns with a :class:`FutureWarning` (shown to
  every user) saying how to write the file in today's layout;
* **module aliases** — ``finetune.evaluation``, ``interpret``, ``plots``,
  ``predict`` and ``deploy``, whose names moved to :mod:`finetune.use`; each
  is a :func:`module_alias` that warns with a :class:`DeprecationWarning`.

Examples
--------
>>> import warnings
>>> with warnings.catch_warnings(record=True) as caught:
...     warnings.simplefilter("always")
...     earlier_layout("a deployment folder with deploy.json", "export it again")
>>> str(caught[0].message)  # doctest: +ELLIPSIS
'...deploy.json is an earlier layout, read until finetune 0.3.0; export it again.'
"""

from __future__ import annotations

import importlib
import warnings

__all__ = ["REMOVED_IN", "earlier_layout", "module_alias"]

#: The version that no longer reads earlier layouts nor keeps the module aliases.
REMOVED_IN = "0.3.0"


def earlier_layout(what: str, convert: str, *, stacklevel: int = 3) -> None:
    """Warn that ``what`` (a file or folder of an earlier layout) is read until :data:`REMOVED_IN`.

    ``convert`` says how to write it in today's layout.
    """
    warnings.warn(f"{what} is an earlier layout, read until finetune {REMOVED_IN}; {convert}.", FutureWarning,
                  stacklevel=stacklevel)


def module_alias(alias: str, target: str, names, *, moved=None):
    """The module ``__getattr__`` of ``alias``, a deprecated module whose ``names`` now live in ``target``.

    ``moved`` maps other names to the module that holds them now.
    """
    moved = dict(moved or {}, **{name: target for name in names})

    def __getattr__(name: str):
        if name not in moved:
            raise AttributeError(f"module {alias!r} has no attribute {name!r}")
        home = moved[name]
        also = f" (or finetune.{name})" if home == target else ""
        warnings.warn(f"{alias}.{name} is deprecated and goes in finetune {REMOVED_IN}; use {home}.{name}{also} "
                      "instead.", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(home), name)

    return __getattr__
