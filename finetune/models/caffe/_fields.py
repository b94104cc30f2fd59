"""Typed reading of a Caffe layer's parameters: each value checked, each error naming line, layer and field."""

from __future__ import annotations

import math

from ...errors import CaffeFormatError, UnsupportedLayerError
from ._proto import CaffeLayer, Message

__all__ = ["at_least", "bad", "get_bool", "get_enum", "get_ints", "get_num", "pair", "require"]


def bad(layer: CaffeLayer, msg: Message, field: str, want: str, got) -> CaffeFormatError:
    return CaffeFormatError(f"line {msg.line or layer.line}: layer {layer.name!r} ({layer.type}): "
                            f"field {field!r} must be {want}. Got {got!r} instead.")


def get_num(layer, msg, field, default=None, *, kind=float):
    """A numeric field (last value), type-checked, with a clear error."""
    value = msg.get(field, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad(layer, msg, field, "a number", value)
    if not math.isfinite(float(value)):
        raise bad(layer, msg, field, "a finite number", value)
    if kind is int:
        if float(value) != int(value):
            raise bad(layer, msg, field, "an integer", value)
        return int(value)
    return float(value)


def at_least(layer, msg, field, value, low: int):
    """``value`` (an int or a pair of ints), unless a part is below ``low``."""
    for v in (value if isinstance(value, tuple) else (value,)):
        if v < low:
            raise bad(layer, msg, field, "a positive integer" if low == 1 else f"an integer >= {low}", v)
    return value


def get_ints(layer, msg, field) -> list:
    """A repeated integer field."""
    values = msg.all(field)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad(layer, msg, field, "an integer", v)
    return [int(v) for v in values]


def get_bool(layer, msg, field, default):
    value = msg.get(field, default)
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    raise bad(layer, msg, field, "true or false", value)


def get_enum(layer, msg, field, names: dict, default: str) -> str:
    value = msg.get(field, default)
    numbers = {v: k for k, v in names.items()}
    if isinstance(value, int) and not isinstance(value, bool) and value in numbers:
        return numbers[value]
    if isinstance(value, str) and value in names:
        return value
    raise bad(layer, msg, field, "one of " + ", ".join(names), value)


def require(layer, msg, field, *, kind=int, low=1):
    """A field the layer cannot do without; an int field must be at least ``low`` (``num_output``: 1)."""
    value = get_num(layer, msg, field, kind=kind)
    if value is None:
        raise CaffeFormatError(f"line {msg.line or layer.line}: layer {layer.name!r} ({layer.type}) "
                               f"needs {field!r}.")
    return at_least(layer, msg, field, value, low) if kind is int else value


def pair(layer, msg, field, h_field, w_field, default, *, low=1):
    """Caffe's ``kernel_size`` / ``kernel_h`` + ``kernel_w`` style pairs -> (h, w), each at least ``low``."""
    return at_least(layer, msg, field, _pair_values(layer, msg, field, h_field, w_field, default), low)


def _pair_values(layer, msg, field, h_field, w_field, default):
    h = get_num(layer, msg, h_field, kind=int)
    w = get_num(layer, msg, w_field, kind=int)
    if h is not None or w is not None:
        if h is None or w is None:
            raise CaffeFormatError(f"line {msg.line or layer.line}: layer {layer.name!r}: give both "
                                   f"{h_field!r} and {w_field!r}.")
        return h, w
    values = get_ints(layer, msg, field)
    if not values:
        if default is None:
            raise CaffeFormatError(f"line {msg.line or layer.line}: layer {layer.name!r} ({layer.type}) "
                                   f"needs {field!r} (or {h_field!r} and {w_field!r}).")
        return default, default
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise UnsupportedLayerError(f"Layer {layer.name!r} ({layer.type}) has {len(values)} values of "
                                f"{field!r}; only 2-D (N, C, H, W) layers are supported.")
