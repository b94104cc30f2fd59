import mxnet as mx
import pytest

from finetune._context import parse_ctx, resolve_ctx
from finetune.errors import ConfigError, DeviceError


def test_none_is_current_context_resolved_at_call_time():
    with mx.Context("cpu", 1):
        assert resolve_ctx(None) == [mx.cpu(1)]
    assert resolve_ctx(None) == [mx.cpu(0)]


@pytest.mark.parametrize("spec, expected", [
    ("cpu", [mx.cpu(0)]), ("cpu:0,1", [mx.cpu(0), mx.cpu(1)]), ("cpu*3", [mx.cpu(0), mx.cpu(1), mx.cpu(2)]),
])
def test_parse(spec, expected):
    assert parse_ctx(spec) == expected


def test_bad_spec_and_missing_gpu():
    with pytest.raises(ConfigError, match="Cannot parse device"):
        parse_ctx("tpu:0")
    if mx.context.num_gpus() == 0:
        with pytest.raises(DeviceError, match="sees 0 GPU"):
            resolve_ctx("gpu:0")


@pytest.mark.parametrize("spec", ["cpu:0,0", "cpu,cpu:0", "cpu*2,cpu:1", [mx.cpu(0), mx.cpu(0)], ["cpu", mx.cpu()]])
def test_a_device_named_twice_is_refused_saying_how_to_ask_for_several(spec):
    from finetune._context import resolve_ctx
    from finetune.errors import ConfigError

    with pytest.raises(ConfigError, match=r"names cpu\(\d\) twice.*'cpu\*\d'"):
        resolve_ctx(spec)
