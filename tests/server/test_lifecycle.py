"""Model lifecycle through the real core: explicit load/unload (config and file
overrides, failed reloads), poll mode (added, changed, removed models without dropping
in-flight requests), version policies, auto-complete, broken configs."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest
from google.protobuf import json_format

from tritium.repository.model_config import parse_config_text
from tritium.server.backends import register_backend, unregister_backend
from tritium.server.errors import ErrorCode, TritonError

from .conftest import ADD_SUB, IDENTITY, add_sub_request, collect, identity_request, write_model


async def until(condition, timeout: float = 10.0) -> None:
    """Wait for a condition the poller makes true (generous bound; fails only if never)."""

    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), timeout)


async def test_explicit_load_unload_and_index(repo, make_server):
    write_model(repo, "add_sub", ADD_SUB)
    write_model(repo, "identity", IDENTITY)
    server = await make_server(model_control_mode="explicit")
    assert server.repository_index() == [{"name": "add_sub"}, {"name": "identity"}]
    assert server.is_ready()
    await server.load_model("add_sub")
    assert server.repository_index() == [
        {"name": "add_sub", "version": "1", "state": "READY"},
        {"name": "identity"},
    ]
    assert server.repository_index(ready_only=True) == [
        {"name": "add_sub", "version": "1", "state": "READY"}
    ]
    [resp] = await collect(server, add_sub_request([1] * 4, [1] * 4))
    assert resp.error is None
    await server.unload_model("add_sub")
    assert server.repository_index()[0] == {
        "name": "add_sub",
        "version": "1",
        "state": "UNAVAILABLE",
        "reason": "unloaded",
    }
    assert server.is_ready()  # unloaded on purpose does not count against readiness
    with pytest.raises(TritonError) as err:
        server.infer(add_sub_request([1] * 4, [1] * 4))
    assert err.value.code == ErrorCode.NOT_FOUND  # "... has no available versions", 404
    await server.unload_model("never_loaded")  # Triton answers success
    with pytest.raises(TritonError) as err:
        await server.load_model("nope")
    assert err.value.code == ErrorCode.INTERNAL
    assert err.value.message == "failed to load 'nope', failed to poll from model repository"


async def test_explicit_load_star_at_start(repo, make_server):
    write_model(repo, "add_sub", ADD_SUB)
    write_model(repo, "identity", IDENTITY)
    server = await make_server(model_control_mode="explicit", load_model=["*"])
    assert server.model_ready("add_sub") and server.model_ready("identity")
    named = await make_server(model_control_mode="explicit", load_model=["identity"])
    assert not named.model_ready("add_sub") and named.model_ready("identity")


async def test_load_with_config_override_and_failed_reload(repo, make_server, factory):
    write_model(repo, "add_sub", ADD_SUB)
    server = await make_server(model_control_mode="explicit", load_model=["add_sub"])
    config = server.model_config("add_sub")
    override = json_format.MessageToDict(config)
    override["max_batch_size"] = 4
    await server.load_model("add_sub", config_json=json.dumps(override))
    assert server.model_config("add_sub").max_batch_size == 4
    await until(lambda: factory.backends[0].unloaded)  # the old one, once drained
    override["parameters"] = {"fail_load": {"string_value": "1"}}
    with pytest.raises(TritonError) as err:
        await server.load_model("add_sub", config_json=json.dumps(override))
    assert err.value.message.startswith(
        "load failed for model 'add_sub': version 1 is at UNAVAILABLE state: "
    )
    assert "failed on purpose" in err.value.message
    # the failed reload left the previous version serving
    assert server.model_ready("add_sub") and server.model_config("add_sub").max_batch_size == 4
    [resp] = await collect(server, add_sub_request([1] * 4, [1] * 4))
    assert resp.error is None


async def test_load_with_files(repo, make_server, factory):
    server = await make_server(model_control_mode="explicit")
    files = {"file:3/tag": b"from-request"}
    with pytest.raises(TritonError) as err:  # Triton wants the config with the files
        await server.load_model("uploaded", files=files)
    assert err.value.message == "failed to load 'uploaded', failed to poll from model repository"
    config = json_format.MessageToJson(parse_config_text(IDENTITY))
    await server.load_model("uploaded", config_json=config, files=files)
    assert server.get_model("uploaded").version == 3
    [resp] = await collect(server, identity_request(1, model="uploaded"))
    assert resp.error is None and factory.executions[-1].tag == "from-request"
    await server.unload_model("uploaded")
    assert not server.model_ready("uploaded")


async def test_poll_mode_add_change_remove(repo, make_server, factory):
    slow = 'parameters { key: "delay_ms" value { string_value: "300" } }'
    write_model(repo, "identity", IDENTITY, extra=slow, tags={1: "old"})
    server = await make_server(model_control_mode="poll", repository_poll_secs=0.05)
    with pytest.raises(TritonError):
        await server.load_model("identity")  # refused while polling

    # added
    write_model(repo, "add_sub", ADD_SUB)
    await until(lambda: server.model_ready("add_sub"))

    # changed, with a request in flight on the old generation
    in_flight = asyncio.create_task(collect(server, identity_request(1, rid="in-flight")))
    await asyncio.sleep(0.05)
    (repo / "identity" / "1" / "tag").write_text("new")
    await until(lambda: any(b.tag == "new" and b.loaded for b in factory.backends))
    [resp] = await in_flight
    assert resp.error is None
    await collect(server, identity_request(1, rid="after"))
    tags = {e.request_ids[0]: e.tag for e in factory.executions if e.model == "identity"}
    assert tags == {"in-flight": "old", "after": "new"}
    await until(lambda: factory.backends[0].unloaded)  # the old one, after draining

    # a new version folder: latest policy moves to it
    write_model(repo, "add_sub", None, versions=(2,))
    await until(lambda: server.get_model("add_sub").version == 2)
    assert [e["version"] for e in server.repository_index() if e["name"] == "add_sub"] == ["1", "2"]
    # version 1 drains (UNLOADING) in the background, then is UNAVAILABLE
    await until(lambda: server.repository_index()[0]["state"] == "UNAVAILABLE")

    # removed
    shutil.rmtree(repo / "add_sub")
    await until(lambda: not server.model_ready("add_sub"))
    assert all(e["name"] != "add_sub" for e in server.repository_index())


@pytest.mark.parametrize(
    ("policy", "ready"),
    [
        ("", [3]),
        ("version_policy: { latest: { num_versions: 2 } }", [2, 3]),
        ("version_policy: { all: {} }", [1, 2, 3]),
        ("version_policy: { specific: { versions: [ 1, 3 ] } }", [1, 3]),
    ],
)
async def test_version_policies(repo, make_server, policy, ready):
    write_model(repo, "identity", IDENTITY + policy, versions=(1, 2, 3))
    (repo / "identity" / "01").mkdir()  # not a version
    (repo / "identity" / "extra").mkdir()
    server = await make_server()
    assert server.registry.records["identity"].ready_versions() == ready
    assert server.get_model("identity").version == ready[-1]
    assert server.model_metadata("identity")["versions"] == [str(v) for v in ready]
    if 2 not in ready:
        with pytest.raises(TritonError) as err:
            server.get_model("identity", 2)
        assert err.value.message == "Request for unknown model: 'identity' version 2 is not found"


async def test_auto_complete_model_py_only(repo, make_server, factory):
    # A folder with only 1/model.py is a python model; the factory completes its config.
    register_backend("python", factory)
    try:
        (repo / "auto" / "1").mkdir(parents=True)
        (repo / "auto" / "1" / "model.py").write_text("# a model\n")
        server = await make_server()
        config = server.model_config("auto")
        assert config.backend == "python" and config.default_model_filename == "model.py"
        assert [i.name for i in config.input] == ["INPUT0"]
        assert factory.auto_completed == ["auto"]
        [resp] = await collect(server, identity_request(1, model="auto"))
        assert resp.error is None
        strict = await make_server(strict_model_config=True, exit_on_error=False)
        assert "auto" in strict.startup_failures and not strict.is_ready()
    finally:
        unregister_backend("python")


async def test_broken_config_names_file_and_line(repo, make_server):
    write_model(repo, "bad", 'backend: "tritium_test"\nmax_batch_size: 8\ninput [ { nme: "x" } ]\n')
    write_model(repo, "identity", IDENTITY)
    server = await make_server(exit_on_error=False)
    message = server.startup_failures["bad"]
    assert str(repo / "bad" / "config.pbtxt") in message and "line 3" in message
    assert server.model_ready("identity") and not server.is_ready()
    # Triton's index shows a model whose config failed by its name only
    [entry] = [e for e in server.repository_index() if e["name"] == "bad"]
    assert entry == {"name": "bad"}


async def test_unknown_backend_and_duplicate_model(repo, tmp_path, make_server):
    write_model(repo, "mystery", IDENTITY.replace('backend: "tritium_test"', 'backend: "nosuch"'))
    write_model(repo, "identity", IDENTITY)
    other = tmp_path / "other"
    write_model(other, "identity", IDENTITY)
    write_model(other, "add_sub", ADD_SUB)
    server = await make_server(exit_on_error=False, model_repository=[str(repo), str(other)])
    assert (
        "version 1 is at UNAVAILABLE state: Invalid argument: unable to find backend library "
        "for backend 'nosuch', try specifying runtime on the model configuration."
    ) in server.startup_failures["mystery"]
    assert "appears in multiple repositories" in server.startup_failures["identity"]
    assert server.model_ready("add_sub") and not server.model_ready("identity")
