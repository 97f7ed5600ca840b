"""The KServe v2 / Triton HTTP frontend."""

from tritium.frontends.http.app import create_app

__all__ = ["create_app"]
