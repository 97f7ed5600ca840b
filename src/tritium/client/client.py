"""`tritium client`: send a file of prompts to an LLM model and write the answers to a file.

The seed deployment's client, measured right. Every prompt is sent at once: over gRPC all
share ONE ModelStreamInfer stream (responses routed by request id); over HTTP each is a
generate_stream request. The model's tensor convention (vLLM `text_input` / seed `PROMPT`)
is read from its metadata.

Results file: for each prompt in file order (then the next iteration), its answer followed
by the seed client's separator `\\n\\n=========\\n\\n`. The answer is the text the model
returned, streamed pieces joined: a model that echoes the prompt in non-streaming mode
(the seed's `TEXT`, vLLM's `text_output` without `exclude_input_in_output`) has the prompt
at the start of its answer, as the server sent it. A failed request's entry is
`ERROR: <message>`.

Timing: TTFT is from sending the request to its first response carrying text, total time
to its last response (monotonic clock). Output tokens come from the server's
`num_output_tokens` when the model returns it; otherwise streamed responses are counted
(streaming) or characters (non-streaming), and the summary says which.

Exit status: 0 when every request succeeded, 1 when any failed (error response, timeout,
lost connection), 2 when nothing could be sent (server unreachable, unknown model, bad
arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tritium.client.command import connect, parse_sampling_parameters, run_command
from tritium.client.datasets import load_prompts
from tritium.client.metrics import RequestRecord, measure
from tritium.client.transports import TransportOptions

RESULT_SEPARATOR = "\n\n=========\n\n"
# The seed client's sampling parameters, kept as the default so results stay comparable.
DEFAULT_SAMPLING = {"temperature": 0.1, "top_p": 0.95, "max_tokens": 100}
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `client` subcommand."""
    p = subparsers.add_parser(
        "client",
        help="send prompts to an LLM model (gRPC stream or HTTP) and write the answers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-m", "--model-name", "--model", required=True, dest="model_name")
    p.add_argument("--input-prompts", default="prompts.txt", help="one prompt per line")
    p.add_argument("--results-file", default="results.txt")
    p.add_argument("-s", "--streaming-mode", action="store_true", help="stream each answer")
    p.add_argument("--iterations", type=int, default=1, help="passes through the prompts")
    p.add_argument("--offset", type=int, default=0, help="added to every request id")
    p.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    p.add_argument(
        "-u", "--url", default=None, help="host:port (default localhost:8001 grpc, :8000 http)"
    )
    p.add_argument(
        "-t",
        "--stream-timeout",
        type=float,
        default=None,
        help="seconds a request may take from send to last response (default: no limit)",
    )
    p.add_argument(
        "--sampling-parameters",
        default=None,
        help=f"JSON object of sampling parameters (default {json.dumps(DEFAULT_SAMPLING)})",
    )
    p.add_argument("--max-tokens", type=int, default=None, help="overrides max_tokens")
    p.add_argument("--temperature", type=float, default=None, help="overrides temperature")
    p.add_argument(
        "--exclude-inputs-in-outputs",
        action="store_true",
        help="vLLM convention: ask the model not to echo the prompt",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("-v", "--verbose", action="store_true", help="print every response")
    p.set_defaults(func=run)


def sampling_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON (or the seed's default) with --max-tokens / --temperature applied."""
    params = dict(DEFAULT_SAMPLING)
    if args.sampling_parameters is not None:
        params = parse_sampling_parameters(args.sampling_parameters)
    if args.max_tokens is not None:
        params["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        params["temperature"] = args.temperature
    return params


def request_ids(num_prompts: int, iterations: int, offset: int) -> list[str]:
    """The seed's ids: offset + iteration * num_prompts + index, unique across iterations."""
    return [
        str(offset + it * num_prompts + i) for it in range(iterations) for i in range(num_prompts)
    ]


def write_results(path: str | Path, records: list[RequestRecord]) -> None:
    """Each answer (or `ERROR: ...`) in request order, each followed by the separator."""
    with open(path, "w", encoding="utf-8") as out:
        for record in records:
            out.write(record.text if record.success else f"ERROR: {record.error}")
            out.write(RESULT_SEPARATOR)


def read_results(path: str | Path) -> list[str]:
    """The answers of a results file written by write_results (for tests and scripts)."""
    text = Path(path).read_text(encoding="utf-8")
    return text.split(RESULT_SEPARATOR)[:-1]


def count_unit(records: list[RequestRecord], streaming: bool) -> str:
    """How output is counted: server tokens when every answer has them, else a stand-in."""
    done = [r for r in records if r.success]
    if done and all(r.server_output_tokens is not None for r in done):
        return "tokens"
    return "responses" if streaming else "characters"


def output_count(record: RequestRecord, unit: str) -> int:
    if unit == "tokens":
        return record.server_output_tokens or 0
    if unit == "responses":
        return record.num_chunks
    return len(record.text)


def report(
    records: list[RequestRecord], duration: float, streaming: bool, file: Any = sys.stdout
) -> None:
    """Per-request timings, then the summary."""
    unit = count_unit(records, streaming)
    for record in records:
        if record.success:
            print(
                f"request {record.request_id}: time to first token {record.ttft * 1e3:.2f} ms, "
                f"total {record.latency * 1e3:.2f} ms, {output_count(record, unit)} {unit}",
                file=file,
            )
        else:
            print(f"request {record.request_id}: FAILED: {record.error}", file=file)
    done = [r for r in records if r.success]
    failed = len(records) - len(done)
    total = sum(output_count(r, unit) for r in done)
    how = {
        "tokens": "counted by the server: num_output_tokens",
        "responses": "no server token count: streamed responses counted",
        "characters": "no server token count: characters counted",
    }[unit]
    rate = total / duration if duration > 0 else 0.0
    print("=" * 60, file=file)
    print(f"requests:          {len(records)} ({len(done)} succeeded, {failed} failed)", file=file)
    print(f"duration:          {duration:.3f} s", file=file)
    print(f"output {unit}:{' ' * max(1, 11 - len(unit))}{total} ({how})", file=file)
    print(
        f"throughput:        {rate:.2f} {unit}/s, {len(done) / duration:.2f} requests/s", file=file
    )
    if done:
        mean_ttft = sum(r.ttft for r in done) / len(done)
        mean_total = sum(r.latency for r in done) / len(done)
        print(f"mean TTFT:         {mean_ttft * 1e3:.2f} ms", file=file)
        print(f"mean total time:   {mean_total * 1e3:.2f} ms", file=file)
    print(f"errors:            {failed}", file=file)


async def run_client(args: argparse.Namespace) -> int:
    try:
        prompts = load_prompts(args.input_prompts)
        params = sampling_parameters(args)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    url = args.url or f"localhost:{DEFAULT_PORTS[args.protocol]}"
    options = TransportOptions(
        url=url,
        model=args.model_name,
        streaming=args.streaming_mode,
        sampling_parameters=params,
        exclude_input_in_output=args.exclude_inputs_in_outputs,
        verbose=args.verbose,
    )
    transport = await connect(f"triton-{args.protocol}", options)
    if transport is None:
        return 2
    print(f"Loading inputs from `{args.input_prompts}`: {len(prompts)} prompts", file=sys.stderr)
    ids = request_ids(len(prompts), args.iterations, args.offset)
    jobs = [(rid, prompts[i % len(prompts)]) for i, rid in enumerate(ids)]
    bar = tqdm(total=len(jobs), unit="req", file=sys.stderr, disable=args.no_progress)

    async def one(rid: str, prompt: str) -> RequestRecord:
        record = await measure(transport, prompt, None, rid, timeout=args.stream_timeout)
        bar.update(1)
        return record

    start = time.perf_counter()
    try:
        records = await asyncio.gather(*(one(rid, prompt) for rid, prompt in jobs))
    finally:
        duration = time.perf_counter() - start
        bar.close()
        await transport.close()
    write_results(args.results_file, records)
    print(f"Storing results into `{args.results_file}`", file=sys.stderr)
    report(records, duration, args.streaming_mode)
    return 0 if all(r.success for r in records) else 1


def run(args: argparse.Namespace) -> int:
    """Entry point of `tritium client`."""
    return run_command(run_client(args))
