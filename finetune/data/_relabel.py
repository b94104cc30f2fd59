"""New record files from the records of others: chosen records, new labels, one new ``.rec`` + ``.idx``.

Semi-supervised training writes its student's training set this way: every
labelled record as it is, plus the unlabelled records the teacher labelled
with confidence. The stored images are copied byte for byte (never decoded
or re-encoded), so this is as fast as reading the files.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from .._file_writes import atomic_files
from .._text import TEXT
from ..errors import ConfigError
from ._inputs import check_prefix
from ._listfiles import class_names_text, classes_path_for
from ._recordio import RecordFile, RecordWriter, unpack_header

__all__ = ["write_records"]


def _source_path(source) -> str:
    path = getattr(source, "path", source)
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError("write_records: each part's source must be a .rec path or a RecordDataset. "
                          f"Got {type(source).__name__} instead.")
    return os.fspath(path)


def write_records(prefix, parts, *, class_names=None) -> int:
    """Write ``<prefix>.rec`` and ``<prefix>.idx`` from chosen records of other record files, relabelled.

    Parameters
    ----------
    prefix : str or path-like
        Output prefix (``"work/student"`` writes ``work/student.rec`` and ``work/student.idx``).
    parts : iterable of (source, positions, labels)
        ``source`` is a ``.rec`` path or a :class:`~finetune.RecordDataset`;
        ``positions`` the records to take, by position in its index
        (``None``: all); ``labels`` their new labels, one integer each
        (``None``: keep the stored ones).
    class_names : list of str, optional
        Written to ``<prefix>_classes.txt``.

    Returns
    -------
    int
        The number of records written. They get the keys and ids ``0, 1, ...``
        in the order given; the three files replace earlier ones together, as
        one unit.

    Examples
    --------
    >>> import os, tempfile, cv2, numpy as np
    >>> from finetune.data import ImageList, ImageEntry, pack
    >>> root = tempfile.mkdtemp()
    >>> paths = []
    >>> for k in range(3):
    ...     paths.append(os.path.join(root, f"{k}.png"))
    ...     _ = cv2.imwrite(paths[-1], np.full((8, 8, 3), 40 * k, np.uint8))
    >>> images = ImageList([ImageEntry(k, p, 0) for k, p in enumerate(paths)])
    >>> _ = pack(images, os.path.join(root, "all"), encoding=".png", workers=1)
    >>> write_records(os.path.join(root, "some"), [(os.path.join(root, "all.rec"), [2, 0], [1, 1])],
    ...               class_names=["a", "b"])
    2
    """
    prefix = check_prefix(prefix, "write_records")
    if prefix.endswith(".rec"):
        prefix = prefix[:-4]
    parts = None if isinstance(parts, (str, bytes, os.PathLike)) else list(parts)
    if parts is None or not all(isinstance(p, (tuple, list)) and len(p) == 3 for p in parts):
        raise ConfigError(f"write_records needs parts as a list of (source, positions, labels) tuples, e.g. "
                          f"[('all.rec', None, None)]. Got {parts!r:.80}.")
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    opened = []
    for source, positions, labels in parts:
        records = RecordFile(_source_path(source))
        positions = np.arange(len(records)) if positions is None else np.asarray(positions, np.int64).ravel()
        if positions.size and (positions.min() < 0 or positions.max() >= len(records)):
            raise ConfigError(f"write_records: positions must be in [0, {len(records)}) for {records.rec}.")
        if labels is not None:
            labels = np.asarray(labels).ravel()
            if labels.shape != positions.shape:
                raise ConfigError(f"write_records: {labels.size} labels for {positions.size} records of "
                                  f"{records.rec}; give one label per record.")
        opened.append((records, positions, labels))
    outputs, modes = [prefix + ".rec", prefix + ".idx"], ["wb", "w"]
    if class_names is not None:
        outputs.append(classes_path_for(prefix))
        modes.append("w")
        classes = class_names_text(list(class_names), outputs[-1])
    written = 0
    with atomic_files(outputs, modes, **TEXT) as files:
        writer = RecordWriter(files[0], files[1])
        for records, positions, labels in opened:
            for k, pos in enumerate(positions):
                label, _, payload = unpack_header(records.read(int(pos)))
                if labels is not None:
                    label = float(labels[k])
                elif not np.isscalar(label):
                    label = float(np.asarray(label).ravel()[0])
                writer.write(written, struct.pack("<IfQQ", 0, float(label), written, 0) + payload)
                written += 1
            records.close()
        writer.close()
        if class_names is not None:
            files[2].write(classes)
    return written
