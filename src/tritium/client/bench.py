"""`tritium bench`: a serving benchmark in the manner of `vllm bench serve`.

Sends a dataset of prompts to a Triton-compatible (gRPC stream_infer, HTTP generate_stream)
or OpenAI-compatible (chat or completions, streaming) endpoint at a fixed concurrency or at
Poisson-distributed arrival times, and reports TTFT, TPOT, ITL and end-to-end latency
(mean, median, std, p90, p99), request and token throughput, as a table and as JSON.

Output tokens are the server's count (OpenAI `usage` with stream_options.include_usage;
vLLM-convention `num_output_tokens` with return_num_output_tokens) when every request has
one, else the number of streamed responses; input tokens likewise from the server, else
the prompt's words. The JSON says which (`output_token_source`, `input_token_source`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tqdm import tqdm

from tritium.client.arrivals import arrival_times
from tritium.client.command import connect, parse_sampling_parameters, run_command
from tritium.client.datasets import BenchRequest, file_dataset, random_dataset
from tritium.client.metrics import RequestRecord, flat_metrics, measure
from tritium.client.transports import BACKENDS, Transport, TransportOptions

DEFAULT_URLS = {
    "triton-grpc": "localhost:8001",
    "triton-http": "localhost:8000",
    "openai-chat": "localhost:8000",
    "openai-completions": "localhost:8000",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `bench` subcommand."""
    p = subparsers.add_parser(
        "bench",
        help="serving benchmark (TTFT, TPOT, ITL, throughput) against a Triton or OpenAI endpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--backend", choices=BACKENDS, default="triton-grpc")
    p.add_argument("--model", required=True, help="model name at the endpoint")
    p.add_argument("--url", default=None, help="host:port (default: the backend's usual port)")
    p.add_argument(
        "--dataset",
        "--dataset-name",
        choices=["prompts", "random"],
        default=None,
        help="'prompts' (a file, --dataset-path) or 'random' words (default: prompts when "
        "--dataset-path is given, else random)",
    )
    p.add_argument("--dataset-path", default=None, help="prompts file, one prompt per line")
    p.add_argument("--num-prompts", type=int, default=100, help="requests to send (cycles)")
    p.add_argument("--max-tokens", type=int, default=128, help="output length (prompts file)")
    p.add_argument("--random-input-len", type=int, default=1024, help="words per random prompt")
    p.add_argument("--random-output-len", type=int, default=128, help="max tokens per request")
    p.add_argument("--random-range-ratio", type=float, default=0.0)
    p.add_argument("--ignore-eos", action="store_true", help="send ignore_eos: generate all tokens")
    p.add_argument("--max-concurrency", type=int, default=None, help="requests in flight at most")
    p.add_argument(
        "--request-rate", type=float, default=math.inf, help="requests/s (default inf: all at once)"
    )
    p.add_argument("--burstiness", type=float, default=1.0, help="1.0: Poisson arrivals")
    p.add_argument("--num-warmups", type=int, default=0, help="unmeasured requests sent first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--sampling-parameters", default=None, help="JSON object sent with each request")
    p.add_argument("--request-timeout", type=float, default=None, help="seconds per request")
    p.add_argument("--result-json", default=None, help="write the results here")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class BenchConfig:
    """How requests are sent."""

    request_rate: float = math.inf
    burstiness: float = 1.0
    max_concurrency: int | None = None
    seed: int = 0
    request_timeout: float | None = None
    progress: bool = True


async def send_all(
    transport: Transport, requests: list[BenchRequest], config: BenchConfig, schedule: bool = True
) -> tuple[list[RequestRecord], float]:
    """Send every request (at its arrival time when schedule), at most max_concurrency at
    once; return the records in request order and the wall-clock duration."""
    times = (
        arrival_times(len(requests), config.request_rate, config.burstiness, config.seed)
        if schedule
        else [0.0] * len(requests)
    )
    limit = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None
    bar = tqdm(total=len(requests), unit="req", file=sys.stderr, disable=not config.progress)
    start = time.perf_counter()

    async def one(i: int, request: BenchRequest) -> RequestRecord:
        delay = start + times[i] - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if limit is None:
            record = await measure(
                transport, request.prompt, request.max_tokens, timeout=config.request_timeout
            )
        else:
            async with limit:
                record = await measure(
                    transport, request.prompt, request.max_tokens, timeout=config.request_timeout
                )
        bar.update(1)
        return record

    try:
        records = await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
    finally:
        bar.close()
    return list(records), time.perf_counter() - start


def compute_metrics(
    requests: list[BenchRequest], records: list[RequestRecord], duration: float
) -> dict[str, Any]:
    """vLLM-style result metrics for one benchmark run."""
    done = [(q, r) for q, r in zip(requests, records, strict=True) if r.success]
    server_out = bool(done) and all(r.server_output_tokens is not None for _, r in done)
    server_in = bool(done) and all(r.server_input_tokens is not None for _, r in done)
    output_lens = [r.output_tokens for _, r in done]
    input_lens = [
        r.server_input_tokens if server_in and r.server_input_tokens is not None else q.prompt_words
        for q, r in done
    ]
    total_in, total_out = sum(input_lens), sum(output_lens)
    result: dict[str, Any] = {
        "duration": duration,
        "completed": len(done),
        "failed": len(records) - len(done),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "input_token_source": "server" if server_in else "prompt words (estimate)",
        "output_token_source": "server" if server_out else "streamed responses",
        "request_throughput": len(done) / duration if duration > 0 else 0.0,
        "output_throughput": total_out / duration if duration > 0 else 0.0,
        "total_token_throughput": (total_in + total_out) / duration if duration > 0 else 0.0,
    }
    result |= flat_metrics("ttft", [r.ttft for _, r in done])
    result |= flat_metrics("tpot", [t for _, r in done if (t := r.tpot) is not None])
    result |= flat_metrics("itl", [gap for _, r in done for gap in r.itl])
    result |= flat_metrics("e2el", [r.latency for _, r in done])
    result |= {
        "input_lens": input_lens,
        "output_lens": output_lens,
        "ttfts": [r.ttft for _, r in done],
        "itls": [r.itl for _, r in done],
        "errors": [r.error for r in records if not r.success],
    }
    return result


def format_table(result: dict[str, Any]) -> str:
    """The result as `vllm bench serve` prints it."""
    lines = ["{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=50, c="=")]

    def row(label: str, value: Any) -> None:
        text = f"{value:.2f}" if isinstance(value, float) else str(value)
        lines.append(f"{label:<40} {text:<10}")

    row("Successful requests:", result["completed"])
    row("Failed requests:", result["failed"])
    if result.get("max_concurrency"):
        row("Maximum request concurrency:", result["max_concurrency"])
    row("Benchmark duration (s):", result["duration"])
    row("Total input tokens:", result["total_input_tokens"])
    row("Total generated tokens:", result["total_output_tokens"])
    row("Request throughput (req/s):", result["request_throughput"])
    row("Output token throughput (tok/s):", result["output_throughput"])
    row("Total Token throughput (tok/s):", result["total_token_throughput"])
    sections = (
        ("ttft", "TTFT", "Time to First Token"),
        ("tpot", "TPOT", "Time per Output Token (excl. 1st token)"),
        ("itl", "ITL", "Inter-token Latency"),
        ("e2el", "E2EL", "End-to-end Latency"),
    )
    for key, short, title in sections:
        lines.append("{s:{c}^{n}}".format(s=title, n=50, c="-"))
        row(f"Mean {short} (ms):", result[f"mean_{key}_ms"])
        row(f"Median {short} (ms):", result[f"median_{key}_ms"])
        row(f"P90 {short} (ms):", result[f"p90_{key}_ms"])
        row(f"P99 {short} (ms):", result[f"p99_{key}_ms"])
    lines.append(
        f"(input tokens: {result['input_token_source']}; "
        f"output tokens: {result['output_token_source']})"
    )
    lines.append("=" * 50)
    return "\n".join(lines)


def build_dataset(args: argparse.Namespace) -> list[BenchRequest]:
    kind = args.dataset or ("prompts" if args.dataset_path else "random")
    if kind == "prompts":
        if not args.dataset_path:
            raise ValueError("--dataset prompts needs --dataset-path")
        return file_dataset(args.dataset_path, args.num_prompts, args.max_tokens)
    return random_dataset(
        args.num_prompts,
        args.random_input_len,
        args.random_output_len,
        args.random_range_ratio,
        args.seed,
    )


def transport_options(args: argparse.Namespace) -> TransportOptions:
    params: dict[str, Any] = {}
    if args.sampling_parameters:
        params = parse_sampling_parameters(args.sampling_parameters)
    if args.temperature is not None:
        params["temperature"] = args.temperature
    return TransportOptions(
        url=args.url or DEFAULT_URLS[args.backend],
        model=args.model,
        streaming=True,
        sampling_parameters=params,
        ignore_eos=args.ignore_eos,
        # Streaming answers never echo the prompt; set it anyway for servers that would.
        exclude_input_in_output=True,
        verbose=args.verbose,
    )


async def run_bench(args: argparse.Namespace) -> int:
    try:
        requests = build_dataset(args)
        options = transport_options(args)
        config = BenchConfig(
            request_rate=args.request_rate,
            burstiness=args.burstiness,
            max_concurrency=args.max_concurrency,
            seed=args.seed,
            request_timeout=args.request_timeout,
            progress=not args.no_progress,
        )
        arrival_times(1, config.request_rate, config.burstiness)  # validates rate, burstiness
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    transport = await connect(args.backend, options)
    if transport is None:
        return 2
    try:
        if args.num_warmups > 0:
            warmups = [requests[i % len(requests)] for i in range(args.num_warmups)]
            print(f"Warming up with {len(warmups)} requests...", file=sys.stderr)
            records, _ = await send_all(transport, warmups, config, schedule=False)
            if not any(r.success for r in records):
                print(f"error: every warm-up request failed: {records[0].error}", file=sys.stderr)
                return 1
        rate = "inf" if math.isinf(config.request_rate) else f"{config.request_rate:g}"
        print(
            f"Benchmarking {len(requests)} requests to {options.url} ({args.backend}), "
            f"request rate {rate}, max concurrency {config.max_concurrency or 'none'}",
            file=sys.stderr,
        )
        records, duration = await send_all(transport, requests, config)
    finally:
        await transport.close()
    result = compute_metrics(requests, records, duration)
    result = {
        "date": datetime.now(UTC).strftime("%Y%m%d-%H%M%S"),
        "backend": args.backend,
        "model_id": args.model,
        "url": options.url,
        "dataset": args.dataset or ("prompts" if args.dataset_path else "random"),
        "num_prompts": len(requests),
        "request_rate": "inf" if math.isinf(config.request_rate) else config.request_rate,
        "burstiness": config.burstiness,
        "max_concurrency": config.max_concurrency,
        "num_warmups": args.num_warmups,
        "seed": args.seed,
        "ignore_eos": args.ignore_eos,
    } | result
    print(format_table(result))
    if result["errors"]:
        print(f"first error: {result['errors'][0]}", file=sys.stderr)
    if args.result_json:
        with open(args.result_json, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=2)
    return 0 if result["failed"] == 0 else 1


def run(args: argparse.Namespace) -> int:
    """Entry point of `tritium bench`."""
    return run_command(run_bench(args))
