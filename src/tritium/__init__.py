"""Tritium: a Triton-compatible inference server for LLMs with its own paged-attention engine."""

__version__ = "0.1.0"
