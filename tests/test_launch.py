"""``launch`` watches the whole cluster: a taken port is refused, a scheduler that dies stops everything."""

import os
import signal
import socket
import sys
import threading
import time

import pytest

from finetune.errors import ConfigError
from finetune.train import launch


def test_a_port_in_use_is_refused_before_anything_starts():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigError, match=f"Port {port} .* another program holds it"):
            launch([sys.executable, "-c", "pass"], num_workers=1, port=port)


def _children_with(role: str) -> list:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent = f.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if parent == str(os.getpid()) and f"DMLC_ROLE={role}".encode() in env:
            found.append(int(pid))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the processes through /proc")
@pytest.mark.parametrize("role", ["scheduler", "worker"])
def test_a_process_of_the_cluster_killed_stops_the_rest_with_the_shell_s_code(role):
    def kill_one():
        for _ in range(100):
            time.sleep(0.1)
            pids = _children_with(role)
            if pids:
                time.sleep(1)
                os.kill(pids[0], signal.SIGKILL)
                return

    threading.Thread(target=kill_one, daemon=True).start()
    start = time.monotonic()
    code = launch([sys.executable, "-c", "import time; time.sleep(120)"], num_workers=2, num_servers=1)
    assert code == 128 + signal.SIGKILL
    assert time.monotonic() - start < 60
