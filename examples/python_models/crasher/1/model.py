"""crasher: echoes INPUT0, but dies on request to show that a crashing model takes down
only its own stub process: INPUT0 == -1 exits at once (os._exit), INPUT0 == -9 kills
itself with SIGKILL. The model then becomes UNAVAILABLE; other models keep serving."""

import os
import signal

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            value = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if value[0] == -1:
                os._exit(3)
            if value[0] == -9:
                os.kill(os.getpid(), signal.SIGKILL)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", value)]))
        return responses
