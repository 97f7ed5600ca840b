"""Server overhead: requests/s and p50/p99 latency of add_sub over HTTP and gRPC.

Runs Tritium (`tritium serve`) and NVIDIA's tritonserver (the nvidia-pytriton wheel's, found
or installed by benchmarks/triton_reference.py) on the same model repository
(examples/python_models/add_sub), at concurrency 1, 16 and 64, with the same clients (httpx
for HTTP/JSON, tritonclient.grpc.aio for gRPC). Prints a table and writes JSON under
benchmarks/out/.

    python benchmarks/server_overhead.py --duration 5
    python benchmarks/server_overhead.py --no-triton     # Tritium only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc.aio as grpcaio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton_reference  # noqa: E402

MODEL_DIR = ROOT / "examples" / "python_models" / "add_sub"
BODY = json.dumps(  # the same JSON request every time
    {
        "inputs": [
            {"name": n, "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}
            for n in ("INPUT0", "INPUT1")
        ]
    }
).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(http_port: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if (
                httpx.get(
                    f"http://127.0.0.1:{http_port}/v2/models/add_sub/ready", timeout=1
                ).status_code
                == 200
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("server not ready in time")


def start_tritium(repo: Path, ports: tuple[int, int, int]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tritium.cli", "serve", "--model-repository", str(repo),
           "--http-address", "127.0.0.1", "--http-port", str(ports[0]),
           "--grpc-address", "127.0.0.1", "--grpc-port", str(ports[1]),
           "--metrics-address", "127.0.0.1", "--metrics-port", str(ports[2])]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)


def start_triton(repo: Path, ports: tuple[int, int, int]) -> triton_reference.RunningTriton:
    """NVIDIA's tritonserver from the nvidia-pytriton wheel, via triton_reference (which
    puts the wheel's venv first on PATH: the Python stub embeds the first python3 there)."""
    return triton_reference.start(
        repo, ports, extra_args=["--allow-metrics=false"], timeout_s=180.0
    )


def summarize(latencies: list[float], elapsed: float) -> dict[str, float]:
    lat = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "mean_ms": statistics.fmean(lat),
    }


async def run_http(port: int, concurrency: int, duration: float) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/v2/models/add_sub/infer"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        latencies: list[float] = []
        end = time.perf_counter() + 0.5

        async def worker() -> None:
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                r = await client.post(
                    url, content=BODY, headers={"Content-Type": "application/json"}
                )
                if r.status_code != 200:
                    raise RuntimeError(f"HTTP {r.status_code}: {r.text}")
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(min(concurrency, 4))))  # warm up
        latencies.clear()
        end = time.perf_counter() + duration
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return summarize(latencies, time.perf_counter() - start)


async def run_grpc(port: int, concurrency: int, duration: float) -> dict[str, float]:
    client = grpcaio.InferenceServerClient(f"127.0.0.1:{port}")
    a = np.array([[1, 2, 3, 4]], dtype=np.float32)
    inputs = []
    for n in ("INPUT0", "INPUT1"):
        i = grpcaio.InferInput(n, [1, 4], "FP32")
        i.set_data_from_numpy(a)
        inputs.append(i)
    latencies: list[float] = []
    end = 0.0

    async def worker() -> None:
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            await client.infer("add_sub", inputs)
            latencies.append(time.perf_counter() - t0)

    end = time.perf_counter() + 0.5
    await asyncio.gather(*(worker() for _ in range(min(concurrency, 4))))
    latencies.clear()
    end = time.perf_counter() + duration
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result = summarize(latencies, time.perf_counter() - start)
    await client.close()
    return result


def measure(name: str, ports: tuple[int, int, int], args: argparse.Namespace) -> list[dict]:
    rows = []
    for protocol, fn, port in (("http", run_http, ports[0]), ("grpc", run_grpc, ports[1])):
        for c in args.concurrency:
            r = asyncio.run(fn(port, c, args.duration))
            rows.append({"server": name, "protocol": protocol, "concurrency": c, **r})
            print(
                f"{name:8} {protocol:5} c={c:<3} {r['rps']:9.1f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms",
                flush=True,
            )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, default=5.0, help="seconds per cell")
    p.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64]
    )
    p.add_argument("--no-triton", action="store_true", help="measure Tritium only")
    p.add_argument("--servers", default="tritium,triton", help="which servers, in order")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "server_overhead.json")
    args = p.parse_args()

    repo = Path(tempfile.mkdtemp(prefix="overhead-repo-"))
    shutil.copytree(MODEL_DIR, repo / "add_sub")
    peers = [n for n in args.servers.split(",") if n and not (args.no_triton and n == "triton")]

    rows: list[dict] = []
    for name in peers:
        ports = (free_port(), free_port(), free_port())
        if name == "tritium":
            proc = start_tritium(repo, ports)
            stop = proc.terminate
        else:
            try:
                triton = start_triton(repo, ports)
            except Exception as e:  # no wheel and no network: Tritium's numbers only
                print(f"skipping triton: {e}")
                continue
            proc, stop = triton.process, triton.stop
        try:
            wait_ready(ports[0], proc)
            rows += measure(name, ports, args)
        except Exception as e:
            print(f"skipping the rest of {name}: {e}")
        finally:
            stop()
            proc.wait(60)

    print()
    print(f"{'server':8} {'proto':5} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(
            f"{r['server']:8} {r['protocol']:5} {r['concurrency']:>4} {r['rps']:9.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "duration_s": args.duration, "results": rows,
    }, indent=2))  # fmt: skip
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
