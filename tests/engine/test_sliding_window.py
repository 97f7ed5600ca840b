"""Sliding-window attention (Mistral, Qwen2 with use_sliding_window) matches transformers
token for token in float32: prompts past the window, alone and batched, chunked prefill,
prefix-cache hits, both CPU decode paths, and the Triton step (on CPU through Triton's
interpreter); a window wider than the context changes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from engine_testing import TINY, TRITON_DEVICE, assert_pool_free, needs_triton_kernels

from tritium.engine import LLM, SamplingParams
from tritium.engine.models.llama import layer_sliding_windows

WINDOW = 8
NEW_TOKENS = 64
VOCAB = 49152  # SmolLM2's tokenizer, copied into every folder
PROMPT_LENS = [21, 5, 13, 30]  # one under the window: batched rows see different key ranges


def prompt(n: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed + n)
    return torch.randint(0, VOCAB, (n,), generator=g).tolist()


PROMPTS = [prompt(n) for n in PROMPT_LENS]


def _with_window(src: Path, dst: Path, window: int | None) -> Path:
    """A copy of the model folder `src` (same weights) with another sliding_window."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["sliding_window"] = window
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.fixture(scope="module")
def window_dirs(tmp_path_factory, tokenizer_dir) -> dict[str, Path]:
    """mistral: window on every layer; qwen2: on layer 1 only (max_window_layers=1), so a
    full and a windowed layer share each step; mistral_wide/mistral_full: mistral's weights
    with a window wider than any context here, and with none."""
    from transformers import AutoModelForCausalLM, MistralConfig, Qwen2Config

    root = tmp_path_factory.mktemp("sliding_window_models")
    configs = {
        "mistral": MistralConfig(vocab_size=VOCAB, sliding_window=WINDOW, **TINY),
        "qwen2": Qwen2Config(
            vocab_size=VOCAB,
            use_sliding_window=True,
            sliding_window=WINDOW,
            max_window_layers=1,
            tie_word_embeddings=True,
            **TINY,
        ),
    }
    dirs = {}
    for name, cfg in configs.items():
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(cfg).save_pretrained(root / name)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tokenizer_dir / f, root / name / f)
        dirs[name] = root / name
    dirs["mistral_wide"] = _with_window(dirs["mistral"], root / "mistral_wide", 512)
    dirs["mistral_full"] = _with_window(dirs["mistral"], root / "mistral_full", None)
    return dirs


@pytest.fixture(scope="module")
def hf_greedy(window_dirs):
    """transformers' own greedy continuation (its model, mask and sliding KV cache),
    cached per (model, prompt)."""
    from transformers import AutoModelForCausalLM

    models: dict[str, torch.nn.Module] = {}
    memo: dict[tuple[str, tuple[int, ...]], list[int]] = {}

    def run(name: str, ids: list[int]) -> list[int]:
        key = (name, tuple(ids))
        if key in memo:
            return memo[key]
        if name not in models:
            models[name] = AutoModelForCausalLM.from_pretrained(
                window_dirs[name], dtype=torch.float32
            ).eval()
        model, cur, cache, out = models[name], torch.tensor([ids]), None, []
        with torch.inference_mode():
            for _ in range(NEW_TOKENS):
                # `past_key_values` works across transformers 5.x (5.24 renames it `cache`
                # with a warning; 5.23 silently ignores `cache`).
                res = model(input_ids=cur, past_key_values=cache, use_cache=True)
                cache = res.past_key_values
                out.append(int(res.logits[0, -1].argmax()))
                cur = torch.tensor([[out[-1]]])
        memo[key] = out
        return out

    return run


def generate(llm: LLM, prompts: list[list[int]]) -> list[list[int]]:
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
    outs = llm.generate(prompts, params, use_tqdm=False)
    assert_pool_free(llm)
    return [o.outputs[0].token_ids for o in outs]


def engine(window_dirs, name: str, **kwargs) -> LLM:
    kwargs.setdefault("block_size", 4)  # several blocks per window: windows cross blocks
    return LLM(str(window_dirs[name]), dtype="float32", device="cpu", **kwargs)


def test_layer_windows_follow_transformers():
    from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    four = dict(TINY, num_hidden_layers=4)
    assert (
        layer_sliding_windows(MistralConfig(sliding_window=16, **four), "MistralForCausalLM")
        == [16] * 4
    )
    assert (
        layer_sliding_windows(MistralConfig(sliding_window=None, **four), "MistralForCausalLM")
        == [None] * 4
    )
    for cls, arch in ((Qwen2Config, "Qwen2ForCausalLM"), (Qwen3Config, "Qwen3ForCausalLM")):
        off = cls(sliding_window=16, max_window_layers=2, **four)  # use_sliding_window False
        assert layer_sliding_windows(off, arch) == [None] * 4
        on = cls(use_sliding_window=True, sliding_window=16, max_window_layers=2, **four)
        assert layer_sliding_windows(on, arch) == [None, None, 16, 16]
        assert on.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
    llama = LlamaConfig(**four)
    llama.sliding_window = 16  # transformers' Llama ignores it, and so do we
    assert layer_sliding_windows(llama, "LlamaForCausalLM") == [None] * 4


@pytest.mark.parametrize("family", ["mistral", "qwen2"])
def test_one_prompt_past_the_window_matches_transformers(window_dirs, hf_greedy, family):
    llm = engine(window_dirs, family)
    assert llm.engine_core.runner.sliding_window == WINDOW
    ids = PROMPTS[0]
    assert generate(llm, [ids]) == [hf_greedy(family, ids)]


@pytest.mark.parametrize(
    ("family", "decode_path"),
    # qwen2 has a full and a windowed layer: the block-table path runs both kinds.
    [("mistral", "contiguous"), ("qwen2", "contiguous"), ("qwen2", "block_table")],
)
def test_batched_prompts_match_transformers(window_dirs, hf_greedy, family, decode_path):
    llm = engine(window_dirs, family)
    decode_kv = llm.engine_core.runner.decode_kv
    if decode_path == "block_table":
        decode_kv.budget_bytes = 0  # no contiguous copy fits: decodes gather blocks per layer
    assert generate(llm, PROMPTS) == [hf_greedy(family, p) for p in PROMPTS]
    assert (decode_kv.num_rebuilds > 0) == (decode_path == "contiguous")


@pytest.mark.parametrize("family", ["mistral", "qwen2"])
def test_chunked_prefill_matches_transformers(window_dirs, hf_greedy, family):
    # 5-token chunks: later chunks start past the window, over context in the cache.
    llm = engine(window_dirs, family, max_num_batched_tokens=5)
    assert generate(llm, PROMPTS) == [hf_greedy(family, p) for p in PROMPTS]


def test_prefix_cache_hit_matches_transformers(window_dirs, hf_greedy):
    llm = engine(window_dirs, "mistral", enable_prefix_caching=True)
    base = PROMPTS[3]
    longer = base + prompt(7, seed=1)
    assert generate(llm, [base]) == [hf_greedy("mistral", base)]
    bm = llm.engine_core.block_manager
    hits = bm.prefix_cache_hits
    assert generate(llm, [longer]) == [hf_greedy("mistral", longer)]
    assert bm.prefix_cache_hits - hits >= 24  # the prompt's first blocks came from the cache


def test_window_wider_than_the_context_changes_nothing(window_dirs):
    wide = engine(window_dirs, "mistral_wide")
    full = engine(window_dirs, "mistral_full")
    assert wide.engine_core.runner.sliding_window == 512
    assert full.engine_core.runner.sliding_window is None
    wide_out = generate(wide, PROMPTS)
    assert wide_out == generate(full, PROMPTS)
    # The same weights with the 8-token window do differ: the window is what matters here.
    assert wide_out != generate(engine(window_dirs, "mistral"), PROMPTS)
    # Below the window the runner builds no window masks at all.
    runner = wide.engine_core.runner
    chunk = runner._prefill_chunk(0, 30, 0, list(range(8)))
    assert chunk.window_mask is None and chunk.mask is None


@needs_triton_kernels
@pytest.mark.parametrize("family", ["mistral", "qwen2"])
def test_triton_step_matches_transformers(window_dirs, hf_greedy, family):
    """The CUDA step's kernels apply the window themselves: batched prompts past it, with
    chunked prefill, keep the full length and give transformers' tokens (on CPU through
    the interpreter, eagerly; on a GPU with CUDA graphs)."""
    from tritium.engine.cuda_graphs import GpuExecutor

    device = TRITON_DEVICE
    llm = LLM(
        str(window_dirs[family]), dtype="float32", device=device, block_size=4,
        max_num_batched_tokens=16, max_num_seqs=4,
        num_gpu_blocks_override=256 if device == "cuda" else None,
    )  # fmt: skip
    runner = llm.engine_core.runner
    if runner.gpu is None:
        runner.gpu = GpuExecutor(runner, max_num_seqs=4, enforce_eager=True)
    assert llm.engine_core.max_model_len > WINDOW
    n = 16  # past the window for every prompt
    params = SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)
    outs = llm.generate(PROMPTS, params, use_tqdm=False)
    assert_pool_free(llm)
    assert [o.outputs[0].token_ids for o in outs] == [hf_greedy(family, p)[:n] for p in PROMPTS]
