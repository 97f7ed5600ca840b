"""How tiny-llama-q4_k_m.gguf was made: a one-layer random Llama written in F32 by the
tests' own GGUF writer, then quantized to Q4_K_M by llama.cpp (llama-cpp-python, as
benchmarks/setup_peers.py installs it; not a test dependency).

    .venv/bin/python tests/engine/data/make_tiny_llama_q4_k_m.py /tmp/tiny-f32.gguf
    <llama-cpp-python's python> -c "import ctypes, llama_cpp as l; \
        p = l.llama_model_quantize_default_params(); p.ftype = l.LLAMA_FTYPE_MOSTLY_Q4_K_M; \
        l.llama_model_quantize(b'/tmp/tiny-f32.gguf', b'tiny-llama-q4_k_m.gguf', ctypes.byref(p))"
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import test_loader_gguf as t
from transformers import LlamaConfig

if __name__ == "__main__":
    config = LlamaConfig(
        vocab_size=300, hidden_size=256, intermediate_size=512, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )  # fmt: skip
    t.write_gguf(Path(sys.argv[1]), "llama", t.tiny_model(config), t.Q.F32)
