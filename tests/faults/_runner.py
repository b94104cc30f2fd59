"""Run ``finetune.cli.main`` in a new interpreter under resource limits and collect its exit code and stderr.

A fresh process, not a fork of the test process: a forked child of a
process whose MXNet engine has already run a backward pass can wait for
ever on the engine (seen with ``gradcam``). The child's stdout goes to
``/dev/null``; its stderr to a pipe, so a file-size limit does not touch
what the test reads.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys

_CHILD = """
import sys
from finetune.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # argparse's usage errors
    code = exc.code if isinstance(exc.code, int) else 1
sys.stderr.flush()
sys.exit(code if isinstance(code, int) else 99)
"""


def run_limited(argv, *, fsize: int | None = None, timeout: float = 180.0) -> tuple[int, str]:
    """``(exit code, stderr)`` of ``main(argv)`` in a new process; ``fsize`` limits the size of files it writes.

    A child killed by a signal returns ``-signal``; one that times out is killed and returns ``-9``.
    """
    argv = [os.fspath(a) for a in argv]

    def limit():
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg")
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD, *argv], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, preexec_fn=limit, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        return -9, (exc.stderr or b"").decode("utf-8", "replace")
    return done.returncode, done.stderr.decode("utf-8", "replace")
