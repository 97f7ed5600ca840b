"""Greedy outputs match Hugging Face transformers token for token (float32)."""

from __future__ import annotations

import pytest
import torch
from engine_testing import FAMILIES, assert_pool_free

from tritium.engine import LLM, SamplingParams

NEW_TOKENS = 64
PROMPTS = ["The capital of France is", "def fibonacci(n):"]


def hf_greedy(model, prompt_ids: list[int], n: int) -> list[int]:
    """Plain greedy decoding with transformers' own model and KV cache (no EOS stop)."""
    ids = torch.tensor([prompt_ids])
    out: list[int] = []
    past = None
    with torch.inference_mode():
        for _ in range(n):
            res = model(input_ids=ids, past_key_values=past, use_cache=True)
            past = res.past_key_values
            tok = int(res.logits[0, -1].argmax())
            out.append(tok)
            ids = torch.tensor([[tok]])
    return out


def check_against_hf(model_dir, **engine_args) -> None:
    llm = LLM(str(model_dir), dtype="float32", **engine_args)
    tok = llm.get_tokenizer()
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
    outs = llm.generate(PROMPTS, params, use_tqdm=False)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    for prompt, out in zip(PROMPTS, outs, strict=True):
        expected = hf_greedy(model, tok.encode(prompt), NEW_TOKENS)
        assert out.outputs[0].token_ids == expected
    assert_pool_free(llm)


def test_smollm2_matches_transformers(smollm2_dir):
    check_against_hf(smollm2_dir)


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_family_matches_transformers(tiny_model_dirs, family):
    # block_size 4 and a small token budget exercise multi-block tables and chunked prefill.
    check_against_hf(tiny_model_dirs[family], block_size=4, max_num_batched_tokens=5)


def test_unsupported_architecture_is_named(tmp_path, smollm2_dir):
    import json
    import shutil

    for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        shutil.copy(smollm2_dir / f, tmp_path / f)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["architectures"] = ["GPTNeoXForCausalLM"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"GPTNeoXForCausalLM.*supported: LlamaForCausalLM"):
        LLM(str(tmp_path), dtype="float32")
