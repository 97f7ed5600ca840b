"""Two Tritium replicas behind Debian's nginx on loopback, as a Service load-balances
pods: both serve, and stopping one mid-run loses no request (proxy_next_upstream)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from serving import free_port, start_server, stop_process, wait_for

from .helpers import ROOT, ensure_debian_tool, http_status

PYTHON_MODELS = ROOT / "examples" / "python_models"
#: Seconds after SIGTERM within which the stopped replica may still answer: the signal
#: reaches its event loop and the HTTP server's next tick (0.1 s) on 2 busy cores.
DRAIN_GRACE_S = 1.0

NGINX_CONF = """
{user}
daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    log_format upstream '$msec $upstream_addr $status';
    access_log {work}/access.log upstream;
    upstream tritium {{
        server 127.0.0.1:{a} max_fails=1 fail_timeout=30s;
        server 127.0.0.1:{b} max_fails=1 fail_timeout=30s;
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://tritium;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Inference is a POST: retry it on the other replica only when this one
            # refused or dropped the connection before answering.
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 2;
        }}
    }}
}}
"""


def start_replica(repo: Path, log_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A replica, not waited for (both start at once); its process and HTTP port."""
    replica = start_server(repo, log_dir, "--exit-timeout-secs=10", wait_ready=False)
    return replica.proc, replica.http_port


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict]:
    nginx = ensure_debian_tool("nginx", "nginx")
    repo = tmp_path / "repo"
    shutil.copytree(PYTHON_MODELS / "add_sub", repo / "add_sub")
    replicas = [start_replica(repo, tmp_path) for _ in range(2)]
    work = tmp_path / "nginx"
    work.mkdir()
    port = free_port()
    conf = NGINX_CONF.format(
        user="user root;" if os.geteuid() == 0 else "",
        work=work,
        a=replicas[0][1],
        b=replicas[1][1],
        port=port,
    )
    (work / "nginx.conf").write_text(conf)
    proxy = subprocess.Popen(
        [nginx, "-c", str(work / "nginx.conf"), "-p", str(work)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for process, http in replicas:
            wait_for(
                lambda http=http, process=process: (
                    http_status(f"http://127.0.0.1:{http}/v2/health/ready") == 200
                    or process.poll() is not None
                ),
                "a replica to be ready",
            )
            assert process.poll() is None
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/v2/health/live") == 200, "nginx")
        yield {"replicas": replicas, "port": port, "access_log": work / "access.log"}
    finally:
        stop_process(proxy)
        for process, _ in replicas:
            if process.poll() is None:
                stop_process(process)


def test_both_replicas_serve_and_one_can_stop_mid_run(cluster: dict) -> None:
    import tritonclient.http as httpclient

    threads, stop_after = 4, 80
    results: list[bool] = []
    errors: list[str] = []
    lock = threading.Lock()
    stopped = threading.Event()
    sigterm_at: list[float] = []
    (first, first_port), (_, second_port) = cluster["replicas"]

    def worker() -> None:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{cluster['port']}")
        # Run until well past the drain grace, so requests exist that only the survivor
        # may answer.
        while not sigterm_at or time.time() < sigterm_at[0] + 2 * DRAIN_GRACE_S:
            inputs = [httpclient.InferInput(n, [1, 4], "FP32") for n in ("INPUT0", "INPUT1")]
            inputs[0].set_data_from_numpy(np.full((1, 4), 3.0, dtype=np.float32))
            inputs[1].set_data_from_numpy(np.full((1, 4), 2.0, dtype=np.float32))
            try:
                out = client.infer("add_sub", inputs).as_numpy("OUTPUT0")
                ok = out.tolist() == [[5.0] * 4]
            except Exception as exc:  # a lost request: record it, keep going
                ok = False
                with lock:
                    errors.append(repr(exc))
            with lock:
                results.append(ok)
                if len(results) == stop_after and not stopped.is_set():
                    stopped.set()
                    # SIGTERM, as the kubelet sends after preStop: the replica drains.
                    sigterm_at.append(time.time())
                    threading.Thread(target=first.terminate).start()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    first.wait(timeout=30)

    assert stopped.is_set()
    assert len(results) > stop_after
    assert all(results), errors[:5]  # no request lost
    served = Counter()
    late = Counter()  # answered a while after the SIGTERM
    for line in cluster["access_log"].read_text().splitlines():
        msec, upstreams, status = line.split(" ", 1)[0], *line.split(" ", 1)[1].rsplit(" ", 1)
        if status == "200":
            # On a retry nginx logs "a, b": the last one answered.
            port = upstreams.split(", ")[-1].rsplit(":", 1)[-1]
            served[port] += 1
            if float(msec) > sigterm_at[0] + DRAIN_GRACE_S:
                late[port] += 1
    assert served[str(first_port)] > 0 and served[str(second_port)] > 0, served
    # The stopped replica takes no new work once its drain has begun (within a grace for
    # the signal to land on a loaded machine): the survivor carried the rest.
    assert late[str(first_port)] == 0 and late[str(second_port)] > 0, late
