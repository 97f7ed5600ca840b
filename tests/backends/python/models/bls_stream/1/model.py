"""Streams from repeat_decoupled through decoupled BLS (async_exec), sums what comes back,
loads, unloads and asks the server which models are ready."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            bls = pb_utils.InferenceRequest(
                model_name="repeat_decoupled",
                inputs=[pb_utils.Tensor("IN", values)],
                requested_output_names=["OUT"],
            )
            total, count = 0, 0
            async for response in await bls.async_exec(decoupled=True):
                if response.has_error():
                    raise pb_utils.TritonModelException(response.error().message())
                out = pb_utils.get_output_tensor_by_name(response, "OUT")
                if out is not None:
                    total += int(out.as_numpy()[0])
                    count += 1
            missing = pb_utils.InferenceRequest(
                model_name="no_such_model", inputs=[], requested_output_names=[]
            ).exec()
            pb_utils.load_model("add_sub")
            ready = [
                pb_utils.is_model_ready("repeat_decoupled"),
                pb_utils.is_model_ready("nope"),
                pb_utils.is_model_ready("add_sub", "1"),
            ]
            pb_utils.unload_model("add_sub")
            ready.append(pb_utils.is_model_ready("add_sub"))
            try:
                pb_utils.load_model("nope")
            except pb_utils.TritonModelException as exc:
                ready.append("failed to poll" in exc.message())
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("SUM", np.array([total], np.int32)),
                        pb_utils.Tensor("COUNT", np.array([count], np.int32)),
                        pb_utils.Tensor("READY", np.array(ready, np.bool_)),
                        pb_utils.Tensor(
                            "MISSING_ERROR",
                            np.array([missing.error().message().encode()], np.object_),
                        ),
                    ]
                )
            )
        return responses
