"""Where a model repository lives: turning a repository location into a local folder.

Local paths are used as they are. Remote locations (s3://, gs://, as://) are mirrored into
a local cache by tritium.repository.remote (imported only when a remote location is
used), unless a localizer was registered for their scheme.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tritium.server.errors import TritonError, unsupported

# scheme ("s3") -> function(location) -> local folder holding the repository's models
_LOCALIZERS: dict[str, Callable[[str], Path]] = {}


def register_localizer(scheme: str, localize_fn: Callable[[str], Path]) -> None:
    """Plug in a remote storage: `localize_fn("s3://bucket/repo")` returns a local copy."""
    _LOCALIZERS[scheme] = localize_fn


def scheme_of(location: str) -> str:
    """'s3://b/p' -> 's3'; a plain path -> ''."""
    head, sep, _ = location.partition("://")
    return head.lower() if sep else ""


def localize(location: str) -> Path:
    """The local folder for a repository location (a path, or a URL with a registered scheme)."""
    scheme = scheme_of(location)
    if not scheme or scheme == "file":
        return Path(location.removeprefix("file://")).expanduser().resolve()
    fn = _LOCALIZERS.get(scheme)
    if fn is None:
        fn = _remote_localizer()
    if fn is None:
        raise unsupported(f"model repository '{location}': no storage registered for '{scheme}://'")
    try:
        return fn(location)
    except TritonError:
        raise
    except Exception as exc:  # a storage library's own error: name the location
        raise TritonError(f"failed to read model repository '{location}': {exc}") from exc


def _remote_localizer() -> Callable[[str], Path] | None:
    try:
        from tritium.repository import remote
    except ImportError:  # the remote-storage extra is not installed
        return None
    return remote.localize
