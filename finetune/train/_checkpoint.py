"""Checkpoint file format: a zip of JSON and MXNet arrays, read without pickle.

MXNet's ``gluon.Trainer.save_states`` pickles the optimizer and its state,
and ``load_states`` unpickles it, so a checkpoint received from someone else
could run code. Here the optimizer state is split into

* ``optimizer.arrays`` -- every per-parameter state array (momentum, Adam's
  moments, float32 master weights), written with ``mx.nd.save``, whose reader
  only builds arrays;
* ``optimizer.json`` -- the state's structure (``None`` / array / tuple per
  parameter index) and the optimizer's scalar attributes (learning rate,
  update counts, ...).

Restoring writes those values into the freshly created optimizer and
updaters, which gives the same arithmetic as the pickled objects did, so
resuming stays bit-identical. Every member is validated before anything is
restored; a malformed file raises :class:`~finetune.errors.CheckpointError`
naming it, a file carrying a pickle raises
:class:`~finetune.errors.UnsafeFileError`. Written by hand because MXNet has
no pickle-free form of its optimizer state.
"""

from __future__ import annotations

import json
import os
import zipfile

import mxnet as mx

from ..errors import CheckpointError, UnsafeFileError

__all__ = ["FORMAT", "check_array_file", "optimizer_state", "read_checkpoint", "restore_optimizer_state"]

#: Version written into ``state.json``; older versions held a pickle and are refused.
FORMAT = 2
MEMBERS = ("state.json", "model.params", "optimizer.json", "optimizer.arrays")
#: Members a checkpoint may add: the weight average of ``Trainer(ema=...)``, and the callbacks' arrays
#: (keyed ``"<index of the callback>:<name>"``, e.g. the best epoch's weights of ``KeepBest``).
OPTIONAL = ("ema.arrays", "callbacks.arrays")
#: Uncompressed size the members may declare, as a multiple of the file's size.
MAX_EXPANSION = 64
_SKIP = {"param_dict", "idx2name", "sym_info", "lr_scheduler", "_index_update_count",
         "_all_index_update_counts", "lr_mult", "wd_mult", "aggregate_num"}  # the last: how, not what
_PICKLE_MAGIC = (b"\x80", b"(", b"]", b"}")
_MAX_DEPTH = 8


# ------------------------------------------------------------------ saving
def optimizer_state(gluon_trainer) -> tuple[dict, dict]:
    """The optimizer state of ``gluon_trainer`` as ``(json_dict, arrays)``.

    Parameters
    ----------
    gluon_trainer : mxnet.gluon.Trainer
        Created with ``update_on_kvstore=False``; the first updater's state is
        saved (every device's updater holds the same values).

    Returns
    -------
    meta : dict
        JSON-serialisable structure and scalars.
    arrays : dict of str to NDArray
        The state arrays, keyed as referenced from ``meta``.
    """
    if not gluon_trainer._kv_initialized:
        gluon_trainer._init_kvstore()
    if gluon_trainer._params_to_init:
        gluon_trainer._init_params()
    updater = gluon_trainer._updaters[0]
    opt = updater.optimizer
    arrays: dict = {}

    def tree(value, key):
        if value is None:
            return None
        if isinstance(value, mx.nd.NDArray):
            arrays[key] = value
            return {"array": key}
        if isinstance(value, (tuple, list)):
            return {"tuple" if isinstance(value, tuple) else "list":
                    [tree(v, f"{key}.{i}") for i, v in enumerate(value)]}
        raise CheckpointError(f"Cannot save optimizer state of type {type(value).__name__}.")

    states = [[idx, tree(st, f"s{idx}")] for idx, st in updater.states.items()]
    counts = [[dev, sorted(c.items())] for dev, c in opt._all_index_update_counts.items()]
    current = next((dev for dev, c in opt._all_index_update_counts.items()
                    if c is opt._index_update_count), None)
    scalars = {k: v for k, v in vars(opt).items()
               if k not in _SKIP and (v is None or isinstance(v, (bool, int, float, str)))}
    meta = {"optimizer": type(opt).__name__.lower(), "scalars": scalars, "states": states,
            "update_counts": counts, "current_device": current,
            "lr_mult": sorted(opt.lr_mult.items(), key=str), "wd_mult": sorted(opt.wd_mult.items(), key=str)}
    return meta, arrays


# ------------------------------------------------------------------ reading
def read_checkpoint(path: str) -> dict:
    """Read and validate every member of the checkpoint at ``path``.

    Returns
    -------
    dict
        ``state`` (dict), ``params`` (bytes, ``mx.nd.save`` format),
        ``optimizer`` (dict), ``arrays`` (dict of str to NDArray),
        ``ema`` (the weight average's arrays, or ``None``) and
        ``callback_arrays`` (a list with one dict of str to NDArray per
        callback of ``state.json``; the dicts are empty when the file has no
        ``callbacks.arrays``).

    Raises
    ------
    UnsafeFileError
        A member is a pickle (checkpoints of format 1, or a planted file).
    CheckpointError
        The file is not a zip, is truncated, misses a member, declares sizes
        it cannot hold, or a member has the wrong type or contents.
    """
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as z:
            infos = {i.filename: i for i in z.infolist()}
            _check_members(path, infos, size)
            raw = {name: z.read(name) for name in MEMBERS + OPTIONAL if name in infos}
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"Checkpoint {path!r} is not a valid zip file ({e}); it is truncated or "
                              "not a checkpoint. Resume from another checkpoint.") from None
    except (OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as e:
        if isinstance(e, (CheckpointError, UnsafeFileError)):
            raise
        raise CheckpointError(f"Checkpoint {path!r} cannot be read: {e}. It is truncated or damaged; "
                              "resume from another checkpoint.") from None
    for name in ("model.params", "optimizer.arrays") + OPTIONAL:
        if name in raw and raw[name][:1] in _PICKLE_MAGIC:
            raise UnsafeFileError(f"Checkpoint {path!r}: member {name!r} looks like a pickle, which could "
                                  "run code when loaded; it was not loaded.")
    state = _json(path, raw, "state.json")
    meta = _json(path, raw, "optimizer.json")
    _check_state(path, state)
    arrays = {name: _arrays(path, data, name) for name, data in raw.items() if name.endswith((".params", ".arrays"))}
    _check_optimizer(path, meta, arrays["optimizer.arrays"])
    callback_arrays = _by_callback(path, arrays.get("callbacks.arrays", {}), len(state["callbacks"]))
    return {"state": state, "params": raw["model.params"], "optimizer": meta, "arrays": arrays["optimizer.arrays"],
            "ema": arrays.get("ema.arrays"), "callback_arrays": callback_arrays}


def _by_callback(path, arrays: dict, count: int) -> list:
    """Split ``callbacks.arrays`` into one dict per callback index (``count``: callbacks in state.json)."""
    out = [{} for _ in range(count)]
    for key, value in arrays.items():
        index, sep, name = key.partition(":")
        if not (sep and name and index.isdigit() and int(index) < count):
            _bad(path, f"names in callbacks.arrays must be '<callback index below {count}>:<name>'", key)
        out[int(index)][name] = value
    return out


def _check_members(path, infos, size):
    if "optimizer.states" in infos:
        raise UnsafeFileError(
            f"Checkpoint {path!r} holds a pickled optimizer state ('optimizer.states': an older checkpoint "
            "format, or a planted file); unpickling it could run code, so it is refused. Start the run "
            "again, or resume from a checkpoint written by this version.")
    missing = [m for m in MEMBERS if m not in infos]
    if missing:
        raise CheckpointError(f"Checkpoint {path!r} lacks member(s) {', '.join(missing)} "
                              f"(it has {sorted(infos)}). It is truncated or not a checkpoint.")
    extra = sorted(set(infos) - set(MEMBERS) - set(OPTIONAL))
    if extra:
        raise CheckpointError(f"Checkpoint {path!r} has unexpected member(s) {extra}; "
                              f"a checkpoint holds exactly {list(MEMBERS)}.")
    declared = sum(i.file_size for i in infos.values())
    if declared > MAX_EXPANSION * max(size, 1) or any(i.compress_size > size for i in infos.values()):
        raise CheckpointError(
            f"Checkpoint {path!r} ({size} bytes) declares members of {declared} bytes in total, more than "
            f"{MAX_EXPANSION} times its size; it is damaged or crafted, and was not expanded.")


def _json(path, raw, name):
    try:
        value = json.loads(raw[name].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"Checkpoint {path!r}: member {name!r} is not valid UTF-8 JSON ({e}).") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"Checkpoint {path!r}: member {name!r} must hold a JSON object, "
                              f"got {type(value).__name__}.")
    return value


_ITEM_SIZE = {0: 4, 1: 8, 2: 2, 3: 1, 4: 4, 5: 1, 6: 8, 7: 1}  # MXNet dtype flags of dense arrays


def check_array_file(data: bytes, where: str) -> None:
    """Check that an ``mx.nd.save`` file's declared shapes fit in its bytes, before MXNet allocates them.

    MXNet's reader believes the shapes, so a tiny file could ask for
    terabytes. Only dense arrays (what finetune writes) are accepted.

    Raises
    ------
    CheckpointError
        The layout is not that of ``mx.nd.save``, or it declares more data than the file holds.
    """
    pos, n = 0, len(data)

    def take(fmt_size, count=None, signed=False):
        nonlocal pos
        many = count is not None
        count = count if many else 1
        if pos + fmt_size * count > n:
            raise CheckpointError(f"{where}: the array file ends at byte {n}, inside a header; it is truncated.")
        values = [int.from_bytes(data[pos + i * fmt_size:pos + (i + 1) * fmt_size], "little", signed=signed)
                  for i in range(count)]
        pos += fmt_size * count
        return values if many else values[0]

    if take(8) != 0x112:
        raise CheckpointError(f"{where}: not an MXNet array file (bad magic number).")
    take(8)
    count = take(8)
    if count > n // 16:
        raise CheckpointError(f"{where}: declares {count} arrays in {n} bytes; the file is damaged.")
    for _ in range(count):
        if take(4) != 0xF993FAC9 or take(4, signed=True) != 0:
            raise CheckpointError(f"{where}: an array is not a dense MXNet array (bad array header).")
        ndim = take(4)
        if ndim > 32:
            raise CheckpointError(f"{where}: an array declares {ndim} dimensions; the file is damaged.")
        if ndim == 0:
            continue
        dims = take(8, ndim, signed=True)
        take(4, 2)
        flag = take(4, signed=True)
        if flag not in _ITEM_SIZE or min(dims) < 0:
            raise CheckpointError(f"{where}: an array declares dtype {flag} and shape {tuple(dims)}; the file "
                                  "is damaged.")
        size = _ITEM_SIZE[flag]
        for d in dims:
            size *= d
        if size > n - pos:
            raise CheckpointError(f"{where}: an array of shape {tuple(dims)} needs {size} bytes but only "
                                  f"{n - pos} remain; the file is truncated or crafted.")
        pos += size
    keys = take(8)
    if keys not in (0, count):
        raise CheckpointError(f"{where}: {keys} names for {count} arrays; the file is damaged.")
    for _ in range(keys):
        length = take(8)
        if length > n - pos:
            raise CheckpointError(f"{where}: an array name runs past the end of the file; it is truncated.")
        pos += length


def _arrays(path, data: bytes, name) -> dict:
    if not data:
        return {}
    check_array_file(data, f"Checkpoint {path!r}: member {name!r}")
    try:
        loaded = mx.nd.load_frombuffer(data)
    except mx.base.MXNetError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unreadable"
        raise CheckpointError(f"Checkpoint {path!r}: member {name!r} is not an MXNet array file "
                              f"({first[:200]}).") from None
    if not isinstance(loaded, dict):
        raise CheckpointError(f"Checkpoint {path!r}: member {name!r} must hold named arrays, got a list.")
    return loaded


def _bad(path, what, value):
    raise CheckpointError(f"Checkpoint {path!r}: {what}, got {value!r:.200}. The file is damaged or was not "
                          "written by finetune; resume from another checkpoint.")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_state(path, s):
    if s.get("format") != FORMAT:
        _bad(path, f"'format' in state.json must be {FORMAT}", s.get("format"))
    for key in ("epoch", "batch"):
        if not _is_int(s.get(key)) or s[key] < 0:
            _bad(path, f"{key!r} must be an integer >= 0", s.get(key))
    acc = s.get("acc")
    if not (isinstance(acc, list) and len(acc) == 4 and all(_is_num(v) for v in acc)):
        _bad(path, "'acc' must be a list of 4 numbers", acc)
    if not (isinstance(s.get("history"), list) and all(isinstance(r, dict) for r in s["history"])):
        _bad(path, "'history' must be a list of objects", s.get("history"))
    if not isinstance(s.get("schedule"), dict):
        _bad(path, "'schedule' must be an object", s.get("schedule"))
    if not (isinstance(s.get("callbacks"), list) and all(isinstance(c, dict) for c in s["callbacks"])):
        _bad(path, "'callbacks' must be a list of objects", s.get("callbacks"))
    rng = s.get("numpy_rng")
    if not (isinstance(rng, list) and len(rng) == 5 and rng[0] == "MT19937" and isinstance(rng[1], list)
            and len(rng[1]) == 624 and all(_is_int(v) and 0 <= v < 2 ** 32 for v in rng[1])
            and _is_int(rng[2]) and 0 <= rng[2] <= 624 and _is_int(rng[3]) and _is_num(rng[4])):
        _bad(path, "'numpy_rng' must be a NumPy MT19937 state", rng)
    rng = s.get("python_rng")
    if not (isinstance(rng, list) and len(rng) == 3 and _is_int(rng[0]) and isinstance(rng[1], list)
            and len(rng[1]) == 625 and all(_is_int(v) and 0 <= v < 2 ** 32 for v in rng[1])
            and 0 <= rng[1][-1] <= 624 and rng[2] is None):
        _bad(path, "'python_rng' must be a Python random state", rng)


def _check_tree(path, node, arrays, depth=0):
    if node is None:
        return
    if depth > _MAX_DEPTH or not isinstance(node, dict) or len(node) != 1:
        _bad(path, "an optimizer state entry must be null, {'array': key} or {'tuple'|'list': [...]}", node)
    (kind, value), = node.items()
    if kind == "array":
        if not isinstance(value, str) or value not in arrays:
            _bad(path, "an optimizer state refers to an array missing from optimizer.arrays", value)
    elif kind in ("tuple", "list") and isinstance(value, list):
        for v in value:
            _check_tree(path, v, arrays, depth + 1)
    else:
        _bad(path, "an optimizer state entry must be null, {'array': key} or {'tuple'|'list': [...]}", node)


def _check_pairs(path, what, pairs, value_ok):
    if not (isinstance(pairs, list) and all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], (int, str))
                                            and not isinstance(p[0], bool) and value_ok(p[1]) for p in pairs)):
        _bad(path, f"{what} must be a list of [key, value] pairs", pairs)


def _check_optimizer(path, m, arrays):
    if not isinstance(m.get("optimizer"), str):
        _bad(path, "'optimizer' in optimizer.json must be a name", m.get("optimizer"))
    scalars = m.get("scalars")
    if not (isinstance(scalars, dict)
            and all(v is None or isinstance(v, (bool, int, float, str)) for v in scalars.values())):
        _bad(path, "'scalars' must map names to numbers, strings or null", scalars)
    _check_pairs(path, "'states'", m.get("states"), lambda v: True)
    for _, node in m["states"]:
        _check_tree(path, node, arrays)
    _check_pairs(path, "'update_counts'", m.get("update_counts"), lambda v: isinstance(v, list))
    for _, counts in m["update_counts"]:
        _check_pairs(path, "each device's update counts", counts, _is_int)
    if m.get("current_device") is not None and not _is_int(m.get("current_device")):
        _bad(path, "'current_device' must be an integer or null", m.get("current_device"))
    for key in ("lr_mult", "wd_mult"):
        _check_pairs(path, repr(key), m.get(key), _is_num)


# ------------------------------------------------------------------ restoring
def restore_optimizer_state(gluon_trainer, meta: dict, arrays: dict, path: str) -> None:
    """Write a validated :func:`optimizer_state` into ``gluon_trainer``'s optimizer and updaters.

    Raises
    ------
    CheckpointError
        The checkpoint was written for another optimizer or other parameters.
    """
    if not gluon_trainer._kv_initialized:
        gluon_trainer._init_kvstore()
    if gluon_trainer._params_to_init:
        gluon_trainer._init_params()
    opt = gluon_trainer._updaters[0].optimizer
    name = type(opt).__name__.lower()
    if meta["optimizer"] != name:
        raise CheckpointError(f"Checkpoint {path!r} was written with optimizer {meta['optimizer']!r}, but this "
                              f"Trainer uses {name!r}. Pass optimizer={meta['optimizer']!r} to resume it.")
    n = len(gluon_trainer._params)
    for idx, _ in meta["states"]:
        if not _is_int(idx) or not 0 <= idx < n:
            _bad(path, f"optimizer state indices must be in [0, {n}) for this model", idx)
    for key, value in meta["scalars"].items():
        if key in _SKIP or not hasattr(opt, key):
            continue
        old = getattr(opt, key)
        if old is not None and value is not None and _is_num(old) != _is_num(value):
            _bad(path, f"optimizer attribute {key!r} must be like {old!r}", value)
        setattr(opt, key, value)
    opt._all_index_update_counts = {dev: dict(counts) for dev, counts in meta["update_counts"]}
    current = meta["current_device"]
    opt._index_update_count = opt._all_index_update_counts.setdefault(0 if current is None else current, {})
    opt.lr_mult = dict(meta["lr_mult"])
    opt.wd_mult = dict(meta["wd_mult"])
    for updater in gluon_trainer._updaters:
        updater.optimizer = opt
        updater.states = {idx: _build(node, arrays) for idx, node in meta["states"]}
        updater.states_synced = dict.fromkeys(updater.states, False)
    gluon_trainer._optimizer = opt
    opt.param_dict = dict(enumerate(gluon_trainer._params))


def _build(node, arrays):
    if node is None:
        return None
    (kind, value), = node.items()
    if kind == "array":
        return arrays[value].copy()
    parts = [_build(v, arrays) for v in value]
    return tuple(parts) if kind == "tuple" else parts
