"""A fake LLM for the client tests: a real decoupled Python-backend model, no weights.

It answers with the prompt's words in reverse order, one response per word when streaming
(each word but the first with a leading space, as a detokenizer emits tokens). It honours
max_tokens (default 16) and ignore_eos (repeat the words until max_tokens), and fails a
request whose prompt starts with "!error" or whose max_tokens is below 1.

The tensor names follow the model's config: the vLLM convention (text_input, stream,
sampling_parameters, exclude_input_in_output, return_num_*_tokens -> text_output,
num_*_tokens) or the seed's (PROMPT, STREAM, SAMPLING_PARAMETERS -> TEXT). Without
exclude_input_in_output, a non-streaming answer starts with the prompt, as vLLM's does.
So this one file serves both fake_llm and fake_llm_seed (whose model.py links here).
"""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils

VLLM = {
    "prompt": "text_input",
    "stream": "stream",
    "params": "sampling_parameters",
    "text": "text_output",
}
SEED = {"prompt": "PROMPT", "stream": "STREAM", "params": "SAMPLING_PARAMETERS", "text": "TEXT"}


def _scalar(request, name, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    value = tensor.as_numpy().reshape(-1)[0]
    return value.decode("utf-8") if isinstance(value, bytes) else value


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        inputs = {i["name"] for i in config["input"]}
        self.names = SEED if "PROMPT" in inputs else VLLM

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                self._generate(request, sender)
            except Exception as error:  # the request fails, the model lives on
                sender.send(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error))),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
        return None

    def _generate(self, request, sender):
        names = self.names
        prompt = _scalar(request, names["prompt"], "")
        stream = bool(_scalar(request, names["stream"], False))
        params = json.loads(_scalar(request, names["params"], "{}") or "{}")
        if not params:
            params = json.loads(request.parameters() or "{}")
        max_tokens = int(float(params.get("max_tokens", 16)))
        ignore_eos = str(params.get("ignore_eos", False)).lower() == "true"
        exclude = bool(_scalar(request, "exclude_input_in_output", False))
        want_in = bool(_scalar(request, "return_num_input_tokens", False))
        want_out = bool(_scalar(request, "return_num_output_tokens", False))
        if prompt.startswith("!error"):
            raise ValueError(f"fake_llm refuses prompts starting with !error: {prompt!r}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")

        words = prompt.split()[::-1] or ["..."]
        if ignore_eos:
            words = (words * (max_tokens // len(words) + 1))[:max_tokens]
        words = words[:max_tokens]

        def respond(text, num_tokens):
            outputs = [pb_utils.Tensor(names["text"], np.array([text.encode()], dtype=np.object_))]
            if want_in:
                count = np.array([len(prompt.split())], dtype=np.uint32)
                outputs.append(pb_utils.Tensor("num_input_tokens", count))
            if want_out:
                outputs.append(
                    pb_utils.Tensor("num_output_tokens", np.array([num_tokens], dtype=np.uint32))
                )
            sender.send(pb_utils.InferenceResponse(output_tensors=outputs))

        if stream:
            for i, word in enumerate(words):
                time.sleep(0.002)  # a token's worth of work, so latencies are not all zero
                respond(word if i == 0 else " " + word, 1)
        else:
            answer = " ".join(words)
            respond(answer if exclude else f"{prompt} {answer}", len(words))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
