"""Scheduling through the real core: dynamic batching, preferred sizes, priorities, queue
policies (size, timeouts REJECT/DELAY), instance parallelism, decoupled streams and
cancellation. Each test enqueues its requests in one event-loop turn, so the batches
formed are determined by the policy, not by timing."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tritium.server.errors import ErrorCode, TritonError
from tritium.server.types import InferenceRequest, Tensor

from .conftest import IDENTITY, STREAM, collect, identity_request, write_model


def identity_model(
    max_batch_size: int = 16, *, delay_ms: int = 0, count: int = 1, batching: str | None = None
) -> str:
    config = IDENTITY.replace("max_batch_size: 16", f"max_batch_size: {max_batch_size}")
    config += f'parameters {{ key: "delay_ms" value {{ string_value: "{delay_ms}" }} }}\n'
    config += f"instance_group [ {{ count: {count} kind: KIND_CPU }} ]\n"
    if batching is not None:
        config += f"dynamic_batching {{ {batching} }}\n"
    return config


async def started(server, request: InferenceRequest) -> asyncio.Task:
    """Run a request in the background; return once it is queued or executing."""
    task = asyncio.create_task(collect(server, request))
    await asyncio.sleep(0.01)
    return task


async def test_default_scheduler_runs_requests_one_by_one(repo, make_server, factory):
    write_model(repo, "identity", identity_model())
    server = await make_server()
    results = await asyncio.gather(*(collect(server, identity_request(1)) for _ in range(4)))
    assert all(r[0].error is None for r in results)
    assert factory.batch_sizes("identity") == [1, 1, 1, 1]


async def test_dynamic_batching_caps_at_max_batch_size(repo, make_server, factory):
    write_model(
        repo,
        "identity",
        identity_model(8, delay_ms=5, batching="max_queue_delay_microseconds: 50000"),
    )
    server = await make_server()
    results = await asyncio.gather(
        *(collect(server, identity_request(1, rid=str(i))) for i in range(20))
    )
    assert all(r[0].error is None for r in results)
    # every response went to its own request
    assert [r[0].outputs[0].data.tolist() for r in results] == [[[0.0, 1.0]]] * 20
    assert factory.batch_sizes("identity") == [8, 8, 4]
    stats = server.statistics("identity")["model_stats"][0]
    assert stats["inference_count"] == 20 and stats["execution_count"] == 3
    assert {b["batch_size"] for b in stats["batch_stats"]} == {8, 4}


async def test_batch_counts_rows_not_requests(repo, make_server, factory):
    write_model(repo, "identity", identity_model(8, batching="max_queue_delay_microseconds: 50000"))
    server = await make_server()
    await asyncio.gather(*(collect(server, identity_request(3)) for _ in range(3)))
    assert factory.batch_sizes("identity") == [6, 3]


async def test_preferred_batch_size_sends_without_waiting(repo, make_server, factory):
    # A 60 s queue delay: only the preferred size can send these requests in time.
    write_model(
        repo,
        "identity",
        identity_model(
            16, batching="preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 60000000"
        ),
    )
    server = await make_server()
    results = await asyncio.wait_for(
        asyncio.gather(*(collect(server, identity_request(1)) for _ in range(4))), timeout=10
    )
    assert len(results) == 4
    assert factory.batch_sizes("identity") == [4]


async def test_only_matching_shapes_batch_together(repo, make_server, factory):
    config = identity_model(8, batching="max_queue_delay_microseconds: 20000")
    config = config.replace("dims: [ 2 ]", "dims: [ -1 ]")
    write_model(repo, "identity", config)
    server = await make_server()

    def req(width: int, rid: str) -> InferenceRequest:
        x = np.zeros((1, width), dtype=np.float32)
        return InferenceRequest("identity", id=rid, inputs={"INPUT0": Tensor("INPUT0", "FP32", x)})

    await asyncio.gather(*(collect(server, req(w, str(i))) for i, w in enumerate([2, 2, 3, 2])))
    assert [e.request_ids for e in factory.executions] == [["0", "1"], ["2"], ["3"]]


async def test_priority_levels(repo, make_server, factory):
    write_model(
        repo,
        "identity",
        identity_model(1, delay_ms=50, batching="priority_levels: 2 default_priority_level: 2"),
    )
    server = await make_server()
    blocker = await started(server, identity_request(1, rid="blocker"))
    low = asyncio.create_task(collect(server, identity_request(1, rid="low")))
    default = asyncio.create_task(collect(server, identity_request(1, rid="default", priority=0)))
    high = asyncio.create_task(collect(server, identity_request(1, rid="high", priority=1)))
    await asyncio.gather(blocker, low, default, high)
    assert [e.request_ids[0] for e in factory.executions] == ["blocker", "high", "low", "default"]


async def test_queue_size_rejects(repo, make_server, factory):
    write_model(
        repo,
        "identity",
        identity_model(1, delay_ms=100, batching="default_queue_policy { max_queue_size: 1 }"),
    )
    server = await make_server()
    blocker = await started(server, identity_request(1))
    queued = await started(server, identity_request(1))
    with pytest.raises(TritonError) as err:
        await collect(server, identity_request(1))
    assert err.value.code == ErrorCode.UNAVAILABLE
    assert err.value.message == "Exceeds maximum queue size"
    await asyncio.gather(blocker, queued)
    stats = server.stats_snapshot()[0]
    assert stats.failure_reasons["REJECTED"] == 1 and stats.success.count == 2


async def test_queue_timeout_rejects(repo, make_server, factory):
    write_model(
        repo,
        "identity",
        identity_model(
            1,
            delay_ms=150,
            batching=(
                "default_queue_policy { default_timeout_microseconds: 20000 timeout_action: REJECT }"
            ),
        ),
    )
    server = await make_server()
    blocker = await started(server, identity_request(1, rid="blocker"))
    [resp] = await collect(server, identity_request(1, rid="late"))
    assert resp.error is not None and resp.final
    assert resp.error.code == ErrorCode.UNAVAILABLE
    assert resp.error.message == "Request timeout expired"
    await blocker
    assert [e.request_ids for e in factory.executions] == [["blocker"]]
    assert server.stats_snapshot()[0].failure_reasons["REJECTED"] == 1


async def test_timeout_override_and_delay_action(repo, make_server, factory):
    write_model(
        repo,
        "identity",
        identity_model(
            1,
            delay_ms=100,
            batching=(
                "default_queue_policy { timeout_action: DELAY allow_timeout_override: true }"
            ),
        ),
    )
    server = await make_server()
    blocker = await started(server, identity_request(1, rid="blocker"))
    # Its own 10 ms timeout expires while the blocker runs: DELAY puts it behind "fresh".
    delayed = await started(server, identity_request(1, rid="delayed", timeout_us=10_000))
    await asyncio.sleep(0.02)
    fresh = asyncio.create_task(collect(server, identity_request(1, rid="fresh")))
    results = await asyncio.gather(blocker, delayed, fresh)
    assert all(r[0].error is None for r in results)
    assert [e.request_ids[0] for e in factory.executions] == ["blocker", "fresh", "delayed"]


@pytest.mark.parametrize("count", [1, 2])
async def test_instances_execute_in_parallel(repo, make_server, factory, count):
    write_model(repo, "identity", identity_model(delay_ms=80, count=count))
    server = await make_server()
    await asyncio.gather(*(collect(server, identity_request(1)) for _ in range(2)))
    first, second = factory.executions
    overlap = first.start < second.end and second.start < first.end
    assert overlap == (count == 2)
    assert {first.instance, second.instance} == ({0, 1} if count == 2 else {0})


async def test_decoupled_stream(repo, make_server):
    write_model(repo, "stream", STREAM)
    server = await make_server()
    assert server.get_model("stream").decoupled
    req = InferenceRequest(
        "stream", inputs={"INPUT0": Tensor("INPUT0", "INT32", np.array([3], dtype=np.int32))}
    )
    responses = await collect(server, req)
    assert [r.final for r in responses] == [False, False, False, True]
    assert [int(r.outputs[0].data[0]) for r in responses[:3]] == [0, 1, 2]
    assert responses[-1].outputs == []
    await server.wait_idle()  # statistics count a request once its batch has returned
    assert server.stats_snapshot()[0].success.count == 1


async def test_cancel_while_queued_drops_the_request(repo, make_server, factory):
    write_model(repo, "identity", identity_model(1, delay_ms=100))
    server = await make_server()
    blocker = await started(server, identity_request(1, rid="blocker"))
    doomed = await started(server, identity_request(1, rid="doomed"))
    doomed.cancel()  # the client went away while the request was queued
    await blocker
    await server.wait_idle()
    assert [e.request_ids for e in factory.executions] == [["blocker"]]
    stats = server.stats_snapshot()[0]
    assert stats.failure_reasons["CANCELED"] == 1 and stats.pending_count == 0


async def test_cancel_while_executing_reaches_the_backend(repo, make_server):
    write_model(
        repo,
        "stream",
        STREAM.replace(
            'string_value: "stream" } }',
            'string_value: "stream" } }\n'
            'parameters { key: "delay_ms" value { string_value: "10" } }',
        ),
    )
    server = await make_server()
    req = InferenceRequest(
        "stream", inputs={"INPUT0": Tensor("INPUT0", "INT32", np.array([1000], dtype=np.int32))}
    )
    stream = server.infer(req)
    got = [await anext(stream), await anext(stream)]
    await stream.aclose()
    assert req.is_cancelled() and len(got) == 2
    await asyncio.wait_for(server.wait_idle(), timeout=10)
    stats = server.stats_snapshot()[0]
    assert stats.failure_reasons["CANCELED"] == 1 and stats.pending_count == 0
