"""Settings objects (frozen dataclasses such as ``Recipe``): their repr, copies and checks, alike everywhere.

A settings object shows only what differs from its defaults, a copy with
changed fields refuses a name it does not have (with the nearest names),
and every field is checked against its constraints when the object is made.

Examples
--------
>>> import dataclasses
>>> @dataclasses.dataclass(frozen=True)
... class Knobs:
...     lr: float = 0.1
...     epochs: int = 3
>>> changed_fields(Knobs(epochs=5))
'epochs=5'
>>> replace_fields(Knobs(), epochs=4)
Knobs(lr=0.1, epochs=4)
>>> replace_fields(Knobs(), epoch=4)
Traceback (most recent call last):
...
finetune.errors.UnknownNameError: Unknown Knobs field 'epoch'. Did you mean 'epochs'? Known Knobs fields: epochs, lr.
"""

from __future__ import annotations

import dataclasses

from ._validation import validate
from .errors import UnknownNameError

__all__ = ["changed_fields", "field_values", "replace_fields", "validate_fields"]


def field_values(obj) -> dict:
    """``{name: value}`` of every field of the dataclass instance ``obj``."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def changed_fields(obj, show=repr, same=lambda a, b: a == b) -> str:
    """``"name=value, ..."`` for the fields of ``obj`` that differ from their defaults (for a ``__repr__``)."""
    return ", ".join(f"{f.name}={show(getattr(obj, f.name))}" for f in dataclasses.fields(obj)
                     if not same(getattr(obj, f.name), f.default))


def replace_fields(obj, **changes):
    """A copy of ``obj`` with ``changes``; an unknown name raises :class:`~finetune.errors.UnknownNameError`."""
    names = sorted(f.name for f in dataclasses.fields(obj))
    bad = sorted(set(changes) - set(names))
    if bad:
        raise UnknownNameError(f"{type(obj).__name__} field", bad[0], names)
    return dataclasses.replace(obj, **changes)


def validate_fields(obj, constraints: dict) -> None:
    """Check every field of ``obj`` against ``constraints`` (:func:`~finetune._validation.validate`)."""
    validate(type(obj).__name__, field_values(obj), constraints)
