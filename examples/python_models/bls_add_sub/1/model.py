"""bls_add_sub: Business Logic Scripting. Calls the `add_sub` model for every request
and returns its outputs; `add_sub` must be loaded too."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            in_0 = pb_utils.get_input_tensor_by_name(request, "INPUT0")
            in_1 = pb_utils.get_input_tensor_by_name(request, "INPUT1")

            # add_sub batches (max_batch_size 8): give it a batch of one.
            inputs = [
                pb_utils.Tensor("INPUT0", np.expand_dims(in_0.as_numpy(), 0)),
                pb_utils.Tensor("INPUT1", np.expand_dims(in_1.as_numpy(), 0)),
            ]
            infer_request = pb_utils.InferenceRequest(
                model_name="add_sub",
                requested_output_names=["OUTPUT0", "OUTPUT1"],
                inputs=inputs,
            )
            infer_response = infer_request.exec()

            if infer_response.has_error():
                raise pb_utils.TritonModelException(infer_response.error().message())

            out_0 = pb_utils.get_output_tensor_by_name(infer_response, "OUTPUT0").as_numpy()
            out_1 = pb_utils.get_output_tensor_by_name(infer_response, "OUTPUT1").as_numpy()
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("OUTPUT0", out_0[0]),
                        pb_utils.Tensor("OUTPUT1", out_1[0]),
                    ]
                )
            )
        return responses
