"""`tritium serve` as a process: endpoint log lines, repository control, SIGTERM, exit codes."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from serving import ROOT, free_port

from .conftest import PYTHON_MODELS, start_server


def test_explicit_mode_repository_api(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--model-control-mode", "explicit", "--load-model", "add_sub")
    try:
        log = server.log()
        assert f"Started GRPCInferenceService at 127.0.0.1:{server.grpc_port}" in log
        assert f"Started HTTPService at 127.0.0.1:{server.http_port}" in log
        assert f"Started Metrics Service at 127.0.0.1:{server.metrics_port}" in log
        with httpx.Client(base_url=server.http_url, timeout=60) as http:
            index = {m["name"]: m for m in http.post("/v2/repository/index").json()}
            assert index["add_sub"]["state"] == "READY"
            assert index["string_identity"] == {"name": "string_identity"}
            assert http.post("/v2/repository/models/string_identity/load").status_code == 200
            assert http.get("/v2/models/string_identity/ready").status_code == 200
            r = http.post("/v2/repository/models/nope/load")
            assert r.status_code == 500
            assert r.json() == {
                "error": "failed to load 'nope', failed to poll from model repository"
            }
            # A load with a config override and the model file sent inline.
            model_py = (PYTHON_MODELS / "add_sub" / "1" / "model.py").read_bytes()
            config = json.dumps({"name": "inline", "backend": "python", "max_batch_size": 8,
                                 "input": [{"name": n, "data_type": "TYPE_FP32", "dims": [4]} for n in ("INPUT0", "INPUT1")],
                                 "output": [{"name": n, "data_type": "TYPE_FP32", "dims": [4]} for n in ("OUTPUT0", "OUTPUT1")]})  # fmt: skip
            params = {"config": config, "file:1/model.py": base64.b64encode(model_py).decode()}
            r = http.post("/v2/repository/models/inline/load", json={"parameters": params})
            assert r.status_code == 200, r.text
            assert http.get("/v2/models/inline/ready").status_code == 200
            assert http.post("/v2/repository/models/string_identity/unload").status_code == 200
            unloaded = {m["name"]: m for m in http.post("/v2/repository/index").json()}[
                "string_identity"
            ]
            assert unloaded["state"] == "UNAVAILABLE" and unloaded["reason"] == "unloaded"
            ready_only = http.post("/v2/repository/index", json={"ready": True}).json()
            assert "string_identity" not in {m["name"] for m in ready_only}
    finally:
        assert server.stop() == 0


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    server = start_server(
        tmp_path, "--model-control-mode", "explicit", "--load-model", "repeat_decoupled"
    )
    events: list[str] = []

    def stream() -> None:
        body = {"IN": [1, 2, 3], "DELAY": [300, 300, 300]}
        with httpx.stream(
            "POST",
            f"{server.http_url}/v2/models/repeat_decoupled/generate_stream",
            json=body,
            timeout=30,
        ) as r:
            events.extend(line for line in r.iter_lines() if line.startswith("data:"))

    t = threading.Thread(target=stream)
    t.start()
    import time

    time.sleep(0.4)  # the request is in flight
    server.proc.send_signal(signal.SIGTERM)
    t.join(30)
    assert server.proc.wait(30) == 0
    assert len(events) == 3  # the in-flight stream finished before the server went away


def test_exit_on_error_when_a_port_is_taken(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "tritium.cli", "serve", "--model-repository", str(PYTHON_MODELS),
               "--model-control-mode", "explicit", "--http-address", "127.0.0.1", "--http-port", str(port),
               "--grpc-port", str(free_port()), "--grpc-address", "127.0.0.1", "--allow-metrics", "false"]  # fmt: skip
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "already in use" in proc.stderr
