"""Stub processes that die: in-flight requests fail, the model reports its failure, and
every other model keeps serving."""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
from tests.backends.python.conftest import (
    EXAMPLES,
    LocalServer,
    collect,
    infer,
    outputs_of,
    shm_files,
    tensor,
)

from tritium.server.errors import ErrorCode
from tritium.server.types import InferenceRequest


async def _wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def test_sigkill_fails_in_flight_request_and_reports(server: LocalServer) -> None:
    backend = await server.load(EXAMPLES / "repeat_decoupled")
    await server.load(EXAMPLES / "add_sub")
    request = InferenceRequest(
        model_name="repeat_decoupled",
        inputs={
            "IN": tensor("IN", np.arange(100, dtype=np.int32)),
            "DELAY": tensor("DELAY", np.full(100, 100, np.uint32)),
        },
    )
    execution = asyncio.create_task(server.execute("repeat_decoupled", [request]))
    first = await asyncio.wait_for(request.responses.get(), 30)
    assert first.error is None  # the request is in flight

    os.kill(backend.instance_pids()[0], signal.SIGKILL)
    rest = await collect(request)
    await execution
    final = rest[-1]
    assert final.final and final.error is not None
    # Triton's message exactly; the signal is in the model's reason (below)
    assert final.error.message == "Stub process 'repeat_decoupled_0_0' is not healthy."

    await _wait_for(lambda: server.failures["repeat_decoupled"])
    (reason,) = server.failures["repeat_decoupled"]
    assert "repeat_decoupled_0_0" in reason and "not healthy" in reason
    assert "signal 9" in reason

    # A later request to the dead model fails at once instead of hanging.
    (late,) = await infer(server, "repeat_decoupled", {"IN": np.array([1], np.int32)})
    assert late.error is not None and "not healthy" in late.error.message

    # Every other model keeps serving.
    ones = np.ones((1, 4), np.float32)
    (response,) = await infer(server, "add_sub", {"INPUT0": ones, "INPUT1": ones})
    np.testing.assert_array_equal(outputs_of(response)["OUTPUT0"], 2 * ones)
    assert server.failures["add_sub"] == []


async def test_model_that_exits_fails_its_batch(server: LocalServer) -> None:
    await server.load(EXAMPLES / "crasher")
    (ok,) = await infer(server, "crasher", {"INPUT0": np.array([5], np.int32)})
    np.testing.assert_array_equal(outputs_of(ok)["OUTPUT0"], [5])

    (response,) = await infer(server, "crasher", {"INPUT0": np.array([-1], np.int32)})
    assert response.error is not None
    assert response.error.message == "Stub process 'crasher_0_0' is not healthy."
    assert response.error.code == ErrorCode.INTERNAL
    await _wait_for(lambda: server.failures["crasher"])
    assert "exit code 3" in server.failures["crasher"][0]
    assert shm_files() == []
