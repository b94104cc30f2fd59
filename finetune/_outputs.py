"""Ownership, locks and generations of what finetune writes.

Three rules make the outputs safe to write over, whatever the user points
them at:

* **A writer replaces only what finetune made.** Every folder finetune
  writes carries a marker file, :data:`MARKER` (``.finetune``), that names the
  kind of folder, the format version, a generation id and every file the
  writer put there. A folder is replaced only when it is new, empty, or holds
  a marker of the same kind and nothing the marker does not list; anything
  else is refused with :class:`~finetune.errors.OutputExistsError` naming the
  first foreign file. A file named ``config.json`` proves nothing.
* **One writer at a time.** Every commit runs under an exclusive lock
  (:func:`finetune._locks.hold`: a ``filelock`` lock file beside the output,
  ``.<name>.lock``), so two processes writing the same output take turns
  instead of mixing their files.
* **Readers check that the parts belong together.** A multi-file output
  (``.rec`` + ``.idx`` + class names, descriptors + ids, a folder) is
  committed with a manifest holding the same generation id and a fingerprint
  of every part (size and SHA-256; of the first and last MiB for parts over
  16 MiB). :func:`check_parts` compares the parts on disk with it and raises
  :class:`~finetune.errors.MixedOutputError` when they come from different
  writes.

Files and folders are created with the permissions the user's ``umask``
gives any new file (:func:`apply_umask`), not the private ``0600`` of
:func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import uuid

from ._locks import hold
from ._write_errors import write_error
from .errors import OutputBusyError, OutputExistsError

__all__ = ["BALANCED", "CAFFE", "EXTRACTOR", "MARKER", "MODEL", "PLOTS", "RUN", "adopt_folder", "apply_umask",
           "claim_folder", "fingerprint", "folder_generation", "hold_folder", "name_example", "read_marker",
           "write_marker"]


def name_example(path, stem: str = "result") -> str | None:
    """``None`` when ``path`` names a file or prefix; for a folder alone (``out/``, ``.``, ``..``, ``""``), an
    example of a name to give instead (``out/result``): its file would be hidden (``out/.npy``) or a folder.

    Examples
    --------
    >>> name_example("out/db.npy"), name_example("out/"), name_example(".", "train")
    (None, 'out/result', './train')
    """
    name = os.path.basename(path)
    if name and name not in (".", ".."):
        return None
    return os.path.join(path if name in (".", "..") else os.path.dirname(path), stem)

MARKER = ".finetune"
MODEL = "model directory"  # a folder model.save() writes and replaces as a whole
RUN = "training run"  # a folder training adds to: its model directory (model/), histories, checkpoints
EXTRACTOR = "feature extractor folder"  # FeatureExtractor.save: extractor.json, model/, fitted states
PLOTS = "plots folder"  # evaluate --plots: the report's figures
BALANCED = "balanced images folder"  # balance: new images, one folder per class
CAFFE = "Caffe conversion folder"  # convert-caffe: an MXNet checkpoint and a model directory
MARKER_VERSION = 1
_BIG = 16 << 20  # parts above this are fingerprinted by size and their first and last MiB
_EDGE = 1 << 20
_LEGACY_MODEL_FILES = {"config.json", "symbol.json", "weights.params", "mean_image.npy", "deploy.json"}
_UMASK_LOCK = threading.Lock()


# ---------------------------------------------------------------- permissions
def _umask() -> int:
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def apply_umask(path, *, folder: bool = False) -> None:
    """Give ``path`` the permissions a new file (or folder) gets from the umask.

    :func:`tempfile.mkstemp` and :func:`tempfile.mkdtemp` create ``0600`` /
    ``0700`` whatever the umask; an output renamed from such a temporary
    would be private to its writer.
    """
    with contextlib.suppress(OSError):
        os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


# ---------------------------------------------------------------- locks
@contextlib.contextmanager
def hold_folder(path, *, what: str = "output folder"):
    """Keep the folder ``path`` to this process while the block runs: one process writes a folder at a time.

    For folders a long job adds to (a training run's checkpoints and
    histories): a second process asking for the same folder is refused at
    once with :class:`~finetune.errors.OutputBusyError` instead of mixing its
    files with the first one's. Holding it again in the same process is
    allowed (the lock counts).

    Examples
    --------
    >>> import os, tempfile
    >>> run = os.path.join(tempfile.mkdtemp(), "run")
    >>> with hold_folder(run), hold_folder(run):   # the same process may nest
    ...     pass
    """
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    with hold(path, wait=False) as taken:
        if not taken:
            raise OutputBusyError(f"The {what} {os.fspath(path)!r} is being written by another finetune process. "
                                  "Wait for it to finish, or choose another folder.", os.fspath(path))
        yield


# ---------------------------------------------------------------- fingerprints
def fingerprint(path) -> dict:
    """``{"size": bytes, "sha256": hex}`` of a file (over 16 MiB: of its size, first and last MiB)."""
    size = os.path.getsize(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= _BIG:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f.read(_EDGE))
            f.seek(size - _EDGE)
            h.update(f.read(_EDGE))
    return {"size": size, "sha256": h.hexdigest()}


def _listing(folder: str) -> list:
    """Every entry under ``folder`` (relative, ``/``-separated), the marker left out."""
    out = []
    for root, dirs, files in os.walk(folder):
        rel = os.path.relpath(root, folder)
        for n in dirs + files:
            r = n if rel == "." else f"{rel}/{n}".replace(os.sep, "/")
            if r != MARKER:
                out.append(r)
    return sorted(out)


# ---------------------------------------------------------------- folder markers
def write_marker(folder, kind: str, files=None) -> None:
    """Write the marker of a folder finetune has just filled, with a new generation id.

    The marker lists ``files`` (``{name: fingerprint}``); by default every
    file in ``folder`` with its fingerprint. Call it last, when the folder is
    complete.
    """
    folder = os.fspath(folder)
    if files is None:  # every file with its fingerprint, None for a folder
        full = {rel: os.path.join(folder, rel) for rel in _listing(folder)}
        files = {rel: fingerprint(p) if os.path.isfile(p) and not os.path.islink(p) else None for rel, p in full.items()}
    marker = {"owner": "finetune", "kind": kind, "version": MARKER_VERSION, "generation": uuid.uuid4().hex,
              "files": files}
    path = os.path.join(folder, MARKER)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:  # whole or not at all: a marker cut short by a full disk would make the folder look foreign
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(marker, f, indent=1, sort_keys=True)
        apply_umask(tmp)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise write_error(path, e, "folder marker") from e


def read_marker(folder):
    """The marker of ``folder`` as a dict, or None when it has none (or an unreadable one)."""
    try:
        with open(os.path.join(os.fspath(folder), MARKER), encoding="utf-8") as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    if not (isinstance(marker, dict) and marker.get("owner") == "finetune" and isinstance(marker.get("files"), dict)):
        return None
    return marker


def folder_generation(folder):
    """The generation id of ``folder``'s marker, or None."""
    marker = read_marker(folder)
    return marker.get("generation") if marker else None


def _legacy_model_files(folder: str):
    """The files a model directory written before markers may hold, or None when it is not one."""
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        config = None
    names = set(_LEGACY_MODEL_FILES)
    if isinstance(config, dict) and config.get("format") == "finetune-model":
        names.add(str(config.get("weights", "")))
        section = config.get("deployment")
        if isinstance(section, dict):
            names.update(str(v) for k, v in section.items() if k in ("symbol", "params", "onnx") and v)
        return names
    try:
        with open(os.path.join(folder, "deploy.json"), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if isinstance(manifest, dict) and manifest.get("format") == "finetune-deployment":
        names.update(str(v) for v in manifest.values() if isinstance(v, str) and os.path.basename(v) == v)
        return names
    return None


def claim_folder(path, kind: str, *, replace: bool, what: str = "folder", legacy=()) -> None:
    """Check that finetune may write the folder ``path`` as a ``kind`` folder.

    Parameters
    ----------
    path : str or os.PathLike
        The output folder.
    kind : str
        The marker kind the folder must have if it exists and is not empty.
    replace : bool
        The writer replaces the folder as a whole: then every entry in it must
        be listed by its marker (a file the user added would be lost).
        Otherwise the writer adds and replaces its own files only, and a marker
        of the right kind is enough.
    what : str
        How messages call the folder ("model directory").
    legacy : iterable of str
        Names a folder of this kind written before markers may also hold
        (besides a model directory's own files); such a folder has a
        finetune ``config.json``.

    Raises
    ------
    OutputExistsError
        ``path`` is a file, or a non-empty folder finetune did not write as a
        ``kind`` folder, or (``replace``) one holding a file its marker does not
        list. The message names the file.
    """
    path = os.fspath(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputExistsError(f"Cannot write the {what} {path!r}: a file of that name exists. Choose "
                                "another name or remove the file.", path)
    if not os.path.isdir(path):
        return
    entries = _listing(path)
    if not entries:
        return
    marker = read_marker(path)
    if marker is not None:
        if marker.get("kind") != kind:
            raise OutputExistsError(f"Cannot write the {what} {path!r}: it is a finetune {marker.get('kind')}, "
                                    f"not a {what}. Choose another folder.", path)
        if int(marker.get("version", 0)) > MARKER_VERSION:
            raise OutputExistsError(f"Cannot write the {what} {path!r}: a newer finetune wrote it. Upgrade "
                                    "finetune or choose another folder.", path)
        known = set(marker["files"])
    else:  # written before markers: recognised by what it holds
        known = (_legacy_model_files(path) or set()) | set(legacy)
        foreign = [rel for rel in entries if rel.split("/", 1)[0] not in known]
        if foreign:
            first = foreign[0]
            raise OutputExistsError(
                f"Cannot write the {what} {path!r}: the folder holds {first!r}, which finetune did not write "
                f"(it has no {MARKER} marker). Choose a new or empty folder.", os.path.join(path, first))
    if not replace:
        return
    for rel in entries:
        top = rel.split("/", 1)[0]
        if rel not in known and top not in known:
            raise OutputExistsError(
                f"Cannot replace the {what} {path!r}: it holds {rel!r}, which finetune did not write there and "
                "which replacing the folder would delete. Move it out or choose another folder.",
                os.path.join(path, rel))


def adopt_folder(path, kind: str, *, what: str = "folder", legacy=()) -> str:
    """Make ``path`` a ``kind`` folder that writers add their own files to, and return it.

    Creates the folder (and its parents) with a marker; an existing folder must
    be empty or already a ``kind`` folder (:func:`claim_folder` with
    ``replace=False``). Nothing in it is removed.

    Examples
    --------
    >>> import os, tempfile
    >>> run = adopt_folder(os.path.join(tempfile.mkdtemp(), "runs", "a"), RUN)
    >>> read_marker(run)["kind"]
    'training run'
    """
    path = os.fspath(path)
    claim_folder(path, kind, replace=False, what=what, legacy=legacy)
    os.makedirs(path, exist_ok=True)
    if read_marker(path) is None:
        write_marker(path, kind, files={})
    return path
