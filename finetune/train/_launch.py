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
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time

from ..errors import ConfigError, check_range

__all__ = ["launch"]

log = logging.getLogger(__name__)


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
    start("scheduler", server_cmd)
    for _ in range(num_servers):
        start("server", server_cmd)
    for _ in range(num_workers):
        start("worker", list(command))
    workers = [p for role, p in procs if role == "worker"]
    deadline = None if timeout is None else time.monotonic() + timeout
    code = 0
    try:
        for p in workers:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            rc = p.wait(timeout=left)
            code = code or rc
        for role, p in procs:
            if role != "worker":
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    log.warning("The %s did not exit after the workers finished; stopping it.", role)
    except subprocess.TimeoutExpired:
        log.error("Workers did not finish within %s s; stopping the cluster.", timeout)
        code = code or 124
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return code
