"""Tritium's LLM engine: a library that imports nothing from the server.

    from tritium.engine import LLM, SamplingParams
    llm = LLM("smollm2")
    print(llm.generate("Hello", SamplingParams(temperature=0, max_tokens=32))[0].outputs[0].text)

`AsyncLLM` is the streaming engine the server uses; its `EngineCore` runs in its own
process (or a thread, `multiprocess=False`).
"""

from tritium.engine.async_llm import AsyncLLM, RequestStream
from tritium.engine.config import EngineArgs
from tritium.engine.core_client import EngineDeadError
from tritium.engine.llm import LLM
from tritium.engine.messages import SchedulerStats
from tritium.engine.outputs import CompletionOutput, Logprob, RequestOutput
from tritium.engine.sampling_params import RequestOutputKind, SamplingParams

__all__ = [
    "LLM",
    "AsyncLLM",
    "CompletionOutput",
    "EngineArgs",
    "EngineDeadError",
    "Logprob",
    "RequestOutput",
    "RequestOutputKind",
    "RequestStream",
    "SamplingParams",
    "SchedulerStats",
]
