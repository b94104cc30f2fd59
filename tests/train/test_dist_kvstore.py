"""One parameter-server kvstore per worker process, claimed by one trainer (no cluster needed)."""

import pytest

from finetune.errors import ConfigError
from finetune.train import _launch
from finetune.train._launch import claim_kvstore, dist_kvstore, is_distributed, worker_rank


class _FakeKVStore:
    type, rank, num_workers = "dist_sync", 1, 2


@pytest.fixture
def process_kvstore(monkeypatch):
    monkeypatch.setitem(_launch._PROCESS, "kvstore", _FakeKVStore())
    monkeypatch.setitem(_launch._PROCESS, "claimed", False)
    return _launch._PROCESS["kvstore"]


@pytest.mark.parametrize("kvstore", ["device", "local", "nccl", None])
def test_local_kvstores_are_rank_0_and_create_nothing(kvstore):
    assert not is_distributed(kvstore)
    assert worker_rank(kvstore) == 0


@pytest.mark.parametrize("kvstore", ["dist_sync", "dist_device_sync", "dist_async"])
def test_dist_kvstores_are_the_parameter_server(kvstore):
    assert is_distributed(kvstore)


def test_the_process_kvstore_is_created_once_and_gives_the_rank(process_kvstore):
    assert dist_kvstore("dist_sync") is process_kvstore is dist_kvstore("dist_sync")
    assert worker_rank("dist_sync") == 1


def test_another_parameter_server_type_in_the_same_process_is_refused(process_kvstore):
    with pytest.raises(ConfigError, match="one per process"):
        dist_kvstore("dist_async")


def test_a_second_trainer_over_the_parameter_server_is_refused_instead_of_waiting(process_kvstore, monkeypatch):
    broadcasts = []
    monkeypatch.setattr(_launch, "broadcast", lambda kv, values: broadcasts.append(values))
    assert claim_kvstore("dist_sync", {}) is process_kvstore
    assert broadcasts == [[]]  # every initialised parameter becomes rank 0's
    with pytest.raises(ConfigError, match="one trainer per worker process"):
        claim_kvstore("dist_sync", {})
    assert len(broadcasts) == 1


def test_a_dist_kvstore_outside_launch_is_refused_at_once(monkeypatch):
    """``train --kvstore dist_sync`` without ``finetune launch`` ended in ps-lite's MXNetError traceback."""
    from finetune.errors import ConfigError
    from finetune.train._launch import check_dist_environment, dist_kvstore

    for name in ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER", "DMLC_NUM_WORKER"):
        monkeypatch.delenv(name, raising=False)
    check_dist_environment("device")
    with pytest.raises(ConfigError, match="finetune launch"):
        dist_kvstore("dist_sync")


def test_launch_stops_everything_when_a_worker_cannot_start_or_fails(tmp_path):
    """``launch -n 1 -- /nonexistent/cmd`` left its scheduler and server running for good; ``launch -n 2 -- false``
    waited a minute; one worker failing left the others at the parameter server's barrier for ever."""
    import sys
    import time

    from finetune.train import launch

    with pytest.raises(ConfigError, match="Cannot start the worker command"):
        launch([str(tmp_path / "nonexistent")], num_workers=1)
    t0 = time.monotonic()
    assert launch([sys.executable, "-c", "import sys; sys.exit(3)"], num_workers=2) == 3
    # one worker fails at once, the other would wait for it for ever
    first = str(tmp_path / "first")
    script = ("import os, sys, time\n"
              "try:\n    os.close(os.open(%r, os.O_CREAT | os.O_EXCL))\nexcept FileExistsError:\n    time.sleep(600)\n"
              "sys.exit(4)\n" % first)
    assert launch([sys.executable, "-c", script], num_workers=2) == 4
    assert time.monotonic() - t0 < 60
