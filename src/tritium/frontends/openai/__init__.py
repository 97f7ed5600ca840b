"""The OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models) for the
models served by the LLM backend, mounted on the HTTP port."""

from tritium.frontends.openai.routes import openai_routes

__all__ = ["openai_routes"]
