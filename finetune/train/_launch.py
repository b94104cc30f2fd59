"""A local launcher for MXNet's parameter server (``dist_sync`` on 127.0.0.1).

MXNet's distributed kvstore needs one scheduler, one or more servers and N
workers, each a process told its role by environment variables
(``DMLC_ROLE``, ``DMLC_PS_ROOT_URI``, ``DMLC_PS_ROOT_PORT``,
``DMLC_NUM_SERVER``, ``DMLC_NUM_WORKER``). A scheduler or server is any
Python process that imports ``mxnet`` with that role (MXNet then runs the
server loop and exits). :func:`launch` starts them all on this machine, runs
the worker command N times and waits. Across several hosts, use MXNet's own
``tools/launch.py`` (``--launcher ssh`` with a host file, or ``mpi``) with the
same worker command — see the training guide.

A worker process holds at most one ``dist_*`` kvstore: MXNet's parameter
server lets the scheduler and servers join the start-up barrier of the first
one only, so creating a second waits for ever, and a second Gluon trainer on
the first would re-initialise the keys the first one holds. :func:`dist_kvstore`
creates the process's kvstore once (its rank tells a worker whether it writes
the outputs); :func:`claim_kvstore` gives it to the one trainer that trains
over it, refuses a second, and makes every parameter rank 0's, so the workers
start from the same weights however each built or warmed up its model;
:func:`broadcast` makes any value rank 0's (a decision taken on every worker).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time

import mxnet as mx

from ..errors import ConfigError, check_range

__all__ = ["broadcast", "claim_kvstore", "dist_kvstore", "is_distributed", "launch", "worker_rank"]

log = logging.getLogger(__name__)

_BROADCAST_KEYS = 1 << 24  # above the keys of a Gluon trainer (one per trained parameter array)
_PROCESS = {"kvstore": None, "claimed": False, "next_key": _BROADCAST_KEYS}


def is_distributed(kvstore) -> bool:
    """Whether ``kvstore`` (a type name or None) is MXNet's parameter server (``dist_*``)."""
    return isinstance(kvstore, str) and kvstore.startswith("dist")


_PS_ENV = ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER", "DMLC_NUM_WORKER")


def check_dist_environment(kvstore) -> None:
    """Raise :class:`ConfigError` when ``kvstore`` is a ``dist_*`` type and this process was not started as a worker.

    MXNet's parameter server finds its scheduler through ``DMLC_*`` variables
    that ``finetune launch`` sets; without them it failed deep inside ps-lite,
    after the head warm-up had run.
    """
    if not (isinstance(kvstore, str) and kvstore.startswith("dist")):
        return
    missing = [v for v in _PS_ENV if not os.environ.get(v)]
    if missing:
        raise ConfigError(f"kvstore={kvstore!r} trains over MXNet's parameter server, which this process was not "
                          f"started for ({', '.join(missing)} not set). Start the workers with finetune launch, "
                          f"e.g. 'finetune launch -n 2 -- finetune train ... --kvstore {kvstore}', or train on one "
                          "machine with the default kvstore.")


def dist_kvstore(kvstore: str):
    """This process's ``dist_*`` kvstore of type ``kvstore``, created on the first call (every worker must call).

    Raises
    ------
    ConfigError
        The process already holds a parameter-server kvstore of another type.
    """
    kv = _PROCESS["kvstore"]
    if kv is None:
        check_dist_environment(kvstore)
        kv = _PROCESS["kvstore"] = mx.kv.create(kvstore)
        log.debug("kvstore %s: worker %d of %d", kv.type, kv.rank, kv.num_workers)
    elif kv.type != kvstore:
        raise ConfigError(f"This process already trains over a {kv.type!r} kvstore; MXNet's parameter server "
                          f"allows one per process. Got kvstore={kvstore!r}: use {kv.type!r} for every stage.")
    return kv


def worker_rank(kvstore="dist_sync") -> int:
    """The rank of this worker for ``kvstore`` (0 for a local kvstore); rank 0 writes the outputs.

    With a ``dist_*`` kvstore this creates the process's kvstore (see
    :func:`dist_kvstore`), so every worker must call it at the same point.

    Examples
    --------
    >>> worker_rank("device")   # a local kvstore: this process is the only writer
    0
    """
    return dist_kvstore(kvstore).rank if is_distributed(kvstore) else 0


def claim_kvstore(kvstore: str, params):
    """The process's kvstore for the one trainer that trains over it; every parameter of ``params`` becomes rank 0's.

    Parameters
    ----------
    kvstore : str
        A ``dist_*`` type.
    params : mxnet.gluon.ParameterDict
        The model's parameters (trained, frozen and BatchNorm statistics), initialised.

    Raises
    ------
    ConfigError
        A trainer of this process already trains over the parameter server.
    """
    kv = dist_kvstore(kvstore)
    if _PROCESS["claimed"]:
        raise ConfigError(
            f"A second Trainer with kvstore={kvstore!r} in one process: MXNet's parameter server serves one "
            "trainer per worker process (a second would re-initialise the first one's keys and wait for ever). "
            "Train the other stages locally (kvstore='device') and let the last stage train over the "
            "parameter server, as Recipe.fit does, or run each stage in its own process.")
    _PROCESS["claimed"] = True
    broadcast(kv, [p for p in params.values() if p._data is not None])
    return kv


def broadcast(kv, values):
    """Make every worker's ``values`` rank 0's; returns them.

    Parameters
    ----------
    kv : mxnet.kvstore.KVStore
        The process's ``dist_*`` kvstore; every worker calls with values of the same shapes, in the same order.
    values : list of mxnet.gluon.Parameter or mxnet.nd.NDArray
        Parameters are overwritten on every device; arrays in place.
    """
    if not values:
        return values
    first = _PROCESS["next_key"]
    _PROCESS["next_key"] += len(values)
    outs = [v.list_data() if hasattr(v, "list_data") else [v] for v in values]
    kv.broadcast(list(range(first, first + len(values))), [o[0] for o in outs], out=outs)
    mx.nd.waitall()
    return values


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(command, num_workers: int = 2, num_servers: int = 1, *, port: int | None = None,
           env: dict | None = None, timeout: float | None = None, cwd=None) -> int:
    """Run ``command`` as ``num_workers`` dist-kvstore workers on 127.0.0.1.

    Parameters
    ----------
    command : list of str
        The worker command, e.g. ``["finetune", "train", ..., "--kvstore", "dist_sync"]``.
    num_workers, num_servers : int
    port : int, optional
        The scheduler's port (default: a free one).
    env : dict, optional
        Extra environment variables for every process.
    timeout : float, optional
        Seconds to wait for the workers before killing everything.
    cwd : str, optional

    Returns
    -------
    int
        0 if every worker succeeded, else the first non-zero exit code.

    Examples
    --------
    >>> launch([sys.executable, "train.py"], num_workers=2)  # doctest: +SKIP
    0
    """
    check_range("launch", "num_workers", num_workers, 1)
    check_range("launch", "num_servers", num_servers, 1)
    if not command:
        raise ConfigError("launch needs a worker command, e.g. ['finetune', 'train', ...].")
    if port:
        _check_port(port)
    port = port or _free_port()
    base = dict(os.environ)
    base.update(env or {})
    base.update({"DMLC_PS_ROOT_URI": "127.0.0.1", "DMLC_PS_ROOT_PORT": str(port),
                 "DMLC_NUM_SERVER": str(num_servers), "DMLC_NUM_WORKER": str(num_workers)})
    server_cmd = [sys.executable, "-c", "import mxnet"]
    procs = []

    def start(role, cmd):
        e = dict(base, DMLC_ROLE=role)
        if role != "worker":
            e.setdefault("OMP_NUM_THREADS", "1")
        procs.append((role, subprocess.Popen(cmd, env=e, cwd=cwd)))

    log.info("Launching 1 scheduler, %d server(s), %d worker(s) on 127.0.0.1:%d", num_servers, num_workers, port)
    deadline = None if timeout is None else time.monotonic() + timeout
    code = 0
    try:  # whatever happens (a command that does not exist, a worker that fails, Ctrl-C), nothing is left running
        start("scheduler", server_cmd)
        for _ in range(num_servers):
            start("server", server_cmd)
        try:
            for _ in range(num_workers):
                start("worker", list(command))
        except OSError as exc:
            raise ConfigError(f"Cannot start the worker command {command[0]!r}: {exc.strerror or exc}.") from None
        code = _wait_workers([p for role, p in procs if role == "worker"], deadline, timeout,
                             [(role, p) for role, p in procs if role != "worker"])
        end = time.monotonic() + 30  # one wait for all of them, not 30 s each
        for role, p in procs:
            if role != "worker" and code == 0:
                try:
                    p.wait(timeout=max(0.1, end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("The %s did not exit after the workers finished; stopping it.", role)
    finally:
        _stop_all([p for _, p in procs])
    return 128 - code if code < 0 else code  # a process killed by signal N: 128 + N, as a shell reports it


def _check_port(port: int) -> None:
    """Raise :class:`ConfigError` when the scheduler's ``port`` on 127.0.0.1 is taken (its start would fail)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ConfigError(f"Port {port} on 127.0.0.1 cannot be used for the scheduler ({exc.strerror or exc}): "
                              "another program holds it. Choose another --port, or leave it out for a free "
                              "one.") from None


def _stop_all(procs, grace: float = 10.0) -> None:
    """Stop what still runs: SIGTERM first (a finetune worker frees its shared memory and exits), SIGKILL after
    ``grace`` seconds."""
    running = [p for p in procs if p.poll() is None]
    for p in running:
        p.terminate()
    end = time.monotonic() + grace
    for p in running:
        try:
            p.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _wait_workers(workers, deadline, timeout, support=()) -> int:
    """Wait for every worker; the first that fails (or the deadline) ends the run at once: the others would wait
    for it at the parameter server's barrier for ever. So does a scheduler or server (``support``: ``(role,
    process)`` pairs) that fails while workers still run (one that ends well ends after the workers' last call)."""
    while True:
        codes = [p.poll() for p in workers]
        gone = next(((role, p.returncode) for role, p in support if p.poll() not in (None, 0)), None)  # 0: done
        if gone is not None and any(c is None for c in codes):
            log.error("The %s exited (code %d) while the workers ran; stopping the cluster.", *gone)
            return gone[1] or 1
        failed = next((c for c in codes if c not in (None, 0)), None)
        if failed is not None:
            if any(c is None for c in codes):
                log.error("A worker exited with code %d; stopping the others.", failed)
            return failed
        if all(c == 0 for c in codes):
            return 0
        if deadline is not None and time.monotonic() > deadline:
            log.error("Workers did not finish within %s s; stopping the cluster.", timeout)
            return 124
        time.sleep(0.1)
