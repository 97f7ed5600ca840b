"""Reports what pb_utils shows a model: request fields, args, config, dtypes."""

import json

import helper  # a sibling module in the version folder
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.args = args
        self.config = json.loads(args["model_config"])

    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "A")
            b = pb_utils.get_input_tensor_by_name(request, "B")
            info = {
                "request_id": request.request_id(),
                "correlation_id": request.correlation_id(),
                "flags": request.flags(),
                "parameters": json.loads(request.parameters()),
                "requested": request.requested_output_names(),
                "a_dtype": a.triton_dtype(),
                "a_shape": a.shape(),
                "b_present": b is not None,
                "args": {k: v for k, v in self.args.items() if k != "model_config"},
                "max_batch_size": self.config["max_batch_size"],
                "greeting": self.config["parameters"]["greeting"]["string_value"],
                "model_dir": pb_utils.get_model_dir(),
                "helper": helper.NAME,
                "writable": a.as_numpy().flags.writeable,
            }
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("INFO", np.array([json.dumps(info).encode()], np.object_)),
                        pb_utils.Tensor("DOUBLED", a.as_numpy() * 2),
                    ],
                    parameters={"answered_by": self.args["model_instance_name"]},
                )
            )
        return responses
