"""Repository layout scanning, fingerprints and version policies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tritium.repository.model_config import parse_config_text
from tritium.repository.repository import ModelRepository, version_of
from tritium.repository.storage import localize, register_localizer
from tritium.repository.version_policy import select_versions


def make(root: Path, name: str, versions: list[str]) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.pbtxt").write_text('backend: "python"')
    for v in versions:
        (d / v).mkdir()
        (d / v / "model.py").write_text("")
    return d


def test_version_folder_names():
    assert [version_of(n) for n in ["1", "0", "10", "01", "00", "v1", "1a", ""]] == [
        1,
        0,
        10,
        None,
        None,
        None,
        None,
        None,
    ]


def test_scan_layout_and_duplicates(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    make(a, "m1", ["1", "2", "01", "latest"])
    make(a, "dup", ["1"])
    make(b, "dup", ["1"])
    make(b, "m2", ["3"])
    (a / "README.md").write_text("not a model")
    (a / ".hidden").mkdir()
    scan = ModelRepository([str(a), str(b)]).scan()
    assert sorted(scan.models) == ["m1", "m2"]
    assert list(scan.models["m1"].versions) == [1, 2]
    assert "multiple repositories" in scan.errors["dup"]
    assert scan.names() == ["dup", "m1", "m2"]


def test_fingerprints_change_with_files(tmp_path: Path):
    d = make(tmp_path, "m", ["1", "2"])
    repo = ModelRepository([str(tmp_path)])
    src = repo.scan().models["m"]
    cfg, v1, v2 = src.config_fingerprint(), src.version_fingerprint(1), src.version_fingerprint(2)
    (d / "1" / "model.py").write_text("changed")
    src = repo.scan().models["m"]
    assert src.version_fingerprint(1) != v1
    assert (src.config_fingerprint(), src.version_fingerprint(2)) == (cfg, v2)
    st = os.stat(d / "config.pbtxt")
    os.utime(d / "config.pbtxt", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert repo.scan().models["m"].config_fingerprint() != cfg


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", [3, 7]),
        ("version_policy { latest { num_versions: 3 } }", [1, 3, 7]),
        ("version_policy { all {} }", [1, 3, 7]),
        ("version_policy { specific { versions: [ 3, 9 ] } }", [3]),
    ],
)
def test_version_policy(policy: str, expected: list[int]):
    config = parse_config_text(policy or "version_policy { latest { num_versions: 2 } }")
    assert select_versions(config, [7, 1, 3]) == expected


def test_localize_seam(tmp_path: Path):
    assert localize(str(tmp_path)) == tmp_path.resolve()
    assert localize(f"file://{tmp_path}") == tmp_path.resolve()
    register_localizer("fake", lambda url: tmp_path / url.removeprefix("fake://"))
    make(tmp_path, "m", ["1"])
    scan = ModelRepository(["fake://"]).scan()
    assert list(scan.models) == ["m"]
