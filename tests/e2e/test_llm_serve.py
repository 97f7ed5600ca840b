"""The LLM backend end to end: `tritium serve` of examples/model_repository (SmolLM2-135M on
the CPU), driven by tritonclient (gRPC aio stream_infer, HTTP generate), the openai SDK
and plain HTTP, as users drive Triton + vLLM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from serving import RunningServer

from .llm_server import prompts, start_llm_server

MAX_TOKENS = 16
GREEDY = {"temperature": 0, "max_tokens": MAX_TOKENS}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # explicit mode with every model loaded: the last test reloads after a worker crash
    s = start_llm_server(
        tmp_path_factory.mktemp("llm"), "--model-control-mode", "explicit", "--load-model", "*"
    )
    yield s
    s.stop()


def metric(text: str, name: str, model: str) -> float:
    m = re.search(
        rf'^{re.escape(name)}\{{[^}}]*model_name="{re.escape(model)}"[^}}]*\}} (\S+)$', text, re.M
    )
    assert m, f"{name} for {model} not in /metrics"
    return float(m.group(1))


# -- gRPC stream_infer --------------------------------------------------------------------


def _bytes_input(name: str, value: str) -> grpcclient.InferInput:
    t = grpcclient.InferInput(name, [1], "BYTES")
    t.set_data_from_numpy(np.array([value.encode()], dtype=np.object_))
    return t


def _bool_input(name: str, value: bool) -> grpcclient.InferInput:
    t = grpcclient.InferInput(name, [1], "BOOL")
    t.set_data_from_numpy(np.array([value], dtype=np.bool_))
    return t


async def stream_infer(
    url: str, model: str, requests: list[list[grpcclient.InferInput]], output: str
) -> dict[str, list]:
    """Send every request on one stream; return {request id: [texts... or an error]}
    once every request got its final response."""
    client = grpcclient.InferenceServerClient(url)
    results: dict[str, list] = {str(i): [] for i in range(len(requests))}
    pending = set(results)
    done = asyncio.Event()

    async def gen():
        for i, inputs in enumerate(requests):
            yield {"model_name": model, "inputs": inputs, "request_id": str(i)}
        await done.wait()  # keep the stream open until every final response is in

    try:
        async for result, error in client.stream_infer(gen()):
            if error is not None:
                rid = error.request_id() if hasattr(error, "request_id") else None
                key = rid if rid in results else next(iter(pending))
                results[key].append(error)
                pending.discard(key)
            else:
                resp = result.get_response()
                out = result.as_numpy(output)
                if out is not None:
                    results[resp.id].append([x.decode() for x in out.reshape(-1)])
                if resp.parameters["triton_final_response"].bool_param:
                    pending.discard(resp.id)
            if not pending:
                done.set()
                break
    finally:
        await client.close()
    return results


async def test_seed_flow_twenty_prompts_streaming_and_not(server: RunningServer) -> None:
    texts = prompts()
    assert len(texts) == 20
    params = json.dumps(GREEDY)
    by_mode: dict[bool, list[str]] = {}
    for stream in (False, True):
        reqs = [
            [
                _bytes_input("PROMPT", p),
                _bool_input("STREAM", stream),
                _bytes_input("SAMPLING_PARAMETERS", params),
            ]
            for p in texts
        ]
        results = await stream_infer(server.grpc, "smollm2-chat", reqs, "TEXT")
        completions = []
        for i, p in enumerate(texts):
            parts = results[str(i)]
            assert parts and all(isinstance(x, list) for x in parts), parts
            if stream:
                answer = "".join(x[0] for x in parts)  # one response per engine output
                assert not answer.startswith(p)  # streaming never echoes the prompt
                completions.append(answer)
            else:
                assert len(parts) == 1
                answer = parts[0][0]
                assert answer.startswith(p)  # TEXT = prompt + completion
                completions.append(answer[len(p) :])
        # SmolLM2-Instruct ends some raw (untemplated) questions at once with EOS.
        assert sum(bool(c.strip()) for c in completions) >= 5, completions
        by_mode[stream] = completions
    # Greedy: streaming deltas add up to the non-streaming completion.
    assert sum(a == b for a, b in zip(by_mode[False], by_mode[True], strict=True)) >= 18


async def test_vllm_flow_grpc_with_additional_outputs(server: RunningServer) -> None:
    inputs = [
        _bytes_input("text_input", "The capital of France is"),
        _bool_input("stream", False),
        _bytes_input(
            "sampling_parameters", json.dumps({"temperature": "0", "max_tokens": "8", "n": 2})
        ),
        _bool_input("exclude_input_in_output", True),
        _bool_input("return_finish_reason", True),
        _bool_input("return_num_input_tokens", True),
        _bool_input("return_num_output_tokens", True),
    ]
    client = grpcclient.InferenceServerClient(server.grpc)
    try:
        done = asyncio.Event()

        async def gen():
            yield {"model_name": "smollm2", "inputs": inputs, "request_id": "x"}
            await done.wait()

        async for result, error in client.stream_infer(gen()):
            assert error is None, error
            texts = result.as_numpy("text_output")
            if texts is None:
                continue
            assert texts.shape == (2,)  # n=2: one text per sample
            assert not texts[0].decode().startswith("The capital")  # excluded input
            assert [r.decode() for r in result.as_numpy("finish_reason")] == ["length", "length"]
            assert result.as_numpy("num_output_tokens").tolist() == [8, 8]
            assert int(result.as_numpy("num_input_tokens")[0]) > 3
            done.set()
            break
    finally:
        await client.close()


def test_vllm_flow_http_generate_and_stream(server: RunningServer) -> None:
    url = f"{server.http_url}/v2/models/smollm2"
    body = {
        "text_input": "Once upon a time",
        "parameters": {"max_tokens": MAX_TOKENS, "temperature": 0},
    }
    r = httpx.post(f"{url}/generate", json=body, timeout=120)
    assert r.status_code == 200, r.text
    full = r.json()["text_output"]
    assert full.startswith("Once upon a time") and len(full) > len("Once upon a time")
    with httpx.stream(
        "POST", f"{url}/generate_stream", json={**body, "stream": True}, timeout=120
    ) as s:
        assert s.status_code == 200
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: ")]
    assert len(events) > 1
    streamed = "".join(e["text_output"] for e in events)
    assert full == "Once upon a time" + streamed  # greedy: same text, deltas only


def test_bad_sampling_parameters(server: RunningServer) -> None:
    url = f"{server.http_url}/v2/models/smollm2/generate"
    for params, needle in [
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 3}, "top_p"),
        ({"max_tokens": "many"}, "max_tokens"),
    ]:
        r = httpx.post(url, json={"text_input": "hi", "parameters": params}, timeout=60)
        assert r.status_code == 400, r.text
        assert needle in r.json()["error"]


async def test_bad_sampling_parameters_grpc(server: RunningServer) -> None:
    reqs = [
        [
            _bytes_input("PROMPT", "hi"),
            _bool_input("STREAM", False),
            _bytes_input("SAMPLING_PARAMETERS", "{not json"),
        ]
    ]
    results = await stream_infer(server.grpc, "smollm2-chat", reqs, "TEXT")
    (err,) = results["0"]
    assert isinstance(err, InferenceServerException)
    assert "JSON" in err.message()


def test_prompt_longer_than_context(server: RunningServer) -> None:
    long_prompt = "hello " * 3000  # > max_model_len 2048 tokens
    r = httpx.post(
        f"{server.http_url}/v2/models/smollm2/generate",
        json={"text_input": long_prompt, "parameters": {"max_tokens": 4}},
        timeout=60,
    )
    assert r.status_code == 400 and "max_model_len" in r.json()["error"], r.text
    c = openai.OpenAI(base_url=f"{server.http_url}/v1", api_key="x")
    with pytest.raises(openai.BadRequestError) as info:
        c.completions.create(model="smollm2", prompt=long_prompt, max_tokens=4)
    assert "max_model_len" in str(info.value)


# -- OpenAI ---------------------------------------------------------------------------------


def test_openai_models(server: RunningServer) -> None:
    c = openai.OpenAI(base_url=f"{server.http_url}/v1", api_key="x")
    assert sorted(m.id for m in c.models.list().data) == ["smollm2", "smollm2-chat"]
    assert c.models.retrieve("smollm2").id == "smollm2"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("nope")
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])


def test_openai_chat(server: RunningServer) -> None:
    c = openai.OpenAI(base_url=f"{server.http_url}/v1", api_key="x")
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    r = c.chat.completions.create(
        model="smollm2", messages=msgs, max_tokens=MAX_TOKENS, temperature=0
    )
    text = r.choices[0].message.content
    assert text and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= MAX_TOKENS and r.usage.prompt_tokens > 5
    chunks = list(
        c.chat.completions.create(
            model="smollm2", messages=msgs, max_tokens=MAX_TOKENS, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed == text
    assert (
        chunks[-1].usage is not None
        and chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    )
    # n=2 and logprobs with top alternatives
    r2 = c.chat.completions.create(
        model="smollm2",
        messages=msgs,
        max_tokens=4,
        n=2,
        temperature=1.0,
        seed=1,
        logprobs=True,
        top_logprobs=2,
    )
    assert sorted(ch.index for ch in r2.choices) == [0, 1]
    lp = r2.choices[0].logprobs.content
    assert len(lp) == r2.usage.completion_tokens // 2 or len(lp) >= 1
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in lp)


def test_openai_completions(server: RunningServer) -> None:
    c = openai.OpenAI(base_url=f"{server.http_url}/v1", api_key="x")
    r = c.completions.create(
        model="smollm2-chat",
        prompt="The capital of France is",
        max_tokens=8,
        temperature=0,
        logprobs=2,
    )
    assert r.choices[0].text and r.usage.completion_tokens == 8
    assert (
        len(r.choices[0].logprobs.tokens) == 8 and len(r.choices[0].logprobs.top_logprobs[0]) == 2
    )
    streamed = "".join(
        ch.choices[0].text
        for ch in c.completions.create(
            model="smollm2-chat",
            prompt="The capital of France is",
            max_tokens=8,
            temperature=0,
            stream=True,
        )
    )
    assert streamed == r.choices[0].text
    r2 = c.completions.create(
        model="smollm2",
        prompt="Hello",
        max_tokens=4,
        n=2,
        stop=["\n"],
        presence_penalty=0.5,
        frequency_penalty=0.5,
        top_p=0.9,
    )
    assert len(r2.choices) == 2
    with pytest.raises(openai.BadRequestError) as info:
        c.completions.create(model="smollm2", prompt="Hello", max_tokens=4, temperature=-1)
    assert "temperature" in str(info.value)


def test_openai_echo_scores_the_prompt_as_an_eval_harness_asks(server: RunningServer) -> None:
    """lm-eval's loglikelihood request (echo, logprobs, one greedy token): the prompt's
    tokens with their logprobs (the first has none) before the generated one's, streamed
    or not, for a text or token-id prompt; and a likely ending outscores an unlikely one."""
    c = openai.OpenAI(base_url=f"{server.http_url}/v1", api_key="x")
    ask = {"model": "smollm2", "max_tokens": 1, "temperature": 0, "logprobs": 2, "echo": True}

    def score(prompt):
        r = c.completions.create(prompt=prompt, **ask)
        lp, n = r.choices[0].logprobs, r.usage.prompt_tokens
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == n + 1
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        assert all(x <= 0 for x in lp.token_logprobs[1:])
        assert all(len(top) == 2 for top in lp.top_logprobs[1:])
        if isinstance(prompt, str):
            assert r.choices[0].text.startswith(prompt)
            assert "".join(lp.tokens[:n]) == prompt
            assert lp.text_offset[n] == len(prompt)
        # the generated token: the same numbers as without echo
        plain = c.completions.create(prompt=prompt, **{**ask, "echo": False}).choices[0]
        assert plain.logprobs.token_logprobs[0] == pytest.approx(lp.token_logprobs[n], abs=1e-5)
        return r

    paris = score("The capital of France is Paris")
    banana = score("The capital of France is banana")
    n = paris.usage.prompt_tokens
    assert (
        paris.choices[0].logprobs.token_logprobs[n - 1]
        > (banana.choices[0].logprobs.token_logprobs[banana.usage.prompt_tokens - 1])
    )
    from tritium.engine.loader import load_checkpoint

    tokenizer = load_checkpoint("smollm2", progress=False).tokenizer
    ids = tokenizer.encode("The capital of France is Paris")  # as lm-eval sends a prompt
    by_ids = score(ids).choices[0].logprobs.token_logprobs
    assert by_ids[0] is None
    assert by_ids[1:] == pytest.approx(paris.choices[0].logprobs.token_logprobs[1:], abs=1e-5)
    streamed = [
        x
        for ch in c.completions.create(prompt="The capital of France is Paris", stream=True, **ask)
        for x in (ch.choices[0].logprobs.token_logprobs if ch.choices[0].logprobs else [])
    ]
    assert streamed[0] is None
    assert streamed[1:] == pytest.approx(paris.choices[0].logprobs.token_logprobs[1:], abs=1e-5)
    # max_tokens 0 with echo: the prompt scored, nothing generated (streamed or not).
    n = paris.usage.prompt_tokens
    only = c.completions.create(prompt="The capital of France is Paris", **{**ask, "max_tokens": 0})
    assert only.choices[0].text == "The capital of France is Paris"
    assert only.usage.completion_tokens == 0 and only.choices[0].finish_reason == "length"
    scored = only.choices[0].logprobs.token_logprobs
    assert len(scored) == n and scored[0] is None
    assert scored[1:] == pytest.approx(paris.choices[0].logprobs.token_logprobs[1:n], abs=1e-5)
    chunks = list(
        c.completions.create(
            prompt="The capital of France is Paris", stream=True,
            stream_options={"include_usage": True}, **{**ask, "max_tokens": 0},
        )
    )  # fmt: skip
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == only.choices[0].text
    assert chunks[-1].usage.completion_tokens == 0
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        c.completions.create(model="smollm2", prompt="Hello", max_tokens=0)


def test_greedy_is_deterministic(server: RunningServer) -> None:
    c = openai.OpenAI(base_url=f"{server.http_url}/v1", api_key="x")
    texts = {
        c.completions.create(
            model="smollm2", prompt="My favourite colour is", max_tokens=12, temperature=0
        )
        .choices[0]
        .text
        for _ in range(2)
    }
    assert len(texts) == 1


async def test_both_models_concurrently(server: RunningServer) -> None:
    c = openai.AsyncOpenAI(base_url=f"{server.http_url}/v1", api_key="x")
    jobs = [
        c.completions.create(
            model=m, prompt=p, max_tokens=8, temperature=0, extra_body={"ignore_eos": True}
        )
        for m in ("smollm2", "smollm2-chat")
        for p in prompts()[:4]
    ]
    results = await asyncio.gather(*jobs)
    assert all(r.choices[0].text and r.usage.completion_tokens == 8 for r in results)
    await c.close()


def test_cancellation_frees_the_engine(server: RunningServer) -> None:
    def aborted(text: str) -> float:
        m = re.search(
            r'^vllm:request_success_total\{[^}]*finished_reason="abort"[^}]*'
            r'model_name="smollm2"[^}]*\} (\S+)$|^vllm:request_success_total\{[^}]*'
            r'model_name="smollm2"[^}]*finished_reason="abort"[^}]*\} (\S+)$',
            text,
            re.M,
        )
        return float(m.group(1) or m.group(2)) if m else 0.0

    before = aborted(server.metrics())
    body = {"text_input": "Write a long story about a dragon.", "stream": True,
            "parameters": {"max_tokens": 1500, "ignore_eos": True}}  # fmt: skip
    with httpx.stream(
        "POST", f"{server.http_url}/v2/models/smollm2/generate_stream", json=body, timeout=60
    ) as s:
        events: list[str] = []
        for line in s.iter_lines():
            if line:
                events.append(line)
            if len(events) < 3:
                continue
            assert all(e.startswith("data: ") and "text_output" in e for e in events), events
            # While it streams, the vllm:* gauges track it (autoscaling reads them): one
            # request running, blocks held, generated tokens climbing between scrapes. Read
            # them inside the loop: leaving iter_lines() closes the connection.
            first = metric(server.metrics(), "vllm:generation_tokens_total", "smollm2")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                text = server.metrics()
                if metric(text, "vllm:generation_tokens_total", "smollm2") > first:
                    break
                time.sleep(0.2)
            assert metric(text, "vllm:num_requests_running", "smollm2") == 1
            assert metric(text, "vllm:kv_cache_usage_perc", "smollm2") > 0
            assert metric(text, "vllm:generation_tokens_total", "smollm2") > first
            break
    assert len(events) >= 3, events
    # Closing the stream mid-way (1,500 tokens take a minute here) is a client disconnect:
    # the engine must abort the request and give its blocks back.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = server.metrics()
        if (
            aborted(text) == before + 1
            and metric(text, "vllm:num_requests_running", "smollm2") == 0
            and metric(text, "vllm:kv_cache_usage_perc", "smollm2") == 0
        ):
            break
        time.sleep(0.2)
    assert aborted(text) == before + 1
    assert metric(text, "vllm:num_requests_running", "smollm2") == 0
    assert metric(text, "vllm:kv_cache_usage_perc", "smollm2") == 0


def test_metrics_after_requests(server: RunningServer) -> None:
    text = server.metrics()
    for model in ("smollm2", "smollm2-chat"):
        for name in ("vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                     "vllm:time_to_first_token_seconds_count", "vllm:e2e_request_latency_seconds_count",
                     "vllm:inter_token_latency_seconds_count", "vllm:prefix_cache_queries_total"):  # fmt: skip
            assert metric(text, name, model) > 0, name
        metric(text, "vllm:num_preemptions_total", model)
        metric(text, "vllm:prefix_cache_hits_total", model)
        metric(text, "vllm:num_requests_waiting", model)
        for name in ("nv_inference_request_success", "nv_inference_queue_duration_us",
                     "nv_inference_compute_infer_duration_us"):  # fmt: skip
            m = re.search(rf'^{name}\{{model="{model}",version="1"\}} (\S+)$', text, re.M)
            assert m and float(m.group(1)) > 0, name


def _worker_pid(server: RunningServer) -> int | None:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if b"tritium.backends.llm.worker" in cmd and parent == server.proc.pid:
            return int(pid)
    return None


def test_killed_worker_marks_models_unavailable_then_reload(server: RunningServer) -> None:
    """kill -9 of the engine worker: the in-flight request fails, the server lives on,
    both models on that device turn UNAVAILABLE with the reason, and loading them again
    starts a fresh worker."""
    worker = _worker_pid(server)
    assert worker is not None
    body = {"text_input": "Tell me a story.", "stream": True,
            "parameters": {"max_tokens": 1000, "ignore_eos": True}}  # fmt: skip
    events = []
    url = server.http_url
    with httpx.stream(
        "POST", f"{url}/v2/models/smollm2/generate_stream", json=body, timeout=120
    ) as s:
        for line in s.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if len(events) == 3:
                    os.kill(worker, signal.SIGKILL)
    assert "error" in events[-1] and "exited" in events[-1]["error"], events[-1]
    assert server.proc.poll() is None
    index = {e["name"]: e for e in httpx.post(f"{url}/v2/repository/index").json()}
    for name in ("smollm2", "smollm2-chat"):
        assert index[name]["state"] == "UNAVAILABLE" and "exited" in index[name]["reason"], index
        assert httpx.post(f"{url}/v2/repository/models/{name}/load", timeout=300).status_code == 200
    r = httpx.post(
        f"{url}/v2/models/smollm2-chat/generate",
        json={"PROMPT": "Hello", "STREAM": False, "parameters": {"max_tokens": 4}},
        timeout=180,
    )
    assert r.status_code == 200, r.text
    assert _worker_pid(server) not in (None, worker)
