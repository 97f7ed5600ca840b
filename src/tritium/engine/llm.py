"""LLM: offline batch generation, `LLM(model=...).generate(prompts, SamplingParams(...))`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, TypeGuard, cast

from tqdm.auto import tqdm

from tritium.engine.config import EngineArgs
from tritium.engine.engine_core import EngineCore, load_engine_checkpoint, validate_prompt
from tritium.engine.output_processor import OutputProcessor
from tritium.engine.outputs import RequestOutput
from tritium.engine.sampling_params import RequestOutputKind, SamplingParams

PromptType = str | list[int] | dict[str, Any]


class LLM:
    """An engine in this process, stepped until every prompt is done."""

    def __init__(self, model: str = "", **engine_args: Any) -> None:
        self.engine_args = EngineArgs.from_dict({"model": model, **engine_args})
        ckpt = load_engine_checkpoint(self.engine_args)
        self.tokenizer = ckpt.tokenizer
        self.engine_core = EngineCore(self.engine_args, ckpt)
        self.processor = OutputProcessor(self.tokenizer)
        self._next_id = 0

    def get_tokenizer(self):
        return self.tokenizer

    def generate(
        self,
        prompts: PromptType | Sequence[PromptType],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
        priority: list[int] | None = None,
    ) -> list[RequestOutput]:
        """Generate for every prompt (strings, token-id lists or {"prompt": ...} /
        {"prompt_token_ids": ...} dicts); outputs come back in prompt order."""
        prompt_list = _as_prompt_list(prompts)
        if sampling_params is None:
            sampling_params = SamplingParams()
        params_list = (
            [sampling_params] * len(prompt_list)
            if isinstance(sampling_params, SamplingParams)
            else list(sampling_params)
        )
        if len(params_list) != len(prompt_list):
            raise ValueError("give one SamplingParams, or one per prompt")
        ids = []
        for i, (prompt, params) in enumerate(zip(prompt_list, params_list, strict=True)):
            text, token_ids = self._tokenize(prompt)
            validate_prompt(token_ids, self.engine_core.info)
            rid = str(self._next_id)
            self._next_id += 1
            params = dataclasses.replace(params, output_kind=RequestOutputKind.FINAL_ONLY)
            for req in self.processor.add_request(
                rid, text, token_ids, params, priority[i] if priority else 0
            ):
                self.engine_core.add_request(req)
            ids.append(rid)
        return self._run(ids, use_tqdm)

    def chat(
        self,
        messages: list[dict[str, str]] | list[list[dict[str, str]]],
        sampling_params: SamplingParams | None = None,
        use_tqdm: bool = True,
    ) -> list[RequestOutput]:
        """Generate replies to conversations, rendered with the model's chat template."""
        # One conversation (a list of message dicts) or a list of them.
        conversations = (
            [cast("list[dict[str, str]]", messages)]
            if messages and isinstance(messages[0], dict)
            else cast("list[list[dict[str, str]]]", messages)
        )
        prompts = [
            {
                "prompt_token_ids": self.tokenizer.apply_chat_template(
                    c, add_generation_prompt=True, tokenize=True, return_dict=False
                )
            }
            for c in conversations
        ]
        return self.generate(prompts, sampling_params, use_tqdm)

    def _tokenize(self, prompt: PromptType) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            return prompt, self.tokenizer.encode(prompt)
        if isinstance(prompt, dict):
            if "prompt_token_ids" in prompt:
                return prompt.get("prompt"), list(prompt["prompt_token_ids"])
            return prompt["prompt"], self.tokenizer.encode(prompt["prompt"])
        return None, list(prompt)

    def _run(self, ids: list[str], use_tqdm: bool) -> list[RequestOutput]:
        done: dict[str, RequestOutput] = {}
        bar = tqdm(total=len(ids), desc="Processed prompts", disable=not use_tqdm)
        core = self.engine_core
        while core.has_unfinished_requests():
            outputs, to_abort = self.processor.process_outputs(core.step().outputs)
            core.abort_requests(to_abort)
            for out in outputs:
                if out.finished:
                    done[out.request_id] = out
                    bar.update(1)
        bar.close()
        return [done[i] for i in ids]


def _as_prompt_list(prompts: PromptType | Sequence[PromptType]) -> list[PromptType]:
    if isinstance(prompts, (str, dict)):
        return [prompts]
    items = list(prompts)
    if _is_token_ids(items):
        return [items]  # one prompt of token ids
    return cast("list[PromptType]", items)  # a list of prompts (ints only as one prompt)


def _is_token_ids(items: Sequence[object]) -> TypeGuard[list[int]]:
    return bool(items) and all(isinstance(p, int) for p in items)
