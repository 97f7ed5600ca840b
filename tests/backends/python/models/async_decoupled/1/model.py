"""A decoupled `async def execute`: N responses per request, streamed from the coroutine;
N < 0 raises after the first response."""

import asyncio

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        await asyncio.gather(*(self.stream(r) for r in requests))

    async def stream(self, request):
        n = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy()[0])
        sender = request.get_response_sender()
        for i in range(abs(n)):
            await asyncio.sleep(0.01)
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("I", np.array([i], np.int32))]))
            if n < 0:
                raise RuntimeError("stream broke")
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        try:
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except pb_utils.TritonModelException:
            pass  # a closed sender refuses more responses, as in Triton
        else:
            raise AssertionError("a closed sender must refuse")
