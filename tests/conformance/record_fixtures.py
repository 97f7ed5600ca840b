"""Record NVIDIA Triton's answers to the conformance cases as JSON fixtures.

    python tests/conformance/record_fixtures.py            # start Triton, record, stop
    python tests/conformance/record_fixtures.py --tritium  # the same cases against Tritium,
                                                           # into /tmp/tritium-conformance/
    python tests/conformance/triton_compare.py             # then a readable diff

Triton is NVIDIA's own tritonserver from the nvidia-pytriton wheel, found or installed in
its own venv by benchmarks/triton_reference.py. CI has no Triton: it compares Tritium
against the files written here (tests/conformance/fixtures/).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "benchmarks"))

import triton_cases as cases  # noqa: E402

FIXTURES = HERE / "fixtures"
PYTHON_MODELS = ROOT / "examples" / "python_models"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_repository(dest: Path) -> Path:
    """The example models in a scratch folder, so nothing is written into the checkout."""
    repo = dest / "python_models"
    shutil.copytree(PYTHON_MODELS, repo, ignore=shutil.ignore_patterns("__pycache__"))
    return repo


@contextmanager
def triton_server(repo: Path, *extra: str) -> Iterator[tuple[str, str, str]]:
    import triton_reference

    ports = (free_port(), free_port(), free_port())
    with triton_reference.running(repo, ports, extra_args=list(extra)) as t:
        wait_models_settled(t.http_url)
        yield t.http_url, t.grpc_url, t.metrics_url


@contextmanager
def tritium_server(repo: Path, *extra: str) -> Iterator[tuple[str, str, str]]:
    """`tritium serve` on `repo` (its log next to the repository copy)."""
    ports = (free_port(), free_port(), free_port())
    cmd = [
        sys.executable, "-m", "tritium.cli", "serve", "--model-repository", str(repo),
        "--http-address", "127.0.0.1", "--http-port", str(ports[0]),
        "--grpc-address", "127.0.0.1", "--grpc-port", str(ports[1]),
        "--metrics-address", "127.0.0.1", "--metrics-port", str(ports[2]),
        "--exit-timeout-secs", "5", *extra,
    ]  # fmt: skip
    log_path = repo.parent / f"tritium-{ports[0]}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    http = f"http://127.0.0.1:{ports[0]}"
    try:
        wait_live(http, proc, str(log_path))
        wait_models_settled(http)
        yield http, f"127.0.0.1:{ports[1]}", f"http://127.0.0.1:{ports[2]}/metrics"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_live(
    http: str, proc: subprocess.Popen[bytes], log_name: str, timeout_s: float = 180
) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {Path(log_name).read_text(errors='replace')}")
        try:
            if httpx.get(http + "/v2/health/live", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError("server not live")


def wait_models_settled(http: str, timeout_s: float = 180) -> None:
    """Until no model is LOADING (the servers open their ports at different moments)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        index = httpx.post(http + "/v2/repository/index", timeout=10).json()
        if not any(e.get("state") in ("LOADING", "UNLOADING") for e in index):
            return
        time.sleep(0.2)


def run_none_mode(start: Callable[..., Any]) -> dict[str, Any]:
    """Every case of the `none` control mode against one server made by `start`."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = copy_repository(Path(tmp))
        with start(repo) as (http, grpc_target, metrics):
            # Metrics first see every model (before any request) and then after the cases.
            results["metrics_start"] = cases.scrape_metrics(metrics)
            results["http"] = cases.run_http(http, cases.http_cases())
            results["grpc"] = cases.run_grpc(grpc_target, cases.grpc_cases())
            results["metrics"] = cases.scrape_metrics(metrics)
    return results


def run_explicit_mode(start: Callable[..., Any]) -> dict[str, Any]:
    """The repository cases: `explicit` mode, add_sub loaded at start, extra broken models."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = copy_repository(Path(tmp))
        cases.write_extra_models(repo)
        with start(repo, "--model-control-mode=explicit", "--load-model=add_sub") as (
            http,
            _,
            _,
        ):
            return {"http_explicit": cases.run_http(http, cases.explicit_http_cases())}


def record_all(start: Callable[..., Any], out_dir: Path) -> dict[str, Any]:
    """Run every case against servers made by `start`, write one JSON file per group."""
    results = {**run_none_mode(start), **run_explicit_mode(start)}
    out_dir.mkdir(parents=True, exist_ok=True)
    for group, doc in results.items():
        path = out_dir / f"{group}.json"
        path.write_text(json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return results


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tritium", action="store_true", help="record Tritium instead of Triton")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.tritium:
        record_all(tritium_server, args.out or Path(tempfile.gettempdir()) / "tritium-conformance")
    else:
        record_all(triton_server, args.out or FIXTURES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
