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
