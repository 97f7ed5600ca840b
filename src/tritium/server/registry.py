"""The model registry: per model, per version state (LOADING, READY, UNLOADING,
UNAVAILABLE + reason) and the loaded Model objects. The one owner of model states; the
lifecycle changes them, everyone else asks."""

from __future__ import annotations

import asyncio
import enum
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritium.server.backend import ModelConfig
from tritium.server.errors import not_found, unavailable
from tritium.server.model import Model
from tritium.server.statistics import ModelStatistics


class ModelState(enum.Enum):
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


READY = ModelState.READY


@dataclass
class VersionRecord:
    version: int
    state: ModelState = ModelState.LOADING
    reason: str = ""
    model: Model | None = None
    fingerprint: str = ""  # config + version folder, when `model` was loaded
    # The backend lost an instance (a stub died): UNAVAILABLE, but `model` stays so that
    # inference requests get the backend's own error, as Triton answers them.
    crashed: bool = False

    def serves(self, include_crashed: bool) -> bool:
        if self.state == ModelState.READY:
            return True
        return include_crashed and self.crashed and self.model is not None


@dataclass
class ModelRecord:
    """Everything the server knows of one model name."""

    name: str
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    error: str = ""  # a model-level failure (config) that left no version to load
    config: ModelConfig | None = None  # complete config of the last successful load
    dir_fingerprint: str = ""  # the whole folder at the last load attempt (poll mode)
    override: bool = False  # loaded from a request's config/files: the poller leaves it
    temp_dir: Path | None = None  # where a load request's files were written
    listed: bool = True  # in the repository index (Triton drops a model with no versions)
    stats: dict[int, ModelStatistics] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def stats_for(self, version: int) -> ModelStatistics:
        return self.stats.setdefault(version, ModelStatistics(self.name, version))

    def ready_versions(self) -> list[int]:
        return sorted(v for v, r in self.versions.items() if r.state == ModelState.READY)

    def drop_temp_dir(self) -> None:
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None


class ModelRegistry:
    def __init__(self) -> None:
        self.records: dict[str, ModelRecord] = {}

    def record(self, name: str) -> ModelRecord:
        """The record for `name`, created on first use."""
        rec = self.records.get(name)
        if rec is None:
            rec = self.records[name] = ModelRecord(name)
        return rec

    def resolve(self, name: str, version: int = -1, include_crashed: bool = False) -> Model:
        """The READY Model for a request, with Triton's messages (model_lifecycle.cc).
        `include_crashed`: a version whose backend crashed still takes inference requests
        (its backend answers them with the crash error, as Triton does)."""
        rec = self.records.get(name)
        if rec is None or not rec.versions:
            raise not_found(f"Request for unknown model: '{name}' is not found")
        if version < 0:
            ready = READY
            latest = max((v for v, r in rec.versions.items() if r.state is ready), default=-1)
            if include_crashed and latest < 0:
                latest = max((v for v, r in rec.versions.items() if r.serves(True)), default=-1)
            if latest < 0:
                raise not_found(f"Request for unknown model: '{name}' has no available versions")
            model = rec.versions[latest].model
        else:
            vr = rec.versions.get(version)
            if vr is None:
                raise not_found(
                    f"Request for unknown model: '{name}' version {version} is not found"
                )
            if not vr.serves(include_crashed):
                raise unavailable(
                    f"Request for unknown model: '{name}' version {version} is not at ready state"
                )
            model = vr.model
        assert model is not None
        return model

    def is_ready(self, name: str, version: int = -1) -> bool:
        try:
            self.resolve(name, version)
        except Exception:
            return False
        return True

    def all_ready(self) -> bool:
        """Triton's strict readiness: every version of every known model is READY, or was
        unloaded on purpose; a model whose load failed before any version makes it false."""
        for rec in self.records.values():
            if not rec.versions and rec.error:
                return False
            for vr in rec.versions.values():
                if vr.state != ModelState.READY and vr.reason != "unloaded":
                    return False
        return True

    def loaded_models(self) -> list[Model]:
        return [
            vr.model
            for rec in self.records.values()
            for vr in rec.versions.values()
            if vr.model is not None
        ]

    def index(self, repository_names: list[str], ready_only: bool) -> list[dict[str, Any]]:
        """Triton's repository index: the models of the repositories (not those loaded from
        a request's files elsewhere); a model with no version record (never loaded, or its
        config failed) shows only its name."""
        out: list[dict[str, Any]] = []
        for name in sorted(set(repository_names)):
            rec = self.records.get(name)
            if rec is not None and not rec.listed:
                continue
            if rec is None or not rec.versions:
                if not ready_only:
                    out.append({"name": name})
                continue
            for v in sorted(rec.versions):
                vr = rec.versions[v]
                if ready_only and vr.state != ModelState.READY:
                    continue
                entry: dict[str, Any] = {"name": name, "version": str(v), "state": vr.state.value}
                if vr.reason:
                    entry["reason"] = vr.reason
                out.append(entry)
        return out
