"""Run ``finetune.cli.main`` in a forked child (under resource limits) and collect its exit code and stderr.

A fork starts in milliseconds with MXNet already imported, where a new
interpreter takes seconds; the child writes its stderr into a pipe, so a
file-size limit does not touch what the test reads.
"""

from __future__ import annotations

import os
import resource
import select
import signal
import sys
import time
import traceback


def run_forked(argv, *, fsize: int | None = None, timeout: float = 120.0) -> tuple[int, str]:
    """``(exit code, stderr)`` of ``main(argv)`` in a child; ``fsize`` limits the size of files it writes.

    A child killed by a signal returns ``-signal``; one that times out is killed and returns ``-9``.
    """
    argv = [os.fspath(a) for a in argv]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 99
        try:
            os.close(r)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(w, 2)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            if fsize is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            from finetune.cli import main

            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - reported to the parent as a traceback
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code if isinstance(code, int) else 99)
    os.close(w)
    chunks, deadline = [], time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            break
        data = os.read(r, 65536)
        if not data:
            break
        chunks.append(data)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code, b"".join(chunks).decode("utf-8", "replace")
