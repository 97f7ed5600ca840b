"""Weights, configs and tokenizers for the engine: HF folders, the Hub, GGUF files, dummy weights.

from tritium.engine.loader import load_checkpoint
ckpt = load_checkpoint("smollm2")              # the default model (GGUF, converted once)
for name, tensor in ckpt.weights(): ...        # HF names, tensors in ckpt.dtype
"""

from tritium.engine.loader.checkpoint import LOAD_FORMATS, Checkpoint, gguf_source, load_checkpoint
from tritium.engine.loader.default_model import default_model_path
from tritium.engine.loader.dummy import DUMMY_CONFIGS, dummy_config

__all__ = [
    "DUMMY_CONFIGS",
    "LOAD_FORMATS",
    "Checkpoint",
    "default_model_path",
    "dummy_config",
    "gguf_source",
    "load_checkpoint",
]
