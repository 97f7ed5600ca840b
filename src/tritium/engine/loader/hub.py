"""Models by Hugging Face Hub id: download (or find in the standard HF cache) a snapshot."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tqdm.auto import tqdm

#: Everything a model needs besides its weights.
META_PATTERNS = [
    "*.json",
    "*.jinja",
    "tokenizer.model",
    "*.tiktoken",
    "merges.txt",
    "vocab.txt",
]
#: Never needed: original (non-HF) checkpoints that some repos ship next to the HF ones.
IGNORE_PATTERNS = ["original/*", "consolidated*", "*.gguf", "*.onnx", "*.msgpack", "*.h5"]

# "name" or "org/name" (optionally ":revision" is not accepted: revision is its own argument).
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def looks_like_repo_id(name: str) -> bool:
    """Whether ``name`` could be a Hub repo id (``org/name``) rather than a local path."""
    return bool(_REPO_ID.match(name)) and not name.endswith((".gguf", ".json")) and ".." not in name


def hub_cache_dir() -> Path:
    """The standard HF hub cache, read from the environment now (not at import time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub spells its truthy values."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_token() -> str | None:
    """``HF_TOKEN`` or the legacy ``HUGGING_FACE_HUB_TOKEN``; None lets huggingface_hub use a
    token saved by ``hf auth login``."""
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def snapshot(
    repo_id: str, revision: str | None = None, *, weights: bool = True, progress: bool = True
) -> Path:
    """The local snapshot folder of ``repo_id``, downloading what is missing.

    Downloads config, tokenizer and safetensors files; ``pytorch_model*.bin`` only when the
    repo has no safetensors. With ``weights=False`` only config and tokenizer files (for
    dummy weights). Offline (``HF_HUB_OFFLINE=1`` or no network) a cached snapshot is used;
    a model that is not cached raises FileNotFoundError naming it.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = hub_offline()
    cache_dir = hub_cache_dir()

    def download(patterns: list[str]) -> Path:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=str(cache_dir),
            token=hub_token(),
            local_files_only=offline,
            allow_patterns=patterns,
            ignore_patterns=IGNORE_PATTERNS,
            tqdm_class=None if progress else _SilentTqdm,
        )
        return Path(str(folder))

    label = f"{repo_id}@{revision}" if revision else repo_id
    try:
        folder = download([*META_PATTERNS, *(["*.safetensors"] if weights else [])])
        if weights and not any(folder.glob("*.safetensors")):
            # Only older repos lack safetensors; fetch their PyTorch pickles instead.
            folder = download([*META_PATTERNS, "pytorch_model*.bin"])
    except LocalEntryNotFoundError as exc:
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
        raise FileNotFoundError(
            f"model '{label}' is not in the Hugging Face cache ({cache_dir}) and cannot be "
            f"downloaded ({why}); download it once with network access "
            f"(e.g. `hf download {repo_id}`) or give a local path"
        ) from exc
    except GatedRepoError as exc:
        raise PermissionError(
            f"model '{label}' is gated on the Hugging Face Hub: accept its license on "
            "huggingface.co and set HF_TOKEN to a token with access"
        ) from exc
    except RevisionNotFoundError as exc:
        raise FileNotFoundError(
            f"model '{repo_id}' has no revision {revision!r} on the Hub"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise FileNotFoundError(
            f"model '{label}' is neither a local path nor a Hugging Face Hub repository "
            "(or it is private: set HF_TOKEN)"
        ) from exc
    except HFValidationError as exc:
        raise ValueError(f"'{repo_id}' is not a valid Hugging Face repo id: {exc}") from exc
    return folder


class _SilentTqdm(tqdm):
    """A progress bar that never shows (``progress=False``)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)
