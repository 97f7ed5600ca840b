"""Echoes INPUT0 and reports its sum as computed inside the stub."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("OUTPUT0", data),
                        pb_utils.Tensor("SUM", np.array([data.sum(dtype=np.float64)])),
                    ]
                )
            )
        return responses
