"""The serving core: model registry and lifecycle, schedulers, request/response types, statistics."""
