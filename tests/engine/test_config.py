"""EngineArgs and SamplingParams validation: clear errors naming what is wrong."""

from __future__ import annotations

import pytest

from tritium.engine import EngineArgs, SamplingParams


def test_from_dict_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"unknown engine argument.*bogus_arg"):
        EngineArgs.from_dict({"model": "x", "bogus_arg": 1})
    assert (
        EngineArgs.from_dict(
            {"model": "x", "max_num_seqs": 4, "trust_remote_code": True}
        ).max_num_seqs
        == 4
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dtype": "int8"}, "dtype"),
        ({"block_size": 12}, "block_size"),
        ({"device": "tpu"}, "device"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"load_format": "npz"}, "load_format"),
    ],
)
def test_engine_args_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EngineArgs(**kwargs)


def test_defaults_follow_vllm():
    a = EngineArgs()
    assert a.block_size == 16 and a.enable_prefix_caching and a.dtype == "auto"
    assert EngineArgs(device="cpu", dtype="float32").resolved_dtype().is_floating_point


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"min_p": 2}, "min_p"),
        ({"n": 0}, "n must"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"min_tokens": 5, "max_tokens": 2}, "min_tokens"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"logprobs": -1}, "logprobs"),
        ({"stop": [""]}, "stop"),
    ],
)
def test_sampling_params_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_sampling_params_normalizes():
    p = SamplingParams(stop="###", top_k=-1)
    assert p.stop == ["###"] and p.top_k == 0 and p.stop_token_ids == []
