"""Remote model repositories: s3://, gs://, as:// and any other fsspec URL.

A remote repository is mirrored into a local cache folder and the server reads the
mirror as it reads any local repository. The mirror lives at

    $TRITIUM_CACHE_DIR/repositories/<sha256(url)[:16]>/
        repository -> snapshots/<id>     the path the server reads (a symlink)
        snapshots/<id>/...               complete copies of the remote tree
        snapshots/<id>.json              the remote listing that copy was made from
        .lock                            serialises syncs of one URL across processes

Updates are atomic: a sync builds a whole new snapshot (unchanged files are hard
links to the previous snapshot, changed files are downloaded) and then swaps the
`repository` symlink with one `rename`, so a reader sees the old tree or the new
one, never a half-downloaded model. The snapshot before the current one is kept so
a model that is still loading from it keeps its files.

Credentials come from the environment as the storage library reads them
(AWS_ACCESS_KEY_ID / AWS_PROFILE / AWS_ENDPOINT_URL / IRSA's
AWS_WEB_IDENTITY_TOKEN_FILE for s3fs-botocore, GOOGLE_APPLICATION_CREDENTIALS for
gcsfs, ...): this module passes no credentials of its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tritium.server.errors import TritonError, internal, invalid_arg

log = logging.getLogger("tritium.repository")

# fsspec protocols that are the local disk, not a remote store.
_LOCAL_PROTOCOLS = {"", "file", "local"}
# How many old snapshots to keep besides the current one (a model may still be
# loading from the previous one when the symlink moves).
_KEEP_OLD_SNAPSHOTS = 1
# Listing fields that identify a file's content, best first.
_CONTENT_KEYS = ("ETag", "etag", "md5Hash", "crc32c", "content_md5", "sha256")
_MTIME_KEYS = ("LastModified", "last_modified", "updated", "mtime", "modified", "created")


def is_remote(location: str) -> bool:
    """True when `location` is a URL of a remote store (s3://, gs://, ...), not a local path."""
    scheme = urlsplit(location).scheme
    # A one-letter "scheme" is a Windows drive letter, not a protocol.
    return len(scheme) > 1 and scheme.lower() not in _LOCAL_PROTOCOLS


def cache_root() -> Path:
    """The cache folder: $TRITIUM_CACHE_DIR, else $XDG_CACHE_HOME/tritium, else ~/.cache/tritium."""
    configured = os.environ.get("TRITIUM_CACHE_DIR")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tritium"


def mirror_dir(url: str, cache_dir: Path | None = None) -> Path:
    """Where the mirror of `url` lives: <cache>/repositories/<hash of url>."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return (cache_dir or cache_root()) / "repositories" / digest


@dataclass(frozen=True)
class RemoteFile:
    """One file of the remote listing: its path relative to the repository root and
    a fingerprint that changes when its content does."""

    path: str
    size: int
    fingerprint: str


@dataclass
class SyncResult:
    """What one sync did. `changed` is what poll mode needs to know."""

    local_path: Path
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    downloaded_bytes: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)


def parse_url(url: str) -> tuple[str, dict[str, Any]]:
    """Turn a repository URL into an fsspec URL plus storage options.

    Triton's own spellings are accepted so existing flags carry over:
    `s3://https://host:9000/bucket/path` (an S3-compatible endpoint inside the URL)
    and `as://account/container/path` (Azure storage).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        rest = url[len("s3://") :]
        for endpoint_scheme in ("http://", "https://"):
            if rest.startswith(endpoint_scheme):
                hostport, _, bucket_path = rest[len(endpoint_scheme) :].partition("/")
                if not bucket_path:
                    raise invalid_arg(f"no bucket in model repository URL '{url}'")
                endpoint = f"{endpoint_scheme}{hostport}"
                return f"s3://{bucket_path}", {"client_kwargs": {"endpoint_url": endpoint}}
        return url, {}
    if scheme == "as":
        account = parts.netloc
        container_path = parts.path.lstrip("/")
        if not account or not container_path:
            raise invalid_arg(f"expected as://account/container/path, got '{url}'")
        return f"abfs://{container_path}", {"account_name": account}
    return url, {}


class RemoteRepository:
    """A remote model repository mirrored into the local cache.

    `local_path` is stable for the life of the cache (a symlink that `sync` moves),
    so the server keeps one path for the repository and rescans it after each sync.
    Do not `resolve()` it: that would pin one snapshot.
    """

    def __init__(
        self,
        url: str,
        *,
        cache_dir: Path | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.mirror = mirror_dir(url, cache_dir)
        self.local_path = self.mirror / "repository"
        self._snapshots = self.mirror / "snapshots"
        fsspec_url, options = parse_url(url)
        options.update(storage_options or {})
        self._fsspec_url = fsspec_url
        self._storage_options = options
        self._fs: Any = None
        self._root = ""

    def _filesystem(self) -> Any:
        if self._fs is None:
            from fsspec.core import url_to_fs

            try:
                self._fs, root = url_to_fs(self._fsspec_url, **self._storage_options)
            except ImportError as e:
                # e.g. s3fs missing: say which extra to install.
                raise internal(
                    f"cannot open model repository '{self.url}': {e} "
                    "(install the storage driver, e.g. pip install 'tritium[s3]')"
                ) from e
            self._root = root.rstrip("/")
        return self._fs

    def list_remote(self) -> dict[str, RemoteFile]:
        """The remote tree now: relative path -> file. Never served from a stale cache."""
        fs = self._filesystem()
        # s3fs/gcsfs cache directory listings; poll mode must see new uploads.
        fs.invalidate_cache()
        try:
            entries = fs.find(self._root, detail=True, withdirs=False)
        except FileNotFoundError:
            entries = {}
        except Exception as e:
            raise internal(f"failed to list model repository '{self.url}': {e}") from e
        prefix = self._root + "/"
        files: dict[str, RemoteFile] = {}
        for name, info in entries.items():
            if info.get("type") == "directory" or name.endswith("/"):
                continue  # S3 "folder" marker objects
            name = name.rstrip("/")
            if not name.startswith(prefix):
                continue
            rel = name[len(prefix) :]
            if not rel or any(part in ("", ".", "..") for part in rel.split("/")):
                continue
            files[rel] = RemoteFile(rel, int(info.get("size") or 0), _fingerprint(info))
        return files

    def current_snapshot(self) -> Path | None:
        """The snapshot the `repository` symlink points at, if any."""
        try:
            target = os.readlink(self.local_path)
        except OSError:
            return None
        return (self.mirror / target).resolve()

    def sync(self) -> SyncResult:
        """Bring the mirror up to date with the remote; download changed files only.

        Raises TritonError (INTERNAL) when the remote can't be read or is empty; the
        mirror then keeps its previous content.
        """
        self._snapshots.mkdir(parents=True, exist_ok=True)
        with _locked(self.mirror / ".lock"):
            remote = self.list_remote()
            if not remote:
                raise internal(f"model repository '{self.url}' is empty or does not exist")
            current = self.current_snapshot()
            old = _read_manifest(current) if current is not None else {}
            result = SyncResult(self.local_path)
            for rel, file in remote.items():
                if rel not in old:
                    result.added.append(rel)
                elif old[rel] != file:
                    result.updated.append(rel)
            result.removed = sorted(set(old) - set(remote))
            if not result.changed and current is not None and current.is_dir():
                return result
            self._build_snapshot(remote, current, result)
            self._prune()
            return result

    def _build_snapshot(
        self, remote: dict[str, RemoteFile], current: Path | None, result: SyncResult
    ) -> None:
        snapshot_id = f"{time.time_ns():x}"
        staging = self._snapshots / f".staging-{snapshot_id}"
        final = self._snapshots / snapshot_id
        fs = self._filesystem()
        try:
            to_fetch: list[str] = []
            for rel in remote:
                dest = staging / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                if current is not None and rel not in result.added and rel not in result.updated:
                    _link_or_copy(current / rel, dest)
                else:
                    to_fetch.append(rel)
            if to_fetch:
                rpaths = [f"{self._root}/{rel}" for rel in to_fetch]
                lpaths = [str(staging / rel) for rel in to_fetch]
                try:
                    fs.get(rpaths, lpaths)
                except Exception as e:
                    raise internal(f"failed to download model repository '{self.url}': {e}") from e
                for rel in to_fetch:
                    size = (staging / rel).stat().st_size
                    if size != remote[rel].size:
                        # The object changed under us between list and get: try next sync.
                        raise internal(f"'{rel}' changed while downloading from '{self.url}'")
                    result.downloaded_bytes += size
            staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _write_manifest(final, remote)
        # Swap the symlink atomically: rename() over the old link.
        tmp_link = self.mirror / f".repository-{snapshot_id}"
        os.symlink(os.path.relpath(final, self.mirror), tmp_link)
        os.replace(tmp_link, self.local_path)

    def _prune(self) -> None:
        current = self.current_snapshot()
        snapshots = sorted(
            (p for p in self._snapshots.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.name,
        )
        old = [p for p in snapshots if p != current]
        for stale in old[: max(0, len(old) - _KEEP_OLD_SNAPSHOTS)]:
            shutil.rmtree(stale, ignore_errors=True)
            stale.with_suffix(".json").unlink(missing_ok=True)
        # Leftovers of a crashed sync.
        for leftover in self._snapshots.glob(".staging-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def _fingerprint(info: dict[str, Any]) -> str:
    """A string that changes when the object's content does: the store's ETag/hash
    when it gives one, else size and modification time."""
    for key in _CONTENT_KEYS:
        value = info.get(key)
        if value:
            return f"{key}:{str(value).strip(chr(34))}"
    mtime = next((info[k] for k in _MTIME_KEYS if info.get(k)), "")
    return f"size:{info.get('size')}:mtime:{mtime}"


def _link_or_copy(src: Path, dest: Path) -> None:
    # Hard links make an unchanged file cost nothing; the cache never edits a file in
    # place (a changed file is a new download), so sharing inodes is safe.
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def _read_manifest(snapshot: Path) -> dict[str, RemoteFile]:
    try:
        raw = json.loads(snapshot.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}  # no manifest: treat every file as new
    return {rel: RemoteFile(rel, int(v["size"]), str(v["fingerprint"])) for rel, v in raw.items()}


def _write_manifest(snapshot: Path, files: dict[str, RemoteFile]) -> None:
    payload = {rel: {"size": f.size, "fingerprint": f.fingerprint} for rel, f in files.items()}
    tmp = snapshot.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    os.replace(tmp, snapshot.with_suffix(".json"))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# One RemoteRepository per (URL, cache) in this process, so polling reuses the
# filesystem client and its connection pool.
_repositories: dict[tuple[str, str], RemoteRepository] = {}


def remote_repository(url: str, cache_dir: Path | None = None) -> RemoteRepository:
    """The process-wide RemoteRepository for `url`."""
    key = (url, str(cache_dir or cache_root()))
    repo = _repositories.get(key)
    if repo is None:
        repo = _repositories[key] = RemoteRepository(url, cache_dir=cache_dir)
    return repo


def localize(location: str, cache_dir: Path | None = None) -> Path:
    """The local path the server reads for a repository location.

    A local path (or file:// URL) is returned as is; a remote URL is synced into the
    cache first and its stable mirror path returned. When the store can't be read but
    an earlier sync succeeded, the last mirror is returned (with a warning), so a
    store outage during polling keeps the loaded models.
    """
    if not is_remote(location):
        if location.startswith("file://"):
            return Path(urlsplit(location).path)
        return Path(location)
    repo = remote_repository(location, cache_dir)
    try:
        result = repo.sync()
    except TritonError as exc:
        if repo.current_snapshot() is None:
            raise
        # A store outage must not take models away: serve the last complete mirror.
        log.warning("%s; serving the last mirror of '%s'", exc.message, location)
        return repo.local_path
    if result.changed:
        log.info(
            "model repository '%s': %d added, %d updated, %d removed (%d bytes downloaded)",
            location,
            len(result.added),
            len(result.updated),
            len(result.removed),
            result.downloaded_bytes,
        )
    return repo.local_path


def refresh(location: str, cache_dir: Path | None = None) -> bool:
    """Poll mode: re-sync a repository location; True when anything changed.

    Local paths never need a sync (the scanner sees changes itself): False.
    A failing remote keeps its previous mirror and raises TritonError.
    """
    if not is_remote(location):
        return False
    return remote_repository(location, cache_dir).sync().changed


__all__ = [
    "RemoteFile",
    "RemoteRepository",
    "SyncResult",
    "cache_root",
    "is_remote",
    "localize",
    "mirror_dir",
    "parse_url",
    "refresh",
    "remote_repository",
]
