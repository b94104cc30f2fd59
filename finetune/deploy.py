"""Deprecated alias of :mod:`finetune.use`; import from ``finetune`` or ``finetune.use`` instead.

Kept so that code written for earlier versions (``from finetune.deploy import ...``)
keeps working; every access warns with a :class:`DeprecationWarning`.
"""

from __future__ import annotations

import warnings

from .use import _deploy

_MODULES = (_deploy,)


def __getattr__(name: str):
    if not name.startswith("__"):
        for module in _MODULES:
            if hasattr(module, name):
                warnings.warn(f"finetune.deploy.{name} is deprecated; use finetune.use.{name} "
                              f"(or finetune.{name}) instead.", DeprecationWarning, stacklevel=2)
                return getattr(module, name)
    raise AttributeError(f"module 'finetune.deploy' has no attribute {name!r}")
