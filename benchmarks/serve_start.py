"""Server start-up: `tritium serve` on the example repository (two SmolLM2 models, warm
caches) until /v2/health/ready, then one generate request; the time to ready and the
memory of each process (RssAnon: the process's own; RssFile: mapped files, which the page
cache shares between processes and the kernel can drop).

    python benchmarks/serve_start.py [--src DIR] [--runs 3] [--out FILE]

`--src` runs another checkout's code (e.g. a `git worktree` of an older commit).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PORT = 18300


def get(path: str, body: dict | None = None) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", data, timeout=60) as r:
        return r.read()


def memory(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def one_run(src: str) -> dict:
    env = dict(os.environ, PYTHONPATH=src)
    cmd = [sys.executable, "-m", "tritium.cli", "serve", "--http-port", str(PORT),
           "--grpc-port", str(PORT + 1), "--metrics-port", str(PORT + 2)]  # fmt: skip
    t0 = time.perf_counter()
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while True:
            if server.poll() is not None:
                raise RuntimeError(server.stderr.read().decode()[-2000:])  # type: ignore[union-attr]
            try:
                get("/v2/health/ready")
                break
            except OSError:
                time.sleep(0.1)
        ready = time.perf_counter() - t0
        reply = json.loads(get("/v2/models/smollm2/generate", {
            "text_input": "The capital of France is",
            "parameters": {"max_tokens": 8, "temperature": 0},
        }))  # fmt: skip
        procs = {"server": memory(server.pid)}
        for i, pid in enumerate(children(server.pid)):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            name = next((a.decode() for a in cmdline if a.startswith(b"tritium.")), str(pid))
            procs[f"{name}#{i}"] = memory(pid)
        return {"ready_s": ready, "text": reply["text_output"], "processes": procs}
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default=str(ROOT / "src"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "serve_start.json"))
    args = ap.parse_args()
    results: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": platform.processor() or platform.machine(),
        "src": args.src,
        "runs": [],
    }
    one_run(args.src)  # warm the caches (conversions, kernels, prepared weights)
    for i in range(args.runs):
        run = one_run(args.src)
        results["runs"].append(run)
        mem = "; ".join(
            f"{name} anon {m['RssAnon']:.0f} MB, file {m['RssFile']:.0f} MB"
            for name, m in run["processes"].items()
        )
        print(f"run {i + 1}: ready in {run['ready_s']:.1f} s; {mem}", flush=True)
    ready = sorted(r["ready_s"] for r in results["runs"])
    results["median_ready_s"] = ready[len(ready) // 2]
    print(f"median time to ready: {results['median_ready_s']:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
