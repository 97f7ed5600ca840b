"""Model lifecycle: loading, reloading and unloading models from the repositories, per
control mode (none / poll / explicit). A reload loads the new version first, swaps it in,
then unloads the old one once its in-flight requests have drained."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import tempfile
import threading
from pathlib import Path
from typing import Any

from tritium.repository.model_config import (
    config_from_json,
    detect_backend,
    fill_defaults,
    gpu_ids,
    read_config,
    validate_config,
)
from tritium.repository.repository import ModelRepository, ModelSource, ScanResult, _fingerprint
from tritium.repository.version_policy import select_versions
from tritium.server.backend import BackendContext, ModelConfig, ServerHandle
from tritium.server.backends import get_factory, supports_gpu
from tritium.server.errors import TritonError, code_string, internal, invalid_arg
from tritium.server.model import Model
from tritium.server.options import ServerOptions
from tritium.server.registry import ModelRecord, ModelRegistry, ModelState, VersionRecord

log = logging.getLogger("tritium.lifecycle")


class ModelLifecycle:
    """Owns every change of model state; one load/unload at a time per model."""

    def __init__(
        self,
        options: ServerOptions,
        registry: ModelRegistry,
        server: ServerHandle,
        metrics_registry: Any = None,
    ) -> None:
        self.options = options
        self.registry = registry
        self.server = server
        self.metrics_registry = metrics_registry
        self.repository = ModelRepository(options.model_repository)
        self._gpu_ids: list[int] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._poll_task: asyncio.Task[None] | None = None
        self.last_scan = ScanResult({}, {})
        self._scan_lock = threading.Lock()

    def scan(self) -> ScanResult:
        """List the repositories (downloading remote ones into their local cache). One scan
        at a time: concurrent downloads into one cache would trample each other."""
        with self._scan_lock:
            self.last_scan = self.repository.scan()
            return self.last_scan

    async def scan_async(self) -> ScanResult:
        """`scan()` on a worker thread, so a remote (S3) download never blocks the loop."""
        return await asyncio.to_thread(self.scan)

    # -- start / stop ----------------------------------------------------------------
    async def start(self) -> dict[str, str]:
        """Load what the control mode asks for; return {model: error} for failed loads."""
        scan = await self.scan_async()
        mode = self.options.model_control_mode
        if mode == "explicit":
            wanted = self.options.load_model
            names = scan.names() if "*" in wanted else list(dict.fromkeys(wanted))
        else:
            names = scan.names()
        failures: dict[str, str] = {}

        async def one(name: str) -> None:
            try:
                await self.load(name, scan=scan)
            except TritonError as exc:
                # A poll failure's client message hides its reason; startup shows it.
                rec = self.registry.records.get(name)
                detail = rec.error if rec is not None and not rec.versions else ""
                failures[name] = f"failed to load '{name}', {detail}" if detail else exc.message
                log.error("%s", failures[name])

        await asyncio.gather(*(one(n) for n in names))
        if mode == "poll":
            self._poll_task = asyncio.create_task(self._poll_loop(), name="repository-poll")
        return failures

    async def stop(self, drain_timeout_s: float | None) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
            self._poll_task = None
        names = list(self.registry.records)
        await asyncio.gather(
            *(self.unload(n, drain_timeout_s) for n in names), return_exceptions=True
        )
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    # -- polling ---------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.repository_poll_secs)
            try:
                await self.poll_once()
            except Exception:  # a broken scan must not stop future polls
                log.exception("repository poll failed")

    async def poll_once(self) -> None:
        """Load added models, reload changed ones, unload removed ones."""
        scan = await self.scan_async()
        for name in scan.names():
            rec = self.registry.records.get(name)
            if rec is not None and rec.override:
                continue
            src = scan.models.get(name)
            fp = _fingerprint(src.model_dir) if src is not None else scan.errors.get(name, "")
            if rec is not None and rec.dir_fingerprint == fp:
                continue
            try:
                await self.load(name, scan=scan)
            except TritonError as exc:
                log.error("%s", exc.message)
        for name, rec in list(self.registry.records.items()):
            if name not in scan.models and name not in scan.errors and not rec.override:
                await self.unload(name)
                self.registry.records.pop(name, None)

    # -- load ------------------------------------------------------------------------
    async def load(
        self,
        name: str,
        config_json: str | None = None,
        files: dict[str, bytes] | None = None,
        *,
        scan: ScanResult | None = None,
    ) -> None:
        """Load (or reload) every version the policy selects. Raises TritonError with
        Triton's message when any version fails; a version that was READY keeps serving."""
        scan = scan if scan is not None else await self.scan_async()
        if files and not config_json:
            # Triton needs the `config` parameter with file overrides; without it the load
            # fails as if the model were not in the repository.
            raise internal(f"failed to load '{name}', failed to poll from model repository")
        if files:
            source, temp_dir = self._write_files(name, files), True
        elif name in scan.errors:
            rec = self.registry.record(name)
            rec.error, rec.dir_fingerprint = scan.errors[name], scan.errors[name]
            raise invalid_arg(f"failed to load '{name}', {scan.errors[name]}")
        elif name in scan.models:
            source, temp_dir = scan.models[name], False
        else:
            raise internal(f"failed to load '{name}', failed to poll from model repository")

        rec = self.registry.record(name)
        async with rec.lock:
            rec.dir_fingerprint = _fingerprint(source.model_dir)
            try:
                config = await self._complete_config(name, source, config_json)
            except TritonError as exc:
                # Triton reads, completes and validates the config while polling the
                # repository; any failure there fails the poll, its reason only logged.
                if temp_dir:
                    _rmtree(source.model_dir)
                log.error("Poll failed for model directory '%s': %s", name, exc.message)
                if not rec.ready_versions():
                    rec.error = exc.message
                raise internal(
                    f"failed to load '{name}', failed to poll from model repository"
                ) from exc
            versions = select_versions(config, list(source.versions))
            if not versions:
                if temp_dir:
                    _rmtree(source.model_dir)
                message = (
                    f"at least one version must be available under the version policy of "
                    f"model '{name}'"
                )
                log.error("failed to load model '%s': %s", name, message)
                if not rec.ready_versions():
                    rec.error, rec.listed = message, False  # Triton drops it from the index
                raise invalid_arg(f"load failed for model '{name}': {message}\n")
            rec.listed = True
            rec.error = ""
            override = bool(config_json or files)
            extra = hashlib.blake2b((config_json or "").encode(), digest_size=8).hexdigest()
            cfg_fp = source.config_fingerprint() + extra
            if override or temp_dir:
                cfg_fp += str(id(source))  # an override always loads afresh
            errors = await self._load_versions(rec, config, source, versions, cfg_fp)
            for v, vr in list(rec.versions.items()):
                if v not in versions and vr.model is not None:
                    await self._unload_version(rec, vr)
            if not errors:
                rec.config = config
                rec.override = override
                if temp_dir:
                    rec.drop_temp_dir()
                    rec.temp_dir = source.model_dir.parent
            elif temp_dir:
                _rmtree(source.model_dir)
            if errors:
                detail = "".join(
                    f"version {v} is at UNAVAILABLE state: {msg};\n"
                    for v, msg in sorted(errors.items())
                )
                raise invalid_arg(f"load failed for model '{name}': {detail}")

    async def _load_versions(
        self,
        rec: ModelRecord,
        config: ModelConfig,
        source: ModelSource,
        versions: list[int],
        cfg_fp: str,
    ) -> dict[int, str]:
        errors: dict[int, str] = {}

        async def one(v: int) -> None:
            fp = cfg_fp + source.version_fingerprint(v)
            vr = rec.versions.get(v)
            if vr is not None and vr.state == ModelState.READY and vr.fingerprint == fp:
                return  # unchanged
            if vr is None:
                vr = rec.versions[v] = VersionRecord(v)
            if vr.state != ModelState.READY:
                vr.state, vr.reason = ModelState.LOADING, ""
            try:
                model = await self._create(config, v, source, rec)
            except TritonError as exc:
                errors[v] = reason = f"{code_string(exc.code)}: {exc.message}"
                if vr.state != ModelState.READY:  # a failed reload keeps the old one serving
                    vr.state, vr.reason = ModelState.UNAVAILABLE, reason
                return
            old = vr.model
            vr.model, vr.state, vr.reason, vr.fingerprint = model, ModelState.READY, "", fp
            vr.crashed = False
            if old is not None:
                self._retire(old)

        await asyncio.gather(*(one(v) for v in versions))
        return errors

    async def _complete_config(
        self, name: str, source: ModelSource, config_json: str | None
    ) -> ModelConfig:
        """Read, auto-complete, fill defaults and validate the model's config."""
        config = config_from_json(config_json) if config_json else read_config(source.model_dir)
        if config is None:
            if self.options.strict_model_config:
                raise invalid_arg(
                    f"model configuration file {source.model_dir / 'config.pbtxt'} not found "
                    "(auto-complete is disabled by --strict-model-config)"
                )
            config = ModelConfig()
        detect_backend(config, list(source.versions.values()))
        backend_name = config.backend or config.platform
        if not backend_name:
            raise invalid_arg(
                f"unexpected platform type '' for {name}: set 'backend' in config.pbtxt"
            )
        try:
            factory = get_factory(backend_name)
        except TritonError:
            # Triton finds the backend library when it creates a version: a missing one
            # fails each version (the config itself is fine), so defer the error.
            factory = None
        if factory is not None and not self.options.strict_model_config:
            latest = source.versions[max(source.versions)] if source.versions else source.model_dir
            try:
                config = await factory.auto_complete(config, source.model_dir, latest)
            except TritonError:
                raise
            except Exception as exc:
                raise internal(f"auto-complete failed: {type(exc).__name__}: {exc}") from exc
        if self._gpu_ids is None:
            self._gpu_ids = gpu_ids()
        gpu_ok = supports_gpu(factory) if factory is not None else True
        fill_defaults(config, name, gpu_ids=self._gpu_ids, backend_supports_gpu=gpu_ok)
        validate_config(config, name)
        return config

    async def _create(
        self, config: ModelConfig, version: int, source: ModelSource, rec: ModelRecord
    ) -> Model:
        factory = get_factory(config.backend or config.platform)
        holder: list[Model] = []
        context = BackendContext(
            model_name=config.name,
            version=version,
            config=_copy(config),
            model_dir=source.model_dir,
            version_dir=source.versions[version],
            server=self.server,
            report_failure=lambda reason: self._on_failure(rec, version, holder, reason),
            metrics_registry=self.metrics_registry,
            extra={"backend_config": list(self.options.backend_config)},
        )
        try:
            backend = factory.create(context)
            model = Model(_copy(config), version, backend, rec.stats_for(version))
            holder.append(model)
            await model.load()
        except TritonError:
            raise
        except Exception as exc:
            raise internal(f"{type(exc).__name__}: {exc}") from exc
        return model

    def _on_failure(self, rec: ModelRecord, version: int, holder: list[Model], reason: str) -> None:
        """A backend lost an instance (a stub process died): that version is no longer
        servable. The issue asks for UNAVAILABLE with the reason, where Triton 2.51 keeps
        the model READY and fails every later request; an honest state lets strict
        readiness and the repository index tell operators what broke."""
        vr = rec.versions.get(version)
        if vr is not None and holder and vr.model is holder[0]:
            vr.state, vr.reason, vr.crashed = ModelState.UNAVAILABLE, reason, True
            log.error("model '%s' version %d is unavailable: %s", rec.name, version, reason)

    def _retire(self, model: Model) -> None:
        """Unload a swapped-out model in the background once its requests are done."""
        task = asyncio.create_task(model.unload(None))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    # -- unload ----------------------------------------------------------------------
    async def unload(self, name: str, drain_timeout_s: float | None = None) -> None:
        rec = self.registry.records.get(name)
        if rec is None:
            return  # Triton answers success for a model it never loaded, known or not
        async with rec.lock:
            rec.error = ""
            await asyncio.gather(
                *(
                    self._unload_version(rec, vr, drain_timeout_s)
                    for vr in rec.versions.values()
                    if vr.model is not None
                )
            )
            for vr in rec.versions.values():
                if vr.state != ModelState.UNAVAILABLE or not vr.reason:
                    vr.state, vr.reason = ModelState.UNAVAILABLE, "unloaded"
            rec.override = False
            rec.dir_fingerprint = ""
            rec.drop_temp_dir()

    async def _unload_version(
        self, rec: ModelRecord, vr: VersionRecord, drain_timeout_s: float | None = None
    ) -> None:
        model, vr.model = vr.model, None
        vr.state, vr.reason, vr.crashed = ModelState.UNLOADING, "", False
        if model is not None:
            try:
                await model.unload(drain_timeout_s)
            except Exception:
                log.exception("unloading '%s' version %d failed", rec.name, vr.version)
        vr.state, vr.reason = ModelState.UNAVAILABLE, "unloaded"

    # -- load requests with files ------------------------------------------------------
    def _write_files(self, name: str, files: dict[str, bytes]) -> ModelSource:
        """Triton's `file:<path>` load parameters: a fresh model folder holding them."""
        root = Path(tempfile.mkdtemp(prefix=f"tritium-{name}-")) / name
        root.mkdir()
        for key, content in files.items():
            rel = Path(key.removeprefix("file:"))
            if rel.is_absolute() or ".." in rel.parts:
                _rmtree(root.parent)
                raise invalid_arg(f"failed to load '{name}', invalid file path '{key}'")
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        return ModelSource.from_dir(name, str(root.parent), root)


def _copy(config: ModelConfig) -> ModelConfig:
    out = ModelConfig()
    out.CopyFrom(config)
    return out


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(
        path.parent if path.parent.name.startswith("tritium-") else path, ignore_errors=True
    )
