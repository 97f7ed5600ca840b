"""repeat_decoupled: one response per element of IN, each after DELAY[i] milliseconds.

A decoupled model (model_transaction_policy { decoupled: True }): responses go through
each request's response sender, from a thread per request, and the final flag closes the
request. A request whose client went away (is_cancelled()) stops early with a CANCELLED
error, as Triton's documentation recommends.
"""

import json
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = model_config = json.loads(args["model_config"])

        if not pb_utils.using_decoupled_model_transaction_policy(model_config):
            raise pb_utils.TritonModelException(
                "model can only be used with a decoupled transaction policy ('{}')".format(
                    args["model_name"]
                )
            )

        out_config = pb_utils.get_output_config_by_name(model_config, "OUT")
        idx_config = pb_utils.get_output_config_by_name(model_config, "IDX")
        self.out_dtype = pb_utils.triton_string_to_numpy(out_config["data_type"])
        self.idx_dtype = pb_utils.triton_string_to_numpy(idx_config["data_type"])

        self.inflight_thread_count = 0
        self.inflight_thread_count_lck = threading.Lock()

    def execute(self, requests):
        for request in requests:
            self.process_request(request)
        # Decoupled: responses are sent through the response senders, so return None.
        return None

    def process_request(self, request):
        in_input = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
        delay_tensor = pb_utils.get_input_tensor_by_name(request, "DELAY")
        if delay_tensor is not None:
            delay_input = delay_tensor.as_numpy()
        else:
            delay_input = np.zeros(in_input.shape, dtype=np.uint32)

        if in_input.shape != delay_input.shape:
            raise pb_utils.TritonModelException(
                f"expected IN and DELAY shape to match, got {list(in_input.shape)} and "
                f"{list(delay_input.shape)}."
            )

        thread = threading.Thread(
            target=self.response_thread,
            args=(request.get_response_sender(), request, in_input, delay_input),
        )
        thread.daemon = True
        with self.inflight_thread_count_lck:
            self.inflight_thread_count += 1
        thread.start()

    def response_thread(self, response_sender, request, in_input, delay_input):
        try:
            for idx in range(in_input.size):
                time.sleep(delay_input[idx] / 1000)
                if response_sender.is_cancelled():
                    error = pb_utils.TritonError(
                        "request cancelled", pb_utils.TritonError.CANCELLED
                    )
                    response_sender.send(
                        pb_utils.InferenceResponse(error=error),
                        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                    )
                    return

                out_output = pb_utils.Tensor("OUT", np.array([in_input[idx]], self.out_dtype))
                idx_output = pb_utils.Tensor("IDX", np.array([idx], self.idx_dtype))
                response_sender.send(
                    pb_utils.InferenceResponse(output_tensors=[out_output, idx_output])
                )

            # The final, flag-only response closes the request.
            response_sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        finally:
            with self.inflight_thread_count_lck:
                self.inflight_thread_count -= 1

    def finalize(self):
        # Give in-flight response threads a moment to finish.
        for _ in range(100):
            with self.inflight_thread_count_lck:
                if self.inflight_thread_count == 0:
                    break
            time.sleep(0.01)
