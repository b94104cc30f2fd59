"""A fork-safe reader of MXNet RecordIO files (``.rec`` + optional ``.idx``).

``mx.recordio.MXIndexedRecordIO`` keeps one file position, so worker processes
sharing it would interfere; this reader uses ``os.pread`` (no shared position)
and checks every record it reads, turning a truncated or mismatched file into
a :class:`~finetune.errors.RecordFormatError` that says what to do. The format
(dmlc-core's RecordIO) is small and public: each record is the magic number
``0xced7230a``, a 32-bit word holding a 3-bit continuation flag and a 29-bit
length, the data, and padding to 4 bytes.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from .._file_writes import settled
from ..errors import MissingFileError, MixedOutputError, RecordFormatError

__all__ = ["RecordFile", "RecordWriter", "unpack_header"]

_MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", _MAGIC)
_IR = struct.Struct("<IfQQ")


def unpack_header(record: bytes):
    """Split an image record into ``(label, id, payload)``; label is a float or float32 array."""
    if len(record) < _IR.size:
        raise RecordFormatError(f"A record of {len(record)} bytes is too short for an image header.")
    flag, label, rid, _ = _IR.unpack_from(record)
    pos = _IR.size
    if flag > 0:
        end = pos + 4 * flag
        if end > len(record):
            raise RecordFormatError("A record's label array runs past its end.")
        label = np.frombuffer(record, np.float32, flag, pos).copy()
        pos = end
    return label, rid, record[pos:]


class RecordFile:
    """Random access to the records of a ``.rec`` file.

    Parameters
    ----------
    rec : str
        The ``.rec`` file.
    idx : str, optional
        Its ``.idx`` (``key<TAB>offset`` lines). Without one the ``.rec`` is
        scanned once to find the records.
    """

    def __init__(self, rec, idx=None):
        self.rec = os.fspath(rec)
        if not os.path.isfile(self.rec):
            folder = self.rec[: -len(".rec")] if self.rec.endswith(".rec") else self.rec
            if os.path.isdir(folder.rstrip("/\\")) or os.path.isdir(folder):
                raise MissingFileError(
                    f"{folder!r} is a folder, not records: pack its images first (finetune pack {folder} "
                    "--out data/train, or finetune.pack), then give the .rec.")
            raise MissingFileError(f"Record file {self.rec!r} does not exist; write records with finetune pack "
                                   "(or MXNet's im2rec).")
        settled([self.rec] + ([os.fspath(idx)] if idx else []), what="records (pack them again)")
        st = os.stat(self.rec)
        self.size, self._identity = st.st_size, (st.st_dev, st.st_ino)
        self.idx = os.fspath(idx) if idx else None
        self._fd, self._pid = None, None
        if self.idx:
            self.keys, self.offsets = self._read_idx()
        else:
            self.offsets = self._scan()
            self.keys = np.arange(len(self.offsets), dtype=np.int64)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fd"] = state["_pid"] = None
        return state

    def __len__(self) -> int:
        return len(self.offsets)

    def _read_idx(self):
        keys, offsets = [], []
        with open(self.idx, "rb") as f:
            data = f.read()
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError as e:
            raise RecordFormatError(
                f"{self.idx}: not an index file (byte {data[e.start]:#04x} at offset {e.start} is not "
                "ASCII). The index is corrupt; re-create it with finetune pack or im2rec.") from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                key, off = line.split("\t")
                key, off = int(key), int(off)
                if not (-2 ** 63 <= key < 2 ** 63 and 0 <= off < 2 ** 63):
                    raise ValueError
            except ValueError:
                raise RecordFormatError(
                    f"{self.idx}, line {n}: expected 'key<TAB>offset' (integers, offset >= 0), got "
                    f"{line.strip()!r:.200}. The index is corrupt; re-create it with finetune pack or "
                    "im2rec.") from None
            keys.append(key)
            offsets.append(off)
        if offsets and max(offsets) >= self.size:
            raise RecordFormatError(
                f"{self.idx} points to byte {max(offsets)} but {self.rec} has only {self.size} "
                "bytes: the .rec is truncated or the .idx belongs to another file. Re-create both.")
        return np.asarray(keys, np.int64), np.asarray(offsets, np.int64)

    def _scan(self):
        offsets, pos = [], 0
        while pos < self.size:
            offsets.append(pos)
            while True:
                cflag, length = self._head(pos)
                pos += 8 + ((length + 3) & ~3)
                if cflag in (0, 3):
                    break
        return np.asarray(offsets, np.int64)

    def _pread(self, n, pos) -> bytes:
        if self._fd is None or self._pid != os.getpid():
            fd = os.open(self.rec, os.O_RDONLY)
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != self._identity or st.st_size != self.size:
                os.close(fd)
                raise MixedOutputError(f"{self.rec!r} was replaced (packed again?) after its index was read; "
                                       "open the records again.", self.rec)
            self._fd, self._pid = fd, os.getpid()
        return os.pread(self._fd, n, pos)

    def _head(self, pos):
        head = self._pread(8, pos)
        if len(head) < 8:
            raise RecordFormatError(
                f"{self.rec} ends inside a record header at byte {pos}: the file is truncated. "
                "Re-create it with finetune pack or im2rec.")
        magic, lrec = struct.unpack("<II", head)
        if magic != _MAGIC:
            raise RecordFormatError(
                f"{self.rec}: no RecordIO record at byte {pos} (magic {magic:#x}, expected "
                f"{_MAGIC:#x}). The file is corrupt, not a .rec file, or its .idx does not match it.")
        return lrec >> 29, lrec & ((1 << 29) - 1)

    def read_at(self, pos: int) -> bytes:
        """The record starting at byte ``pos`` (multi-part records are joined)."""
        parts = []
        while True:
            cflag, length = self._head(pos)
            data = self._pread(length, pos + 8)
            if len(data) < length:
                raise RecordFormatError(
                    f"{self.rec}: the record at byte {pos} needs {length} bytes but the file ends "
                    "first: it is truncated. Re-create it with finetune pack or im2rec.")
            parts.append(data)
            pos += 8 + ((length + 3) & ~3)
            if cflag in (0, 3):
                return _MAGIC_BYTES.join(parts)

    def label(self, i: int):
        """``(label, id)`` of the ``i``-th record, reading only its header."""
        pos = int(self.offsets[i])
        _, length = self._head(pos)
        head = self._pread(min(length, _IR.size), pos + 8)
        flag = _IR.unpack_from(head)[0] if len(head) == _IR.size else 0
        if flag > 0:
            head = self._pread(min(length, _IR.size + 4 * flag), pos + 8)
        label, rid, _ = unpack_header(head)
        return label, rid

    def read(self, i: int) -> bytes:
        """The ``i``-th record (in index order)."""
        return self.read_at(int(self.offsets[i]))

    def close(self):
        """Close the file handle (it reopens on the next read)."""
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


class RecordWriter:
    """Write an indexed RecordIO pair exactly as ``mx.recordio.MXIndexedRecordIO`` does.

    Written here so that packing does not import MXNet (several seconds of
    start-up per command). Data containing the magic number at a 4-byte
    boundary is split into continuation parts as dmlc-core's writer does, so
    MXNet's chunked readers find the same record boundaries.

    Parameters
    ----------
    rec, idx : str or file object
        The files to create (overwritten), or open binary / text files to
        write into (left open by :meth:`close`, which only flushes them).
    """

    def __init__(self, rec, idx):
        self._own = isinstance(rec, (str, os.PathLike))
        self._rec = open(rec, "wb") if self._own else rec
        self._idx = open(idx, "w", encoding="utf-8") if self._own else idx
        self._pos = 0

    def write(self, key: int, data: bytes) -> None:
        """Append one record under ``key``."""
        if len(data) >= 1 << 29:
            raise RecordFormatError(f"A record of {len(data)} bytes is too large for RecordIO (< 512 MiB).")
        self._idx.write(f"{key}\t{self._pos}\n")
        parts, start = [], 0
        i = data.find(_MAGIC_BYTES)
        while i != -1:
            if i % 4 == 0:
                parts.append(data[start:i])
                start = i + 4
                i = data.find(_MAGIC_BYTES, start)
            else:
                i = data.find(_MAGIC_BYTES, i + 1)
        parts.append(data[start:])
        out = []
        for k, part in enumerate(parts):
            cflag = 0 if len(parts) == 1 else 1 if k == 0 else 3 if k == len(parts) - 1 else 2
            out.append(struct.pack("<II", _MAGIC, (cflag << 29) | len(part)))
            out.append(part)
        out.append(b"\0" * (-len(data) % 4))
        blob = b"".join(out)
        self._rec.write(blob)
        self._pos += len(blob)

    def close(self) -> None:
        """Flush and close both files."""
        for f in (self._rec, self._idx):
            if f.closed:
                continue
            if self._own:
                f.close()
            else:
                f.flush()
