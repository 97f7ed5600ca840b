"""raises: shows both ways a model reports errors.

INPUT0 < 0: execute() raises ValueError, which fails every request of the batch
("Failed to process the request(s) for model 'raises_0_0', message: ValueError: ...").
INPUT0 == 0: the response carries pb_utils.TritonError, which fails that request only.
Otherwise the input is echoed.
"""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            value = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if (value < 0).any():
                raise ValueError(f"negative input: {value.tolist()}")
            if (value == 0).any():
                error = pb_utils.TritonError(
                    "zero is not allowed", pb_utils.TritonError.INVALID_ARG
                )
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", value)]))
        return responses
