"""``RecordLoader``: the fast batch loader of a :class:`~finetune.RecordDataset`.

The loader forks worker processes that decode, augment and normalise whole
batches straight into shared memory; the main process only copies each
finished batch into an NDArray. This keeps every core on image work instead
of on pickling arrays between processes (Gluon's ``DataLoader`` also works
with the dataset, but moves every sample through a queue).

The worker functions (``_worker_init``, ``_worker_batch``) are module-level so
the pool can pickle them by name; each worker keeps its dataset and its views
of the shared-memory slots in ``_WORKER``.
"""

from __future__ import annotations

import contextlib
import queue
import resource
import threading
from multiprocessing import shared_memory

import cv2
import numpy as np

from .._parallel import fork_pool, stop_pool
from ..errors import ConfigError, ImageTooLargeError, RecordFormatError, check_choice

__all__ = ["RecordLoader"]

_WORKER = {}


def _to_nd(mx, array):
    """Copy a batch into a new NDArray: a numpy copy handed over without a second copy
    (``mx.nd.array`` copies 4-8x slower than numpy on large float arrays)."""
    return mx.nd.from_numpy(np.array(array, copy=True), zero_copy=True)


def _worker_init(dataset, shms, shape):
    cv2.setNumThreads(1)
    _WORKER["ds"] = dataset
    _WORKER["views"] = [np.ndarray(shape, np.float32, buffer=s.buf) for s in shms]


def _fill(dataset, view, indices, seed):
    """Load ``indices`` into ``view``; ``seed`` is one int for the batch or one per item."""
    if np.ndim(seed) == 0:
        rng = np.random.RandomState(seed)
        rngs = [rng] * len(indices)
    else:
        rngs = [np.random.RandomState(int(s)) for s in seed]
    labels = [dataset.load(int(i), r, out=view[j])[1] for j, (i, r) in enumerate(zip(indices, rngs))]
    return np.asarray(labels, np.float32)


def _worker_batch(task):
    slot, indices, seed = task
    try:
        return slot, _fill(_WORKER["ds"], _WORKER["views"][slot], indices, seed), None
    except (RecordFormatError, ImageTooLargeError) as exc:  # sent back and raised in the main process
        return slot, None, exc


class RecordLoader:
    """Iterates a :class:`RecordDataset` in batches with forked workers (see :meth:`RecordDataset.loader`)."""

    def __init__(self, dataset, batch_size, *, shuffle=False, workers=2, last_batch="keep", seed=None):
        if int(batch_size) < 1:
            raise ConfigError(f"The 'batch_size' parameter must be >= 1. Got {batch_size!r} instead.")
        check_choice("RecordDataset.loader", "last_batch", last_batch, ("keep", "discard"))
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.shuffle, self.workers, self.last_batch = bool(shuffle), int(workers), last_batch
        self._seed = np.random.SeedSequence(seed).entropy
        self.epoch = 0
        self._pool = self._shms = None

    def __len__(self) -> int:
        n, b = len(self.dataset), self.batch_size
        return n // b if self.last_batch == "discard" else -(-n // b)

    def _batches(self):
        n = len(self.dataset)
        rng = np.random.RandomState(np.random.SeedSequence([self._seed, self.epoch]).generate_state(1))
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        seeds = rng.randint(0, 2**31 - 1, size=len(self))
        return [(order[k * self.batch_size:(k + 1) * self.batch_size], int(seeds[k]))
                for k in range(len(self))]

    def __iter__(self):
        batches = self._batches()
        self.epoch += 1
        return self.iter_batches(batches)

    def iter_batches(self, batches):
        """Load explicitly given batches, in order, with this loader's workers.

        Parameters
        ----------
        batches : list of (indices, seeds)
            ``indices`` of at most ``batch_size`` items; ``seeds`` either one
            int for the whole batch or one int per item (each item is then
            read with its own ``numpy.random.RandomState(seed)``, so its
            augmentation does not depend on how items are grouped).

        Yields
        ------
        (data, label) : NDArrays ``(n, C, H, W)`` and ``(n,)``.
        """
        import mxnet as mx

        for indices, _ in batches:
            if len(indices) > self.batch_size:
                raise ConfigError(f"A batch of {len(indices)} items does not fit this loader's "
                                  f"batch_size {self.batch_size}.")
        if self.workers <= 0:
            ds = self.dataset
            shape = (self.batch_size, ds.preprocess.channels) + ds.preprocess.size
            buf = np.empty(shape, np.float32)
            for indices, seed in batches:
                labels = _fill(ds, buf, indices, seed)
                yield _to_nd(mx, buf[:len(indices)]), mx.nd.array(labels)
            return
        yield from self._iter_pool(batches, mx)

    def _start(self):
        ds = self.dataset
        shape = (self.batch_size, ds.preprocess.channels) + ds.preprocess.size
        nslots = 2 * self.workers + 2
        nbytes = int(np.prod(shape)) * 4
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and nbytes > limit:  # Python's shared memory then fails untidily
            from ..errors import WriteError

            raise WriteError(f"The file size limit of this process ({limit} bytes, `ulimit -f`) is below the "
                             f"shared memory of one batch ({nbytes} bytes) that worker processes fill: raise the "
                             "limit, or load in this process (workers=0, --workers 0).")
        self._shms = [shared_memory.SharedMemory(create=True, size=nbytes) for _ in range(nslots)]
        self._views = [np.ndarray(shape, np.float32, buffer=s.buf) for s in self._shms]
        self._pool = fork_pool(self.workers, _worker_init, (ds, self._shms, shape))

    def _iter_pool(self, batches, mx):
        if self._pool is None:
            self._start()
        free = queue.Queue()
        for s in range(len(self._shms)):
            free.put(s)
        stop = threading.Event()

        def tasks():
            for indices, seed in batches:
                while True:
                    if stop.is_set():
                        return
                    try:
                        slot = free.get(timeout=0.1)
                        break
                    except queue.Empty:
                        continue
                yield slot, indices, seed

        done = False
        try:
            for slot, labels, error in self._pool.imap(_worker_batch, tasks()):
                if error is not None:
                    raise error
                data = _to_nd(mx, self._views[slot][:len(labels)])
                free.put(slot)
                yield data, mx.nd.array(labels)
            done = True
        finally:
            stop.set()
            if not done:  # abandoned mid-epoch: workers may still write into slots
                self.close()

    def close(self):
        """Stop the worker processes (within seconds, also on an interrupt) and free the shared memory."""
        pool, shms = self._pool, self._shms or ()
        self._pool = self._shms = None
        try:
            if pool is not None:
                stop_pool(pool)
        finally:
            self._views = None
            for s in shms:
                with contextlib.suppress(BufferError, OSError):
                    s.close()
                with contextlib.suppress(FileNotFoundError):
                    s.unlink()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
