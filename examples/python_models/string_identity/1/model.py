"""string_identity: returns its BYTES input unchanged (numpy object arrays of bytes)."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            in_0 = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out_0 = np.array([x for x in in_0.reshape(-1)], dtype=np.object_).reshape(in_0.shape)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", out_0)]))
        return responses
