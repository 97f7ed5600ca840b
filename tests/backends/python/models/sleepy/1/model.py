"""Sleeps DELAY_MS and reports when execute() ran (monotonic ns) and in which process."""

import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        start = time.monotonic_ns()
        delay = max(
            int(pb_utils.get_input_tensor_by_name(r, "DELAY_MS").as_numpy()[0]) for r in requests
        )
        time.sleep(delay / 1000)
        end = time.monotonic_ns()
        return [
            pb_utils.InferenceResponse(
                [
                    pb_utils.Tensor("START_NS", np.array([start], np.int64)),
                    pb_utils.Tensor("END_NS", np.array([end], np.int64)),
                    pb_utils.Tensor("PID", np.array([os.getpid()], np.int64)),
                ]
            )
            for _ in requests
        ]
