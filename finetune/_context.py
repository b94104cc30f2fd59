"""The one place that interprets device arguments.

``ctx=None`` means the current MXNet context, resolved when the call is made
(never at import time); a single context or a list of contexts is accepted
everywhere; a list means data-parallel over those devices. A GPU that is not
there raises :class:`~finetune.errors.DeviceError` — there is no silent
fallback to the CPU.
"""

from __future__ import annotations

import mxnet as mx

from .errors import ConfigError, DeviceError

__all__ = ["parse_ctx", "resolve_ctx"]


def resolve_ctx(ctx=None) -> list:
    """Turn a device argument into a non-empty list of ``mx.Context``.

    Parameters
    ----------
    ctx : None, mx.Context, str or list of those
        ``None`` is the current context (``mx.current_context()``); a string
        is parsed by :func:`parse_ctx`.

    Returns
    -------
    list of mx.Context

    Raises
    ------
    DeviceError
        A GPU is asked for but MXNet sees fewer GPUs.

    Examples
    --------
    >>> resolve_ctx(None)
    [cpu(0)]
    >>> resolve_ctx([mx.cpu(0), mx.cpu(1)])
    [cpu(0), cpu(1)]
    """
    if ctx is None:
        ctxs = [mx.current_context()]
    elif isinstance(ctx, str):
        ctxs = parse_ctx(ctx)
    elif isinstance(ctx, mx.Context):
        ctxs = [ctx]
    else:
        ctxs = []
        for c in ctx:
            ctxs.extend(resolve_ctx(c))
    if not ctxs:
        raise ConfigError("The 'ctx' parameter must name at least one device. Got an empty list.")
    gpus = [c for c in ctxs if c.device_type == "gpu"]
    if gpus:
        available = mx.context.num_gpus()
        wanted = max(c.device_id for c in gpus) + 1
        if wanted > available:
            raise DeviceError(
                f"Device {gpus[-1]} was asked for but MXNet sees {available} GPU(s). "
                "Install the GPU build (pip install 'finetune[gpu]') on a machine with a "
                "CUDA 11 GPU, or pass ctx='cpu'."
            )
    return ctxs


def parse_ctx(spec: str) -> list:
    """Parse a device string such as ``"cpu"``, ``"cpu:0,cpu:1"`` or ``"gpu:0,1"``.

    Parameters
    ----------
    spec : str
        Comma-separated devices. ``"cpu"`` alone is ``cpu(0)``; ``"cpu:2"``
        is ``cpu(2)``; a bare number after a ``gpu``/``cpu`` item reuses that
        device type (``"gpu:0,1"`` is two GPUs). ``"cpu*2"`` is shorthand for
        ``cpu(0), cpu(1)``.

    Returns
    -------
    list of mx.Context

    Examples
    --------
    >>> parse_ctx("cpu:0,1")
    [cpu(0), cpu(1)]
    >>> parse_ctx("cpu*2")
    [cpu(0), cpu(1)]
    """
    ctxs = []
    kind = None
    for item in str(spec).replace(" ", "").split(","):
        if not item:
            continue
        try:
            if "*" in item:
                kind, count = item.split("*")
                ctxs.extend(mx.Context(kind, i) for i in range(int(count)))
                continue
            if ":" in item:
                kind, index = item.split(":")
            elif item.isdigit() and kind is not None:
                index = item
            else:
                kind, index = item, "0"
            if kind not in ("cpu", "gpu"):
                raise ValueError
            ctxs.append(mx.Context(kind, int(index)))
        except ValueError:
            raise ConfigError(
                f"Cannot parse device {item!r} in {spec!r}. Use e.g. 'cpu', 'cpu:0,1', "
                "'cpu*2' or 'gpu:0,1,2,3'."
            ) from None
    return ctxs
