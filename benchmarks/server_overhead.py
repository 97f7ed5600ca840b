"""Server overhead: requests/s and p50/p99 latency of add_sub over HTTP and gRPC.

Runs Tritium (`tritium serve`) and, when given `--tritonserver`, NVIDIA's tritonserver on the
same model repository (examples/python_models/add_sub), at concurrency 1, 16 and 64, with the
same clients (httpx for HTTP/JSON, tritonclient.grpc.aio for gRPC). Prints a table and writes
JSON under benchmarks/out/.

    python benchmarks/server_overhead.py --duration 5
    python benchmarks/server_overhead.py --tritonserver /tmp/pytriton-venv/lib/python3.11/site-packages/pytriton/tritonserver/bin/tritonserver
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
import sysconfig
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc.aio as grpcaio

ROOT = Path(__file__).resolve().parents[1]
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


def start_triton(binary: Path, repo: Path, ports: tuple[int, int, int]) -> subprocess.Popen:
    root = binary.resolve().parents[1]  # .../tritonserver/{bin,backends}
    env = os.environ.copy()
    site_packages = root.parents[1]
    libs = [p for p in (site_packages / "nvidia_pytriton.libs", root / "lib") if p.is_dir()]
    # the Python backend stub links libpython and imports numpy from the wheel's environment
    libs.append(Path(sysconfig.get_config_var("LIBDIR") or "/usr/lib"))
    env["LD_LIBRARY_PATH"] = ":".join([*map(str, libs), env.get("LD_LIBRARY_PATH", "")])
    env["PYTHONPATH"] = str(site_packages)
    cmd = [str(binary), "--model-repository", str(repo),
           "--backend-directory", str(root / "backends"),
           "--http-address", "127.0.0.1", "--http-port", str(ports[0]),
           "--grpc-address", "127.0.0.1", "--grpc-port", str(ports[1]),
           "--metrics-port", str(ports[2]), "--allow-metrics", "false"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


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
    p.add_argument(
        "--tritonserver", type=Path, default=None, help="path to NVIDIA's tritonserver binary"
    )
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "server_overhead.json")
    args = p.parse_args()

    repo = Path(tempfile.mkdtemp(prefix="overhead-repo-"))
    shutil.copytree(MODEL_DIR, repo / "add_sub")
    peers = [("tritium", None)]
    if args.tritonserver is not None and args.tritonserver.exists():
        peers.append(("triton", args.tritonserver))
    elif args.tritonserver is not None:
        print(f"skipping triton: {args.tritonserver} does not exist")
    else:
        print("skipping triton: pass --tritonserver PATH to compare with NVIDIA's server")

    rows: list[dict] = []
    for name, binary in peers:
        ports = (free_port(), free_port(), free_port())
        proc = start_tritium(repo, ports) if binary is None else start_triton(binary, repo, ports)
        try:
            wait_ready(ports[0], proc)
            rows += measure(name, ports, args)
        except Exception as e:
            print(f"skipping the rest of {name}: {e}")
        finally:
            proc.terminate()
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
