"""The one place that interprets device arguments.

``ctx=None`` means the current MXNet context, resolved when the call is made
(never at import time); a single context or a list of contexts is accepted
everywhere; a list means data-parallel over those devices. A GPU that is not
there raises :class:`~finetune.errors.DeviceError` — there is no silent
fallback to the CPU.

Device ids are checked where they enter: a negative id, a GPU that MXNet
does not see, or more CPU devices than :func:`max_cpu_devices` raise a
typed error before anything is allocated.
"""

from __future__ import annotations

import os

import mxnet as mx

from .errors import ConfigError, DeviceError

__all__ = ["MIN_CPU_DEVICES", "max_cpu_devices", "parse_ctx", "resolve_ctx"]

#: CPU contexts are MXNet's simulated devices: a few more than the cores are fine (``"cpu*2"`` tests
#: data-parallel training on one core), so the limit is the core count but never below this.
MIN_CPU_DEVICES = 8


def max_cpu_devices() -> int:
    """How many CPU contexts (ids ``0 .. n-1``) may be asked for: the core count, at least :data:`MIN_CPU_DEVICES`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(cores, MIN_CPU_DEVICES)


def _check_ids(ctxs, spec) -> None:
    """Refuse negative device ids, a device named twice, and CPU ids (or counts) beyond :func:`max_cpu_devices`."""
    for c in ctxs:
        if c.device_id < 0:
            raise ConfigError(f"Device {c} in {spec!r} has a negative id; device ids start at 0.")
    seen = set()
    for c in ctxs:
        if (c.device_type, c.device_id) in seen:
            n = sum(1 for d in ctxs if d.device_type == c.device_type)
            raise ConfigError(f"{spec!r} names {c} twice; each device can be used once. To train on several "
                              f"{c.device_type.upper()} devices name different ids, e.g. '{c.device_type}*{n}' "
                              f"or '{c.device_type}:{','.join(str(i) for i in range(n))}'.")
        seen.add((c.device_type, c.device_id))
    limit = max_cpu_devices()
    cpus = [c for c in ctxs if c.device_type == "cpu"]
    if cpus and (len(cpus) > limit or max(c.device_id for c in cpus) >= limit):
        raise DeviceError(f"{spec!r} asks for {len(cpus)} CPU device(s) up to id "
                          f"{max(c.device_id for c in cpus)}; this machine allows ids 0 to {limit - 1} "
                          f"({limit} CPU devices: its cores, at least {MIN_CPU_DEVICES}).")


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
    ConfigError
        A negative device id, a device named twice, or no device.
    DeviceError
        A GPU is asked for but MXNet sees fewer GPUs, or more CPU devices
        than :func:`max_cpu_devices`.

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
    _check_ids(ctxs, ctx)
    gpus = [c for c in ctxs if c.device_type == "gpu"]
    if gpus:
        available = mx.context.num_gpus()
        wanted = max(c.device_id for c in gpus) + 1
        if wanted > available:
            raise DeviceError(
                f"Device {gpus[-1]} was asked for but MXNet sees {available} GPU(s). "
                "Install MXNet's GPU build (pip uninstall mxnet && pip install mxnet-cu112==1.9.1) on a machine "
                "with a CUDA 11 GPU, or use the CPU (ctx='cpu', --ctx cpu)."
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

    Raises
    ------
    ConfigError
        The text cannot be parsed, an id is negative, or a device is named twice.
    DeviceError
        More CPU devices than :func:`max_cpu_devices`.

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
                count = int(count)
                if count < 1 or kind not in ("cpu", "gpu"):
                    raise ValueError
                if count > max_cpu_devices():
                    raise DeviceError(f"{spec!r} asks for {count} {kind.upper()} devices; this machine allows "
                                      f"at most {max_cpu_devices()} (its cores, at least {MIN_CPU_DEVICES}).")
                ctxs.extend(mx.Context(kind, i) for i in range(count))
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
                f"'cpu*2' or 'gpu:0,1,2,3' (ids from 0)."
            ) from None
    _check_ids(ctxs, spec)
    return ctxs
