"""The folder a :class:`~finetune.features.FeatureExtractor` saves to, and reads back.

``extractor.json`` holds the settings, ``pca.npz`` the fitted PCA whitening,
``mop_<layer>_<pooling>.npz`` the fitted MOP states and ``model/`` the model
(when it can save itself). The model folder is replaced atomically first,
then the settings and the learned states together, as one unit
(:func:`finetune._file_writes.atomic_paths`), so a reader never pairs new
settings with old states.
"""

from __future__ import annotations

import contextlib
import json
import os
import re

import numpy as np

from .._arrays import write_npz
from .._file_writes import atomic_paths, recover
from .._outputs import EXTRACTOR, adopt_folder
from ..errors import MissingFileError
from ._mop import MOP
from ._postprocess import PCAWhitening

__all__ = ["load_states", "read_config", "save_folder"]

_CONFIG = "extractor.json"


def save_folder(extractor, path, *, save_model: bool = True) -> None:
    """Write ``extractor`` to the folder ``path`` (see :meth:`FeatureExtractor.save`)."""
    path = os.fspath(path)
    earlier = [n for n in os.listdir(path) if re.fullmatch(r"mop_\d+_\d+\.npz", n)] if os.path.isdir(path) else []
    adopt_folder(path, EXTRACTOR, what="feature extractor folder",  # never into a folder of the user's files
                 legacy=[_CONFIG, "model", "pca.npz", *earlier])
    config = extractor.get_config()
    config["model"] = None
    if save_model:  # the model meets the full protocol (FeatureExtractor checks it), so it saves
        extractor.model.save(os.path.join(path, "model"))
        config["model"] = "model"
    states = {}  # file name -> arrays; written with the config as one unit
    if extractor.pca is not None and extractor.pca.fitted:
        states["pca.npz"] = extractor.pca._state()
    for layer_i, layer in enumerate(extractor.layers):
        for pool_i, pool in enumerate(extractor.poolings[layer]):
            if isinstance(pool, MOP) and pool.fitted:
                states[f"mop_{layer_i}_{pool_i}.npz"] = pool.state()
    names = [_CONFIG] + list(states)
    with atomic_paths([os.path.join(path, n) for n in names]) as temps:
        for name, tmp in zip(names[1:], temps[1:]):
            with open(tmp, "wb") as f:
                write_npz(f, **states[name])
        with open(temps[0], "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)


def read_config(path: str) -> dict:
    """The settings of the extractor saved in ``path``, after finishing a save a kill interrupted."""
    cfg_path = os.path.join(path, _CONFIG)
    with contextlib.suppress(OSError):  # finish a save a kill interrupted
        recover([cfg_path])
    if not os.path.exists(cfg_path):
        raise MissingFileError(f"{cfg_path!r} does not exist; is {path!r} a saved FeatureExtractor?")
    with open(cfg_path, encoding="utf-8") as f:
        return json.load(f)


def load_states(extractor, path: str) -> None:
    """Give ``extractor`` the PCA and MOP states saved in ``path``, in place."""
    if extractor.pca is not None and os.path.exists(os.path.join(path, "pca.npz")):
        extractor.pca = PCAWhitening.load(os.path.join(path, "pca.npz"))
    for layer_i, layer in enumerate(extractor.layers):
        for pool_i, pool in enumerate(extractor.poolings[layer]):
            f = os.path.join(path, f"mop_{layer_i}_{pool_i}.npz")
            if isinstance(pool, MOP) and os.path.exists(f):
                with np.load(f, allow_pickle=False) as arrays:
                    pool.set_state(dict(arrays))
