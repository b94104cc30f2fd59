"""The training artifacts of ``finetune train --out DIR`` survive the model's save into ``DIR``.

Saving a model replaces its folder as a whole (:func:`finetune._atomic.atomic_dir`);
the histories, checkpoints and plans already in ``--out`` wait in a hidden
sibling folder meanwhile and are put back after, or by the next run when a
kill came in between.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid

__all__ = ["recover_artifacts"]

log = logging.getLogger("finetune")

_ARTIFACTS = ("history.csv", "history.json", "checkpoints", "plan.txt", "head", "fine_tune", "lr_find.json")


def _keep_folders(out) -> list:
    parent, name = os.path.split(os.path.abspath(out))
    prefix = f".{name}.keep-"
    return [os.path.join(parent, n) for n in os.listdir(parent or ".") if n.startswith(prefix)] \
        if os.path.isdir(parent or ".") else []


def recover_artifacts(out) -> None:
    """Put back the histories and checkpoints a killed :func:`_save_model_dir` had set aside.

    Saving the model replaces ``out`` as a whole; the training artifacts wait
    in a hidden sibling folder meanwhile. If the process dies there, the next
    ``finetune train`` on ``out`` (``--resume`` included) moves them back first.
    """
    for keep in _keep_folders(out):
        os.makedirs(out, exist_ok=True)
        for name in os.listdir(keep):
            dst = os.path.join(out, name)
            if not os.path.exists(dst):
                os.replace(os.path.join(keep, name), dst)
        shutil.rmtree(keep, ignore_errors=True)
        log.info("Recovered the training artifacts of %s from an interrupted save.", out)


def _save_model_dir(model, out) -> None:
    """``model.save(out)`` keeping the history and checkpoints already in ``out``."""
    out = os.path.abspath(out)
    recover_artifacts(out)
    keep = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.keep-{uuid.uuid4().hex}")
    os.makedirs(keep)
    moved = []
    for name in _ARTIFACTS:
        src = os.path.join(out, name)
        if os.path.exists(src):
            os.replace(src, os.path.join(keep, name))
            moved.append(name)
    try:
        model.save(out)
    finally:
        for name in moved:
            os.replace(os.path.join(keep, name), os.path.join(out, name))
        shutil.rmtree(keep, ignore_errors=True)
