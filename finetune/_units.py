"""Multi-file outputs as units: their manifests, and what a writer may put in a file of one.

A multi-file output (``pack``'s ``.rec`` + ``.idx`` + class names, ``extract``'s
descriptors + ids) is committed with a manifest beside its first file,
``.<first file>.finetune``: a generation id and a fingerprint of every part.
Readers compare the files with it (:func:`check_parts`); writers refuse to put
other content in a file another unit was written with (:func:`refuse_foreign_part`)
and to replace an image with something that is not one (:func:`refuse_replacing_an_image`).
"""

from __future__ import annotations

import json
import os
import uuid

from ._formats import image_file_marked, sniff_format
from ._locks import sidecar_stem
from ._outputs import MARKER, MARKER_VERSION, fingerprint
from .errors import MixedOutputError, OutputExistsError

__all__ = ["check_parts", "manifest_path", "refuse_foreign_part", "refuse_replacing_an_image", "write_manifest",
           "written_with"]


def manifest_path(first) -> str:
    """The manifest of the unit whose first file is ``first``: ``.<name>.finetune`` beside it."""
    folder, stem = sidecar_stem(first)
    return os.path.join(folder, stem + MARKER)


def write_manifest(target, parts: dict) -> None:
    """Write the manifest ``target`` of a unit: ``parts`` maps each final file name to the file that holds it now."""
    manifest = {"owner": "finetune", "version": MARKER_VERSION, "generation": uuid.uuid4().hex,
                "files": {os.path.basename(final): fingerprint(now) for final, now in parts.items()}}
    with open(target, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def written_with(first, part) -> bool:
    """Whether ``part`` is, unchanged, a file the unit of ``first`` was last written with."""
    try:
        with open(manifest_path(first), encoding="utf-8") as f:
            want = json.load(f)["files"][os.path.basename(os.fspath(part))]
        return fingerprint(part) == want
    except (OSError, ValueError, TypeError, KeyError):
        return False


def _is_image(path) -> bool:
    try:
        with open(path, "rb") as f:
            return sniff_format(f.read(12)) is not None
    except OSError:
        return False


def refuse_replacing_an_image(path, new) -> None:
    """Raise :class:`OutputExistsError` when the file ``path`` is an image that ``new`` (a file) must not replace.

    A photo is the user's own work: a report, an index or a mean image given
    its name (``mean --out photos/p1.jpg``) would destroy it, and so would a
    Grad-CAM overlay or a plot. An image is replaced only by an image, and
    only when it carries the mark finetune leaves in the images it writes
    (:func:`~finetune._formats.mark_image`): a result over an earlier result.
    """
    if not (os.path.isfile(path) and _is_image(path)):
        return
    if not _is_image(new):
        raise OutputExistsError(f"{os.fspath(path)!r} is an image, and this output is not: writing it there would "
                                "destroy the picture. Choose another output name.", os.fspath(path))
    if not image_file_marked(path):
        raise OutputExistsError(f"{os.fspath(path)!r} is an image finetune did not write (a photo?): writing this "
                                "output there would destroy it. Choose another output name, or delete that file "
                                "first if it is an earlier result.", os.fspath(path))


def refuse_foreign_part(path, new, own_manifest) -> None:
    """Raise :class:`OutputExistsError` when writing ``new`` (a file) over ``path`` would break another unit.

    ``path`` breaks a unit when a manifest beside it (other than
    ``own_manifest``) lists it, the file is still the one that unit was
    written with, and ``new`` has other content: ``split --out data/x`` over
    the ``data/x_classes.txt`` of ``pack --out data/x`` made those records unreadable.
    """
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    if name.endswith(".lst"):  # a list beside records only names them; rewriting it is the user's to do (pack
        return                 # then leaves it as the user's own)
    try:
        if not os.path.isfile(path):
            return
        manifests = [n for n in os.listdir(folder) if n.startswith(".") and n.endswith(MARKER)]
    except OSError:
        return
    for entry in manifests:
        manifest = os.path.join(folder, entry)
        if manifest == own_manifest:
            continue
        try:
            with open(manifest, encoding="utf-8") as f:
                files = json.load(f)["files"]
            mine = files[name]
        except (OSError, ValueError, TypeError, KeyError):
            continue
        if fingerprint(path) == mine and fingerprint(new) != mine:
            others = ", ".join(repr(n) for n in sorted(files) if n != name)
            raise OutputExistsError(f"{os.fspath(path)!r} belongs to one output with {others}; other content in it "
                                    "would make them unreadable. Choose another output name, or delete those "
                                    "files first.", os.fspath(path))


def check_parts(paths, *, what: str = "output") -> None:
    """Raise :class:`MixedOutputError` unless the files ``paths`` are the unit their manifest describes.

    Files written by other tools (no manifest) pass unchecked. A part the
    manifest lists that no longer exists passes too: its reader reports it.
    A part the manifest does not list (a class-names file written by hand
    for records packed without names) passes.
    """
    paths = [os.fspath(p) for p in paths]
    try:
        with open(manifest_path(paths[0]), encoding="utf-8") as f:
            manifest = json.load(f)
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError
    except FileNotFoundError:
        return
    except (OSError, ValueError, TypeError, KeyError):
        raise MixedOutputError(f"The manifest {manifest_path(paths[0])!r} of {paths[0]!r} is damaged. Write the "
                               f"{what} again (or delete the manifest if another tool wrote the files).",
                               paths[0]) from None
    for path in paths:
        want = files.get(os.path.basename(path))
        if want is None or not os.path.exists(path):
            continue
        if fingerprint(path) != want:
            others = ", ".join(repr(os.path.basename(p)) for p in paths if p != path)
            raise MixedOutputError(
                f"{path!r} does not belong with {others}: they come from different writes (two writers at once, "
                f"a copy over one part, or another tool). Write the {what} again; if another tool wrote "
                f"these files on purpose, delete {manifest_path(paths[0])!r}.", path)
