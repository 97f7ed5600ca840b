"""The model repository layout: `<repo>/<model>/config.pbtxt` and numeric version folders.

Scanning is cheap (directory listings and stat calls), so the poller rescans every few
seconds and compares fingerprints (mtime and size of every file) to find changed models.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from tritium.repository.storage import localize


def version_of(dirname: str) -> int | None:
    """'3' -> 3. Non-numeric names and numbers written with a leading 0 ('01') are not
    versions (Triton ignores them)."""
    if not dirname.isdigit() or (len(dirname) > 1 and dirname[0] == "0"):
        return None
    return int(dirname)


def _fingerprint(root: Path, skip: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    """A digest of the relative path, mtime and size of every file under `root`."""
    digest = hashlib.blake2b(digest_size=16)
    if not root.exists():
        return ""
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in skip]
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError:  # removed while we walked
                continue
            digest.update(f"{rel_dir}/{name}:{st.st_mtime_ns}:{st.st_size};".encode())
    return digest.hexdigest()


@dataclass
class ModelSource:
    """One model folder found in a repository."""

    name: str
    repository: str  # the location as given (path or URL)
    model_dir: Path
    versions: dict[int, Path] = field(default_factory=dict)

    @classmethod
    def from_dir(cls, name: str, repository: str, model_dir: Path) -> ModelSource:
        versions: dict[int, Path] = {}
        if model_dir.is_dir():
            for child in model_dir.iterdir():
                v = version_of(child.name)
                if v is not None and child.is_dir():
                    versions[v] = child
        return cls(name, repository, model_dir, dict(sorted(versions.items())))

    def config_fingerprint(self) -> str:
        """Everything in the model folder outside the version folders (config.pbtxt ...)."""
        return _fingerprint(self.model_dir, skip={p.name for p in self.versions.values()})

    def version_fingerprint(self, version: int) -> str:
        path = self.versions.get(version)
        return _fingerprint(path) if path is not None else ""


@dataclass
class ScanResult:
    models: dict[str, ModelSource]
    errors: dict[str, str]  # model name -> why it cannot be loaded (e.g. in two repositories)

    def names(self) -> list[str]:
        return sorted(set(self.models) | set(self.errors))


class ModelRepository:
    """The set of repository locations the server was given."""

    def __init__(self, locations: list[str]) -> None:
        self.locations = list(locations)

    def scan(self) -> ScanResult:
        found: dict[str, list[ModelSource]] = {}
        errors: dict[str, str] = {}
        for location in self.locations:
            root = localize(location)
            if not root.is_dir():
                continue
            for child in sorted(root.iterdir()):
                if child.name.startswith(".") or not child.is_dir():
                    continue
                found.setdefault(child.name, []).append(
                    ModelSource.from_dir(child.name, location, child)
                )
        models: dict[str, ModelSource] = {}
        for name, sources in found.items():
            if len(sources) > 1:
                where = ", ".join(s.repository for s in sources)
                errors[name] = f"model '{name}' appears in multiple repositories: {where}"
            else:
                models[name] = sources[0]
        return ScanResult(models, errors)

    def find(self, name: str) -> ModelSource | None:
        """One model, without listing the others' versions."""
        hits = []
        for location in self.locations:
            model_dir = localize(location) / name
            if model_dir.is_dir():
                hits.append((location, model_dir))
        if len(hits) != 1:
            return None
        return ModelSource.from_dir(name, hits[0][0], hits[0][1])
