"""OpenAI request bodies -> engine sampling parameters, engine outputs -> OpenAI JSON.

Pure functions over dicts: the routes (routes.py) do the I/O. Field names and shapes follow
the OpenAI API reference (completions, chat completions) as vLLM's server answers them.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

from tritium.backends.llm.sampling import sampling_params_from_dict
from tritium.engine.outputs import CompletionOutput, Logprob, RequestOutput
from tritium.engine.sampling_params import SamplingParams
from tritium.server.errors import ErrorCode, TritonError, invalid_arg

# OpenAI fields we read, besides the prompt/messages; anything else is ignored as the
# OpenAI server ignores unknown fields (user, metadata, service_tier ...).
_PASSTHROUGH = (
    "n", "temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty",
    # vLLM's extensions
    "top_k", "min_p", "repetition_penalty", "min_tokens", "ignore_eos", "stop_token_ids",
    "skip_special_tokens", "include_stop_str_in_output",
)  # fmt: skip


def _check_type(body: dict[str, Any], name: str, kinds: tuple[type, ...], what: str) -> None:
    value = body.get(name)
    if value is not None and (
        not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
    ):
        raise invalid_arg(f"'{name}' must be {what}, got {value!r}")


def sampling_params(body: dict[str, Any], chat: bool) -> SamplingParams:
    """SamplingParams from an OpenAI body; INVALID_ARG naming the bad field."""
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        _check_type(body, name, (int, float), "a number")
    for name in ("n", "max_tokens", "max_completion_tokens", "seed", "top_logprobs"):
        _check_type(body, name, (int,), "an integer")
    values: dict[str, Any] = {k: body[k] for k in _PASSTHROUGH if body.get(k) is not None}
    if chat:
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        values["max_tokens"] = max_tokens  # None: up to the context length
        _check_type(body, "logprobs", (bool,), "a boolean")
        if body.get("logprobs"):
            values["logprobs"] = body.get("top_logprobs") or 0
        elif body.get("top_logprobs"):
            raise invalid_arg("'top_logprobs' requires 'logprobs' to be true")
    else:
        values["max_tokens"] = body.get("max_tokens", 16)
        if values["max_tokens"] == 0 and body.get("echo"):
            values["max_tokens"] = 1  # scoring the prompt alone: prompt_only drops the token
        _check_type(body, "logprobs", (int,), "an integer")
        if body.get("logprobs") is not None:
            values["logprobs"] = body["logprobs"]
            if body.get("echo"):  # the echoed prompt's tokens come with theirs, as in vLLM
                values["prompt_logprobs"] = body["logprobs"]
    if values.get("n", 1) < 1:
        raise invalid_arg(f"'n' must be at least 1, got {values['n']}")
    return sampling_params_from_dict(values, strict=True)


def completion_prompt(body: dict[str, Any]) -> tuple[str | None, list[int] | None]:
    """(text, token ids) of a completions prompt; one prompt per request."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt, None
    if (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
    ):
        return None, list(prompt)
    if prompt is None:
        raise invalid_arg("'prompt' is required")
    raise invalid_arg("'prompt' must be a string or a list of token ids (one prompt per request)")


def chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversation, with list-of-parts contents flattened to text."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_arg("'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise invalid_arg(f"messages[{i}] must be an object with a 'role'")
        content = m.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}]
            parts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise invalid_arg(f"messages[{i}]: only text content parts are supported")
                parts.append(str(part.get("text", "")))
            content = "".join(parts)
        out.append({**m, "content": content if content is not None else ""})
    return out


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now_s() -> int:
    return int(time.time())


def finish_reason(c: CompletionOutput) -> str | None:
    return (
        None
        if c.finish_reason is None
        else ("stop" if c.finish_reason == "abort" else c.finish_reason)
    )


# -- logprobs ----------------------------------------------------------------------------


def _sampled(entry: dict[int, Logprob], token_id: int) -> Logprob:
    return entry.get(token_id) or next(iter(entry.values()))


def _top(entry: dict[int, Logprob], k: int) -> list[Logprob]:
    ranked = sorted(entry.values(), key=lambda lp: lp.rank if lp.rank is not None else 1 << 30)
    return ranked[:k]


def chat_logprobs(c: CompletionOutput, top: int) -> dict[str, Any] | None:
    if c.logprobs is None:
        return None
    content = []
    for token_id, entry in zip(c.token_ids, c.logprobs, strict=False):
        s = _sampled(entry, token_id)
        token = s.decoded_token or ""
        content.append({
            "token": token, "logprob": s.logprob, "bytes": list(token.encode()),
            "top_logprobs": [
                {"token": t.decoded_token or "", "logprob": t.logprob, "bytes": list((t.decoded_token or "").encode())}
                for t in _top(entry, top)
            ],
        })  # fmt: skip
    return {"content": content}


def echo_logprobs(out: RequestOutput, top: int, echo: str) -> dict[str, Any] | None:
    """The echoed prompt's part of a completion's logprobs (its first token has none), or
    None without prompt logprobs. The first token's text is what the echo has before the
    others' (the engine scores nothing for it, so it does not decode it)."""
    entries = out.prompt_logprobs
    if not entries:
        return None
    scored = [e for e in entries[1:] if e is not None]  # all but the first
    rest = _token_logprobs(out.prompt_token_ids[1:], scored, top, 0)
    text = "".join(rest["tokens"])
    first = echo[: len(echo) - len(text)] if echo.endswith(text) else ""
    rest["text_offset"] = [offset + len(first) for offset in rest["text_offset"]]
    head = {"tokens": [first], "token_logprobs": [None], "top_logprobs": [None], "text_offset": [0]}
    return join_logprobs(head, rest)


def scores_prompt_only(body: dict[str, Any]) -> bool:
    """Whether a completions body asks to score its prompt and generate nothing (echo with
    max_tokens 0, as OpenAI's legacy API and vLLM accept it)."""
    return bool(body.get("echo")) and body.get("max_tokens") == 0


def prompt_only(out: RequestOutput) -> RequestOutput:
    """`out` with the generated tokens dropped (scores_prompt_only): the engine samples one
    token to get the prompt's last row through the model."""
    outputs = [
        dataclasses.replace(
            c, text="", token_ids=[], logprobs=[] if c.logprobs is not None else None,
            cumulative_logprob=None, finish_reason="length" if c.finish_reason else None,
            stop_reason=None,
        )
        for c in out.outputs
    ]  # fmt: skip
    return dataclasses.replace(out, outputs=outputs)


def join_logprobs(
    first: dict[str, Any] | None, then: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Two parts of a completion's logprobs (the echoed prompt's, the output's) as one."""
    if first is None or then is None:
        return then if first is None else first
    return {key: first[key] + then[key] for key in first}


def completion_logprobs(c: CompletionOutput, top: int, offset: int) -> dict[str, Any] | None:
    if c.logprobs is None:
        return None
    return _token_logprobs(c.token_ids, c.logprobs, top, offset)


def _token_logprobs(
    token_ids: list[int], entries: list[dict[int, Logprob]], top: int, offset: int
) -> dict[str, Any]:
    """A completions `logprobs` object for these tokens, the first at text `offset`."""
    tokens, token_lps, tops, offsets = [], [], [], []
    for token_id, entry in zip(token_ids, entries, strict=False):
        s = _sampled(entry, token_id)
        token = s.decoded_token or ""
        tokens.append(token)
        token_lps.append(s.logprob)
        tops.append({(t.decoded_token or ""): t.logprob for t in _top(entry, top)} if top else None)
        offsets.append(offset)
        offset += len(token)
    return {
        "tokens": tokens,
        "token_logprobs": token_lps,
        "top_logprobs": tops,
        "text_offset": offsets,
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


# -- whole responses ----------------------------------------------------------------------


def completion_response(
    out: RequestOutput, model: str, params: SamplingParams, echo: str | None
) -> dict[str, Any]:
    top = params.logprobs or 0
    prompt = echo_logprobs(out, top, echo) if echo is not None else None
    choices = []
    for c in sorted(out.outputs, key=lambda c: c.index):
        text = (echo or "") + c.text
        choices.append({
            "index": c.index, "text": text,
            "logprobs": join_logprobs(prompt, completion_logprobs(c, top, len(echo or ""))),
            "finish_reason": finish_reason(c), "stop_reason": c.stop_reason,
        })  # fmt: skip
    n_out = sum(len(c.token_ids) for c in out.outputs)
    return {
        "id": new_id("cmpl"), "object": "text_completion", "created": now_s(), "model": model,
        "choices": choices, "usage": usage(len(out.prompt_token_ids), n_out),
    }  # fmt: skip


def chat_response(out: RequestOutput, model: str, params: SamplingParams) -> dict[str, Any]:
    top = params.logprobs or 0
    choices = [
        {
            "index": c.index,
            "message": {"role": "assistant", "content": c.text},
            "logprobs": chat_logprobs(c, top),
            "finish_reason": finish_reason(c),
            "stop_reason": c.stop_reason,
        }
        for c in sorted(out.outputs, key=lambda c: c.index)
    ]
    n_out = sum(len(c.token_ids) for c in out.outputs)
    return {
        "id": new_id("chatcmpl"), "object": "chat.completion", "created": now_s(), "model": model,
        "choices": choices, "usage": usage(len(out.prompt_token_ids), n_out),
    }  # fmt: skip


# -- errors ----------------------------------------------------------------------------------

_ERROR_TYPES = {
    ErrorCode.INVALID_ARG: "BadRequestError",
    ErrorCode.NOT_FOUND: "NotFoundError",
    ErrorCode.UNAVAILABLE: "ServiceUnavailableError",
    ErrorCode.UNSUPPORTED: "NotImplementedError",
    ErrorCode.CANCELLED: "BadRequestError",
}


def error_object(err: TritonError, param: str | None = None) -> dict[str, Any]:
    """OpenAI's {"error": {"message", "type", "param", "code"}}."""
    code = "model_not_found" if err.code == ErrorCode.NOT_FOUND else None
    kind = (
        "invalid_request_error"
        if err.code in (ErrorCode.INVALID_ARG, ErrorCode.NOT_FOUND)
        else _ERROR_TYPES.get(err.code, "InternalServerError")
    )
    return {"error": {"message": err.message, "type": kind, "param": param, "code": code}}
