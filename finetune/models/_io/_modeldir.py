"""Model directories: writing and reading what ``model.save(dir)`` writes.

A **model directory** is what ``model.save(dir)`` writes and
:func:`load_model` reads — the unit that training writes and prediction,
evaluation and feature extraction read::

    dir/
      config.json      format version, library versions, class ("Backbone" or "Model"),
                       preprocessing, class names, inference (e.g. {"tta": "mirror"};
                       absent: plain), graph metadata, head spec
      symbol.json      the backbone graph (for a Model: the cut backbone, i.e. the body)
      weights.params   every parameter by its stable name (mx.nd.save)
      mean_image.npy   only when the preprocessing has a mean image

A deployment folder (:func:`~finetune.export_for_deployment`) is such a
directory plus the runtime files named in ``config.json``'s ``"deployment"``
section (``_deployment``); there, ``"weights"`` names the
MXNet export's ``model-0000.params`` instead of ``weights.params``, so the
weights are stored once. Its keys carry MXNet's ``arg:`` / ``aux:`` prefixes
(what ``mx.model.load_checkpoint`` needs); :func:`read_weights` removes them,
which leaves the parameter names ``save`` writes (for every finetune network
the Gluon parameter names are the graph's variable names).

Format versions: 1 — ``save``; 2 — a deployment folder (a ``"deployment"``
section, prefixed weight keys). A reader refuses versions newer than its own,
so an older finetune asks to be upgraded instead of failing on the prefixes.

Writes are atomic (:func:`finetune._folder_swap.atomic_dir`): everything is
written into a hidden sibling folder that is then swapped in under a
journal, so a kill or a full disk leaves either the previous model
directory or the complete new one, never a half-written one. Readers
finish a swap a kill interrupted (:func:`read_config` calls
:func:`~finetune._folder_swap.recover_dir`).
"""

from __future__ import annotations

import contextlib
import json
import os

import numpy as np

from ..._arrays import read_npy
from ..._folder_swap import atomic_dir, recover_dir
from ..._mxio import load_arrays, load_symbol, non_finite, save_arrays
from ..._outputs import MARKER, MODEL, RUN, fingerprint, folder_generation, read_marker
from ..._version import __version__
from ...data import Preprocess
from ...errors import ConfigError, MissingFileError, MixedOutputError, ModelError
from ._paths import inside

FORMAT = "finetune-model"
KIND = MODEL  # the kind in the folder's marker (finetune._outputs)
FORMAT_VERSION = 2
SAVE_VERSION = 1  # what plain ``save`` writes: readable by every finetune since the first


def folder_arg(who: str, path) -> str:
    """``path`` (str, bytes or os.PathLike) as a str; anything else is a ConfigError naming ``who``'s ``path``."""
    if isinstance(path, bytes):
        return os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str):
        raise ConfigError(f"The 'path' parameter of {who} must be a folder path (str or os.PathLike). "
                          f"Got {path!r} ({type(path).__name__}) instead.")
    return os.fspath(path)


def _write_model_dir(path, config: dict, files: dict, arrays: dict, preprocess: Preprocess) -> str:
    path = os.path.abspath(folder_arg("save", path))
    bad = non_finite(arrays)
    if bad:
        raise ModelError(f"Not saved to {path!r}: {len(bad)} of the model's {len(arrays)} weight arrays hold NaN or "
                         f"infinity (the first: {bad[0]!r}); a training run diverged. Train again with a lower "
                         "learning rate.")
    config = dict(config, weights="weights.params")
    with atomic_dir(path, what="model directory", kind=KIND) as tmp:
        for name, text in files.items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(text)
        save_arrays(os.path.join(tmp, "weights.params"), arrays)
        if preprocess.mean_image is not None:
            with open(os.path.join(tmp, "mean_image.npy"), "wb") as f:
                np.save(f, preprocess.mean_image)
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:  # last: marks it complete
            json.dump(config, f, indent=1)
    return path


def read_config(path) -> dict:
    """Read and check ``config.json`` of a model directory."""
    path = os.fspath(path)
    with contextlib.suppress(OSError):  # a read-only folder cannot be recovered, nor need it
        recover_dir(path)
    if os.path.isfile(path):
        run = os.path.dirname(os.path.dirname(os.path.abspath(path)))
        if path.endswith(".ckpt"):
            raise ModelError(f"{path!r} is a training checkpoint, not a model directory; load the run folder "
                             f"{run!r} (its model), or continue training from it with `finetune train --resume`.")
        raise ModelError(f"{path!r} is a file, not a model directory; give the folder that holds config.json, "
                         "symbol.json and weights.params (written by model.save or finetune train).")
    if not os.path.isdir(path):
        raise MissingFileError(f"Model directory {path!r} does not exist.")
    cfg_path = os.path.join(path, "config.json")
    if not os.path.exists(cfg_path):
        raise MissingFileError(f"{path!r} is not a finetune model directory: it has no config.json "
                               "(write one with model.save(dir)).")
    try:
        with open(cfg_path, encoding="utf-8", errors="surrogateescape") as f:
            config = json.load(f)
    except (OSError, ValueError) as exc:
        raise ModelError(f"The config.json of {path!r} is corrupt: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelError(f"The config.json of {path!r} is not a finetune model config.")
    _check_config(config, f"config.json of {path!r}")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(f"{path!r} is in model-directory format {config['format_version']}, newer than the "
                         f"format {FORMAT_VERSION} this finetune ({__version__}) reads. Upgrade finetune.")
    return config


def _check_config(config: dict, where: str) -> None:
    """Raise :class:`ModelError`, naming ``where`` and the key, unless every field readers use has its type and range."""
    from numbers import Integral

    from ..._validation import InstanceOf, Interval, Sequence, describe, satisfies, show
    from .._headblock import check_head_spec

    fields = {"format_version": Interval(Integral, 0, None), "class": InstanceOf(str, name="a class name (str)"),
              "class_names": [Sequence(InstanceOf(str, name="a str")), None],
              "graph": InstanceOf(dict, name="an object"), "weights": InstanceOf(str, name="a file name (str)")}
    for key, constraint in fields.items():
        if key in config and not satisfies(config[key], constraint):
            raise ModelError(f"The {where} has {key!r} = {show(config[key])}; expected {describe(constraint)}.")
    if any(not name for name in config.get("class_names") or []):
        raise ModelError(f"The {where} has an empty class name in 'class_names'; every class needs a name.")
    name_or_none = [InstanceOf(str, name="a layer name (str)"), None]
    graph_fields = {"layer_names": [Sequence(InstanceOf(str, name="a str")), None], "classifier": name_or_none,
                    "feature_layer": name_or_none, "head_pool": name_or_none, "name": name_or_none}
    for key, constraint in graph_fields.items():
        value = (config.get("graph") or {}).get(key)
        if not satisfies(value, constraint):
            raise ModelError(f"The {where} has 'graph.{key}' = {show(value)}; expected {describe(constraint)}.")
    if "inference" in config:
        from .._inference import Inference

        Inference.from_dict(config["inference"], where)
    if "preprocess" not in config:
        raise ModelError(f"The {where} has no 'preprocess' section; it cannot be read.")
    missing = [k for k in ("size", "mean", "std") if k not in (config["preprocess"] or {})]
    if isinstance(config["preprocess"], dict) and missing:  # every writer writes them; a default would mislead
        raise ModelError(f"The {where} has no 'preprocess.{missing[0]}'; the model's input cannot be known. "
                         "Save the model again (or restore its config.json).")
    Preprocess.check_dict(config["preprocess"], where, ModelError)
    if config.get("class") == "Model" or "head" in config:
        check_head_spec(config.get("head"), where)


def model_dir_of(path):
    """``path``, or the model directory in it (``model/``) when ``path`` is a training run folder.

    ``finetune train --out DIR`` writes the model to ``DIR/model`` beside its
    histories and checkpoints; ``DIR`` loads as that model.
    """
    marker = read_marker(path)
    if marker is not None and marker.get("kind") == RUN:
        model = os.path.join(os.fspath(path), "model")
        if not os.path.isdir(model):
            raise ModelError(f"{os.fspath(path)!r} is a training run that has not finished: its model is written "
                             "when training ends. Wait for it, or continue an interrupted run with "
                             "`finetune train ... --out DIR --resume`.")
        return model
    return path


def read_consistently(path, read):
    """``read()`` of the model directory ``path``, repeated until no save replaced the folder meanwhile.

    A save swaps the whole folder; a reader that opened ``config.json`` of
    one generation and ``weights.params`` of the next would pair them. The
    generation id in the folder's marker is the same before and after a
    read that saw one folder.
    """
    for _ in range(10):
        before = folder_generation(path)
        try:
            result = read()  # a part that cannot be read says why first (weights that do not fit, NaN, ...)
            check_marked_files(path)
        except MixedOutputError:
            if folder_generation(path) != before:  # a save replaced the folder while it was checked
                continue
            raise
        if folder_generation(path) == before:
            return result
    raise ModelError(f"The model directory {os.fspath(path)!r} was replaced 10 times while it was being read; "
                     "read it when no process is saving into it.")


def check_marked_files(path) -> None:
    """Raise :class:`MixedOutputError` when a file of the model directory ``path`` is not the one its marker lists.

    The marker (``.finetune``, written when the folder was saved) holds the
    fingerprint of every file; a part copied over by hand (the weights of
    another model of the same architecture) would load without a word.
    Folders without a marker (earlier layouts, made by hand) pass, and so
    does ``config.json``: its text (class names, preprocessing, inference
    record) is the part users may edit, and its reader checks it.
    """
    marker = read_marker(path)
    if marker is None:
        return
    for name, want in sorted(marker["files"].items()):
        part = os.path.join(os.fspath(path), name)
        if name == "config.json" or not isinstance(want, dict) or not os.path.isfile(part) or fingerprint(part) == want:
            continue
        others = ", ".join(repr(n) for n, fp in sorted(marker["files"].items()) if n != name and isinstance(fp, dict)
                           and not n.startswith("."))
        raise MixedOutputError(
            f"{part!r} does not belong with {others}: it is not the file this model directory was saved with "
            "(a copy over one part, or another tool). Save or export the model again; if the file was changed on "
            f"purpose, delete {os.path.join(os.fspath(path), MARKER)!r}.", part)


def read_weights(path, config: dict) -> dict:
    """The parameter arrays of a model directory."""
    wpath = inside(path, config.get("weights", "weights.params"), what="weights file")
    if not os.path.exists(wpath):
        raise MissingFileError(f"The weights file {wpath!r} of the model directory is missing.")
    arrays = load_arrays(wpath)
    if not isinstance(arrays, dict):
        raise ModelError(f"The weights file {wpath!r} holds no named parameters.")
    bad = non_finite(arrays)
    if bad:
        raise ModelError(f"The weights file {wpath!r} holds NaN or infinity in {len(bad)} arrays (the first: "
                         f"{bad[0]!r}): it comes from a training run that diverged. Train it again.")
    return {_unprefixed(k): v for k, v in arrays.items()}


def _unprefixed(name: str) -> str:
    """A parameter name without MXNet's ``arg:`` / ``aux:`` checkpoint prefix."""
    return name[4:] if name.startswith(("arg:", "aux:")) else name


def read_preprocess(path, config: dict) -> Preprocess:
    mean_image = None
    if config["preprocess"].get("has_mean_image"):
        mpath = os.path.join(os.fspath(path), "mean_image.npy")
        if not os.path.exists(mpath):
            raise MissingFileError(f"The mean image {mpath!r} of the model directory is missing.")
        mean_image = read_npy(mpath, what="mean image", kinds="fiu", ndim=3)
    return Preprocess.from_dict(config["preprocess"], mean_image)


def read_symbol(path):
    spath = os.path.join(os.fspath(path), "symbol.json")
    if not os.path.exists(spath):
        raise MissingFileError(f"The graph file {spath!r} of the model directory is missing.")
    return load_symbol(spath)


def read_backbone(path, config: dict, *, with_class_names: bool) -> tuple:
    """``(arguments, arrays)``: the backbone of a model directory (for a Model: the body) as the
    arguments of :class:`~finetune.Backbone`, and all the directory's weights."""
    arrays = read_weights(path, config)
    symbol = read_symbol(path)
    names = set(symbol.list_arguments()) | set(symbol.list_auxiliary_states())
    graph = config.get("graph")
    if not isinstance(graph, dict):
        raise ModelError(f"The config.json of {os.fspath(path)!r} has no 'graph' section; it cannot be read.")
    return {"symbol": symbol, "params": {k: v for k, v in arrays.items() if k in names},
            "preprocess": read_preprocess(path, config),
            "class_names": config.get("class_names") if with_class_names else None,
            "classifier": graph.get("classifier"), "feature_layer": graph.get("feature_layer"),
            "layer_names": graph.get("layer_names"), "head_pool": graph.get("head_pool", "flatten"),
            "name": graph.get("name")}, arrays


def _load_params(params, arrays: dict, ctxs, where: str = "", shapes=None) -> None:
    """Set every parameter of a ParameterDict from ``arrays`` (by name), checking shapes.

    ``shapes`` (name -> shape, e.g. inferred from the graph for the input
    size) stands in for the shapes a deferred-initialised network does not
    know yet, so a weights file of another network fails here, at load.
    """
    missing = [n for n in params.keys() if n not in arrays]
    if missing:
        raise ModelError(f"{len(missing)} parameters are missing{' in ' + where if where else ''}: "
                         f"{missing[:5]}{'...' if len(missing) > 5 else ''}.")
    for name, p in params.items():
        arr = arrays[name]
        shape = p.shape
        if (shape is None or not all(s > 0 for s in shape)) and shapes and name in shapes:
            shape = shapes[name]
        if shape is not None and all(s > 0 for s in shape) and tuple(shape) != tuple(arr.shape):
            raise ModelError(f"Parameter {name!r} has shape {tuple(arr.shape)}{' in ' + where if where else ''}, "
                             f"but the network needs {tuple(shape)}.")
        if p.shape is None or not all(s > 0 for s in p.shape):
            p.shape = tuple(arr.shape)
        p._load_init(arr.astype(p.dtype, copy=False) if arr.dtype != np.dtype(p.dtype) else arr, ctxs)


# ------------------------------------------------- MXNet export (``prefix-symbol.json``)
CLASS_NAMES_ATTR = "finetune_class_names"


def symbol_json(symbol, class_names=None) -> str:
    """The JSON of ``symbol``, with the class names as a graph attribute when there are any.

    MXNet keeps graph-level attributes of a symbol file (``"attrs"``, beside
    ``"mxnet_version"``) when it reads the file and ignores the ones it does
    not know, so ``mx.sym.load`` and ``SymbolBlock.imports`` read the file
    as before. The text is written unescaped (``ensure_ascii=False``):
    MXNet's JSON reader does not understand ``\\u`` escapes.
    """
    text = symbol.tojson()
    if class_names is None:
        return text
    graph = json.loads(text)
    graph.setdefault("attrs", {})[CLASS_NAMES_ATTR] = ["list_str", [str(c) for c in class_names]]
    return json.dumps(graph, indent=2, ensure_ascii=False)


def symbol_class_names(symbol_file):
    """The class names stored in a symbol file by :func:`symbol_json`, or None."""
    try:
        with open(symbol_file, encoding="utf-8", errors="surrogateescape") as f:  # names byte-exact
            attrs = json.load(f).get("attrs", {})
    except (OSError, ValueError, AttributeError):
        return None
    entry = attrs.get(CLASS_NAMES_ATTR) if isinstance(attrs, dict) else None
    if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], list)):
        return None
    return [str(c) for c in entry[1]]
