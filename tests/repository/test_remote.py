"""Remote model repositories against a real S3-compatible server on loopback (moto's
standalone server), through s3fs and botocore exactly as production uses them."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tritium.repository import remote
from tritium.repository.remote import RemoteRepository, is_remote, localize, parse_url
from tritium.server.errors import TritonError

boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

CONFIG = """name: "add_sub"
backend: "python"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] }
]
"""

MODEL_PY = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT0", a + b * VERSION),
                pb_utils.Tensor("OUTPUT1", a - b * VERSION),
            ]))
        return responses


VERSION = {version}
"""

BUCKET = "models"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Credentials and endpoint the way a pod gets them: environment variables only."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("TRITIUM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(remote, "_repositories", {})
    return s3_endpoint


@pytest.fixture
def bucket(aws_env: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh bucket prefix per test."""
    s3 = boto3.client("s3", endpoint_url=aws_env)
    try:
        s3.create_bucket(Bucket=BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    prefix = f"{request.node.name}/repo"
    yield prefix
    objects = s3.list_objects_v2(Bucket=BUCKET, Prefix=request.node.name).get("Contents", [])
    for obj in objects:
        s3.delete_object(Bucket=BUCKET, Key=obj["Key"])


def upload(endpoint: str, key: str, body: str | bytes) -> None:
    boto3.client("s3", endpoint_url=endpoint).put_object(
        Bucket=BUCKET, Key=key, Body=body.encode() if isinstance(body, str) else body
    )


def delete(endpoint: str, key: str) -> None:
    boto3.client("s3", endpoint_url=endpoint).delete_object(Bucket=BUCKET, Key=key)


def upload_add_sub(endpoint: str, prefix: str, version: int) -> None:
    upload(endpoint, f"{prefix}/add_sub/config.pbtxt", CONFIG)
    upload(endpoint, f"{prefix}/add_sub/{version}/model.py", MODEL_PY.format(version=version))


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_is_remote_tells_urls_from_paths() -> None:
    assert is_remote("s3://bucket/models")
    assert is_remote("gs://bucket/models")
    assert is_remote("memory://x")
    assert not is_remote("/models")
    assert not is_remote("relative/models")
    assert not is_remote("file:///models")
    assert not is_remote("C:/models")


def test_parse_url_accepts_tritons_spellings() -> None:
    assert parse_url("s3://bucket/path") == ("s3://bucket/path", {})
    url, options = parse_url("s3://https://minio.local:9000/bucket/path")
    assert url == "s3://bucket/path"
    assert options == {"client_kwargs": {"endpoint_url": "https://minio.local:9000"}}
    url, options = parse_url("as://account/container/models")
    assert (url, options) == ("abfs://container/models", {"account_name": "account"})
    with pytest.raises(TritonError):
        parse_url("s3://http://host:9000")


def test_sync_mirrors_the_bucket(aws_env: str, bucket: str) -> None:
    upload_add_sub(aws_env, bucket, 1)
    url = f"s3://{BUCKET}/{bucket}"

    local = localize(url)

    assert local == remote.mirror_dir(url) / "repository"
    assert local.parent.parent == Path(os.environ["TRITIUM_CACHE_DIR"]) / "repositories"
    assert tree(local) == {
        "add_sub/config.pbtxt": CONFIG,
        "add_sub/1/model.py": MODEL_PY.format(version=1),
    }
    # Nothing changed upstream: the second sync downloads nothing and says so.
    again = remote.remote_repository(url).sync()
    assert not again.changed
    assert again.downloaded_bytes == 0


def test_new_version_is_noticed_and_only_it_is_downloaded(aws_env: str, bucket: str) -> None:
    upload_add_sub(aws_env, bucket, 1)
    repo = RemoteRepository(f"s3://{BUCKET}/{bucket}")
    first = repo.sync()
    assert first.changed
    assert sorted(first.added) == ["add_sub/1/model.py", "add_sub/config.pbtxt"]
    old_snapshot = repo.current_snapshot()
    assert old_snapshot is not None

    new_model = MODEL_PY.format(version=2)
    upload(aws_env, f"{bucket}/add_sub/2/model.py", new_model)
    second = repo.sync()

    assert second.changed
    assert second.added == ["add_sub/2/model.py"]
    assert second.updated == [] and second.removed == []
    assert second.downloaded_bytes == len(new_model.encode())
    assert (repo.local_path / "add_sub/2/model.py").read_text() == new_model
    assert (repo.local_path / "add_sub/1/model.py").read_text() == MODEL_PY.format(version=1)
    # The unchanged file was linked from the previous snapshot, not downloaded again.
    new_snapshot = repo.current_snapshot()
    assert new_snapshot is not None and new_snapshot != old_snapshot
    assert (new_snapshot / "add_sub/config.pbtxt").stat().st_ino == (
        old_snapshot / "add_sub/config.pbtxt"
    ).stat().st_ino


def test_changed_and_deleted_files_are_noticed(aws_env: str, bucket: str) -> None:
    upload_add_sub(aws_env, bucket, 1)
    upload_add_sub(aws_env, bucket, 2)
    repo = RemoteRepository(f"s3://{BUCKET}/{bucket}")
    repo.sync()

    # Same size, different content: the ETag tells them apart, the size would not.
    changed_config = CONFIG.replace("max_batch_size: 8", "max_batch_size: 4")
    assert len(changed_config) == len(CONFIG)
    upload(aws_env, f"{bucket}/add_sub/config.pbtxt", changed_config)
    delete(aws_env, f"{bucket}/add_sub/1/model.py")
    result = repo.sync()

    assert result.updated == ["add_sub/config.pbtxt"]
    assert result.removed == ["add_sub/1/model.py"]
    assert tree(repo.local_path) == {
        "add_sub/config.pbtxt": changed_config,
        "add_sub/2/model.py": MODEL_PY.format(version=2),
    }


def test_triton_endpoint_url_form(s3_endpoint: str, bucket: str, monkeypatch) -> None:
    # No AWS_ENDPOINT_URL: the endpoint comes from the URL, as Triton spells it.
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    upload_add_sub(s3_endpoint, bucket, 3)
    local = localize(f"s3://{s3_endpoint}/{BUCKET}/{bucket}")
    assert (local / "add_sub/3/model.py").read_text() == MODEL_PY.format(version=3)


def test_empty_remote_fails_and_keeps_the_previous_mirror(aws_env: str, bucket: str) -> None:
    upload_add_sub(aws_env, bucket, 1)
    repo = RemoteRepository(f"s3://{BUCKET}/{bucket}")
    repo.sync()
    before = tree(repo.local_path)

    delete(aws_env, f"{bucket}/add_sub/config.pbtxt")
    delete(aws_env, f"{bucket}/add_sub/1/model.py")
    with pytest.raises(TritonError, match="empty or does not exist"):
        repo.sync()
    assert tree(repo.local_path) == before


def test_localize_serves_the_last_mirror_when_the_store_fails(aws_env: str, bucket: str) -> None:
    url = f"s3://{BUCKET}/{bucket}"
    with pytest.raises(TritonError, match="empty or does not exist"):
        localize(url)  # nothing synced yet: nothing to fall back on
    upload_add_sub(aws_env, bucket, 1)
    local = localize(url)
    before = tree(local)
    delete(aws_env, f"{bucket}/add_sub/config.pbtxt")
    delete(aws_env, f"{bucket}/add_sub/1/model.py")
    # Polling through a store outage keeps the models the server has.
    assert localize(url) == local
    assert tree(local) == before


def test_readers_never_see_a_half_updated_model(aws_env: str, bucket: str) -> None:
    """Each generation uploads two files with the same marker; a reader that looks at
    the mirror during syncs must always find both files, and both of one generation."""
    repo = RemoteRepository(f"s3://{BUCKET}/{bucket}")

    def publish(generation: int) -> None:
        for name in ("config.pbtxt", "1/weights.txt"):
            upload(aws_env, f"{bucket}/m/{name}", f"generation {generation}\n" * 2000)

    publish(0)
    repo.sync()
    stop = threading.Event()
    seen: set[str] = set()
    torn: list[tuple[str, str]] = []

    def reader() -> None:
        while not stop.is_set():
            snapshot = repo.current_snapshot()
            assert snapshot is not None
            try:
                a = (snapshot / "m/config.pbtxt").read_text()
                b = (snapshot / "m/1/weights.txt").read_text()
            except FileNotFoundError:
                continue  # an old snapshot pruned after we resolved it: not torn
            if a != b:
                torn.append((a[:13], b[:13]))
            seen.add(a[:12])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for generation in range(1, 6):
            publish(generation)
            assert repo.sync().updated == ["m/1/weights.txt", "m/config.pbtxt"]
    finally:
        stop.set()
        thread.join()
    assert torn == []
    assert (repo.local_path / "m/config.pbtxt").read_text().startswith("generation 5")
    # Old snapshots are pruned: the current one and one before it remain.
    snapshots = [p for p in (repo.mirror / "snapshots").iterdir() if p.is_dir()]
    assert len(snapshots) == 2


def test_any_fsspec_url_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store without ETags (fsspec's memory filesystem) falls back to size and mtime."""
    import fsspec

    monkeypatch.setattr(remote, "_repositories", {})
    fs = fsspec.filesystem("memory")
    fs.pipe("/tritium-test/repo/add_sub/config.pbtxt", CONFIG.encode())
    fs.pipe("/tritium-test/repo/add_sub/1/model.py", MODEL_PY.format(version=1).encode())
    try:
        local = localize("memory://tritium-test/repo", cache_dir=tmp_path)
        assert tree(local)["add_sub/config.pbtxt"] == CONFIG
        fs.pipe("/tritium-test/repo/add_sub/2/model.py", b"VERSION = 2\n")
        assert remote.refresh("memory://tritium-test/repo", cache_dir=tmp_path)
        assert (local / "add_sub/2/model.py").read_text() == "VERSION = 2\n"
        assert not remote.refresh("memory://tritium-test/repo", cache_dir=tmp_path)
    finally:
        fs.rm("/tritium-test", recursive=True)


# ---------------------------------------------------------------- end to end


def test_serve_polls_s3_and_picks_up_a_new_version(
    aws_env: str, bucket: str, tmp_path: Path
) -> None:
    """`tritium serve --model-repository s3://... --model-control-mode poll` against the
    S3 server: version 1 serves, then an uploaded version 2 replaces it."""
    import httpx
    import numpy as np
    import tritonclient.http as httpclient

    from serving import start_server, wait_for

    upload_add_sub(aws_env, bucket, 1)
    server = start_server(
        f"s3://{BUCKET}/{bucket}",
        tmp_path,
        "--model-control-mode=poll",
        "--repository-poll-secs=0.5",
        env=dict(os.environ),  # AWS_* and TRITIUM_CACHE_DIR from the fixtures
        wait_ready=False,
    )

    def status(path: str) -> int:
        try:
            return httpx.get(server.http_url + path, timeout=2).status_code
        except httpx.TransportError:
            assert server.proc.poll() is None, server.log()
            return 0

    def infer() -> np.ndarray:
        client = httpclient.InferenceServerClient(server.http)
        a = np.ones((1, 4), dtype=np.float32)
        b = np.full((1, 4), 10.0, dtype=np.float32)
        inputs = [httpclient.InferInput("INPUT0", [1, 4], "FP32"),
                  httpclient.InferInput("INPUT1", [1, 4], "FP32")]  # fmt: skip
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        return client.infer("add_sub", inputs).as_numpy("OUTPUT0")

    try:
        wait_for(lambda: status("/v2/health/ready") == 200, "the server to be ready")
        assert status("/v2/models/add_sub/versions/1/ready") == 200
        assert infer().tolist() == [[11.0] * 4]

        upload(aws_env, f"{bucket}/add_sub/2/model.py", MODEL_PY.format(version=2))
        wait_for(lambda: status("/v2/models/add_sub/versions/2/ready") == 200, "version 2 to load")
        wait_for(lambda: infer().tolist() == [[21.0] * 4], "version 2 to serve")
        # The default version policy (latest 1) retires version 1.
        wait_for(
            lambda: status("/v2/models/add_sub/versions/1/ready") == 400, "version 1 to unload"
        )
    finally:
        server.stop()
