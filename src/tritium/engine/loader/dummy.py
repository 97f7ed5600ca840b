"""Dummy (random) weights of any published shape, for benchmarks without a checkpoint."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from tritium.engine.loader.cache import cache_root

#: Published configs (values from the models' config.json on the Hub), by short name.
DUMMY_CONFIGS: dict[str, dict[str, Any]] = {
    "llama-3-8b": {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 128256,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
        "tie_word_embeddings": False,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
        "hidden_act": "silu",
    },
    "llama-3.2-1b": {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        "tie_word_embeddings": True,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
        "hidden_act": "silu",
    },
}

#: Standard deviation of the random weights; small so activations stay finite in bf16.
DUMMY_STD = 0.02


def dummy_config(name: str) -> PretrainedConfig:
    """The published config of a known model name (``"llama-3-8b"``, ``"llama-3.2-1b"``)."""
    key = name.lower()
    if key not in DUMMY_CONFIGS:
        raise ValueError(f"unknown dummy model {name!r}; known: {', '.join(DUMMY_CONFIGS)}")
    values = dict(DUMMY_CONFIGS[key])
    return AutoConfig.for_model(values.pop("model_type"), **values)


def dummy_config_folder(name: str) -> Path:
    """A folder holding ``config.json`` for a known dummy name (written once into the cache)."""
    config = dummy_config(name)
    folder = cache_root() / "dummy" / name.lower()
    target = folder / "config.json"
    text = config.to_json_string(use_diff=False)
    if not target.is_file() or target.read_text() != text:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".config.json.tmp-{zlib.crc32(text.encode())}"
        tmp.write_text(text)
        tmp.replace(target)
    return folder


def parameter_shapes(config: PretrainedConfig) -> dict[str, torch.Size]:
    """The HF parameter names and shapes of ``config``'s model, built on the meta device.

    Tied parameters appear once (as a checkpoint stores them: no ``lm_head.weight`` when the
    embeddings are tied).
    """
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {name: p.shape for name, p in model.named_parameters()}


def iter_dummy_weights(
    config: PretrainedConfig,
    dtype: torch.dtype,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield seeded random weights named and shaped like ``config``'s HF checkpoint.

    Matrices are N(0, DUMMY_STD); 1-D norm weights are ones (so RMSNorm keeps its scale) and
    biases zeros. Each tensor's generator is seeded from ``seed`` and its name, so values do
    not depend on iteration order. ``device`` makes them directly where they will live (a
    GPU fills an 8B model in a second; the CPU takes about a minute).
    """
    target = torch.device(device) if device is not None else torch.device("cpu")
    for name, shape in parameter_shapes(config).items():
        if name.endswith(".bias"):
            yield name, torch.zeros(shape, dtype=dtype, device=target)
        elif len(shape) == 1:
            yield name, torch.ones(shape, dtype=dtype, device=target)
        else:
            gen = torch.Generator(device=target)
            gen.manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            tensor = torch.empty(shape, dtype=dtype, device=target)
            tensor.normal_(0.0, DUMMY_STD, generator=gen)
            yield name, tensor
