"""The restricted unpickler of :func:`~finetune.models.zoo.read_torch_state_dict`.

The only globals a ``.pth`` pickle may name are the handful that rebuild
tensors (``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage``, ...) and
``collections.OrderedDict``; for those :class:`_RestrictedUnpickler` returns
our own inert, frozen stand-ins (:class:`_Storage`, :class:`_TensorRef`, ...),
never the real object the file names. Any other global raises
:class:`~finetune.errors.UnsafeFileError` before the pickle can call it.
Reading the containers (zip or legacy) and turning the stand-ins into arrays
is ``_torch_pickle.py``'s.
"""

from __future__ import annotations

import collections
import pickle

import numpy as np

from ...errors import ModelError, UnsafeFileError

__all__ = ["_Storage", "_StorageView", "_TensorRef", "_unpickle"]


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
