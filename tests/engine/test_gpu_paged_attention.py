"""GPU path: the Triton paged-attention kernels against a float64 torch reference, and the
engine on CUDA (Triton attention, CUDA graphs) against transformers. Without CUDA the
kernels run on CPU tensors in Triton's interpreter (tests/conftest.py); the engine tests
need CUDA."""

from __future__ import annotations

import json
import random

import pytest
import torch
from engine_testing import TRITON_DEVICE as DEVICE
from engine_testing import TRITON_INTERPRETED as INTERPRETED
from engine_testing import needs_triton_kernels

from tritium.engine.layers import paged_attention_triton as pa

# Cases the interpreter skips: it multiplies bf16 tiles as raw integers, and the largest
# shapes take ~10 s each there. The GPU runs them all.
on_gpu_only = pytest.mark.skipif(INTERPRETED, reason="bf16 or large: GPU only")
BF16 = pytest.param(torch.bfloat16, marks=on_gpu_only)
needs_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and pa.HAS_TRITON), reason="needs CUDA and Triton"
)

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 3e-3}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert not out.isnan().any()
    return ((out.double() - ref).norm() / ref.norm()).item()


@needs_triton_kernels
@pytest.mark.parametrize("block_size", [8, pytest.param(16, marks=on_gpu_only), 32])
@pytest.mark.parametrize(
    ("heads", "kv_heads", "head_dim"),
    [(4, 4, 64), (8, 2, 128), pytest.param(32, 8, 64, marks=on_gpu_only)],
)
@pytest.mark.parametrize("dtype", [BF16, torch.float32])
@pytest.mark.parametrize("splits", [1, 5])
def test_decode_matches_reference(block_size, heads, kv_heads, head_dim, dtype, splits):
    _check_decode(block_size, heads, kv_heads, head_dim, dtype, splits, window=0)


@needs_triton_kernels
@pytest.mark.parametrize("dtype", [BF16, torch.float32])
@pytest.mark.parametrize("splits", [1, 3])
def test_windowed_decode_matches_reference(dtype, splits):
    """A sliding-window layer: contexts shorter and longer than the window, which also
    starts inside a block and inside a key tile."""
    _check_decode(16, 8, 2, 64, dtype, splits, window=100)


def _check_decode(block_size, heads, kv_heads, head_dim, dtype, splits, window):
    g = torch.Generator(DEVICE).manual_seed(block_size * 1000 + heads + splits)
    lens = [1, 7, block_size, 129, 700, 0]
    width = max(-(-n // block_size) for n in lens) + 3  # wider than needed: must be ignored
    nb = len(lens) * width + 5
    kc = torch.randn(nb, block_size, kv_heads, head_dim, device=DEVICE, generator=g).to(dtype)
    vc = torch.randn(kc.shape, device=DEVICE, generator=g).to(dtype)
    tables = torch.randperm(nb, device=DEVICE, generator=g)[: len(lens) * width]
    tables = tables.view(len(lens), width).to(torch.int32)
    q = torch.randn(len(lens), heads, head_dim, device=DEVICE, generator=g).to(dtype)
    ctx = torch.tensor(lens, dtype=torch.int32, device=DEVICE)
    out = torch.full_like(q, float("nan"))
    pa.paged_decode(q, kc, vc, tables, ctx, head_dim**-0.5, splits, out=out, window=window)
    ref = pa.reference_decode(q, kc, vc, tables, ctx, head_dim**-0.5, window)
    assert rel_err(out, ref) < TOL[dtype]
    assert torch.all(out[-1] == 0)  # a padded (empty) row reads nothing


@needs_triton_kernels
@pytest.mark.parametrize("block_size", [16, 32])
@pytest.mark.parametrize(
    ("heads", "kv_heads", "head_dim"), [(4, 2, 64), pytest.param(32, 8, 128, marks=on_gpu_only)]
)
@pytest.mark.parametrize("dtype", [BF16, torch.float32])
def test_prefill_and_write_match_reference(block_size, heads, kv_heads, head_dim, dtype):
    _check_prefill(block_size, heads, kv_heads, head_dim, dtype, window=0)


@needs_triton_kernels
@pytest.mark.parametrize("dtype", [BF16, torch.float32])
def test_windowed_prefill_matches_reference(dtype):
    """Chunks shorter and longer than the window, and one starting past it in the cache."""
    _check_prefill(16, 4, 2, 64, dtype, window=37)


def _check_prefill(block_size, heads, kv_heads, head_dim, dtype, window):
    g = torch.Generator(DEVICE).manual_seed(block_size + heads)
    nb = 128
    kc = torch.randn(nb, block_size, kv_heads, head_dim, device=DEVICE, generator=g).to(dtype)
    vc = torch.randn(kc.shape, device=DEVICE, generator=g).to(dtype)
    spec = [(5, 0), (200, 0), (33, 90), (1, 40)]  # (query rows, tokens already cached)
    perm = torch.randperm(nb, generator=torch.Generator().manual_seed(0)).tolist()
    chunks, slots, row, used = [], [], 0, 0
    for n, ctx in spec:
        k = -(-(n + ctx) // block_size)
        table = perm[used : used + k]
        used += k
        chunks.append((row, n, ctx, table))
        slots += [table[p // block_size] * block_size + p % block_size for p in range(ctx, ctx + n)]
        row += n
    t = row
    q = torch.randn(t, heads, head_dim, device=DEVICE, generator=g).to(dtype)
    k = torch.randn(t, kv_heads, head_dim, device=DEVICE, generator=g).to(dtype)
    v = torch.randn(t, kv_heads, head_dim, device=DEVICE, generator=g).to(dtype)
    width = max(len(c[3]) for c in chunks)
    tile_chunk, tile_m0 = pa.prefill_tiles([c[1] for c in chunks])

    def i32(x):
        return torch.tensor(x, dtype=torch.int32, device=DEVICE)

    meta = pa.PagedMetadata(
        slot_mapping=torch.tensor(slots, device=DEVICE),
        prefill_q_start=i32([c[0] for c in chunks]),
        prefill_q_len=i32([c[1] for c in chunks]),
        prefill_context_len=i32([c[2] for c in chunks]),
        prefill_block_tables=i32([c[3] + [0] * (width - len(c[3])) for c in chunks]),
        prefill_tile_chunk=i32(tile_chunk),
        prefill_tile_m0=i32(tile_m0),
        num_prefill_tiles=len(tile_chunk),
    )

    class Layer:
        k_cache, v_cache, scale, sliding_window = kc, vc, head_dim**-0.5, window or None

    out = pa.paged_attention_forward(Layer, q, k, v, meta).view(t, heads, head_dim)
    flat = torch.tensor(slots, device=DEVICE)
    assert torch.equal(kc.view(-1, kv_heads, head_dim)[flat], k)
    assert torch.equal(vc.view(-1, kv_heads, head_dim)[flat], v)
    ref = pa.reference_prefill(q, kc, vc, chunks, head_dim**-0.5, window)
    assert rel_err(out, ref) < TOL[dtype]


TINY = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}


@pytest.fixture(scope="module")
def tiny_config_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpu_tiny") / "config.json"
    path.write_text(json.dumps(TINY))
    return path


def _hf_model(config_path):
    from transformers import AutoModelForCausalLM

    from tritium.engine.loader import load_checkpoint

    ckpt = load_checkpoint(str(config_path), load_format="dummy", dtype=torch.float32, seed=0)
    with torch.device("cuda"):
        hf = AutoModelForCausalLM.from_config(ckpt.hf_config, dtype=torch.float32)
    missing, unexpected = hf.load_state_dict(dict(ckpt.weights()), strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    return hf.eval()


@needs_cuda
@pytest.mark.parametrize("enforce_eager", [False, True])
def test_engine_on_cuda_matches_transformers(tiny_config_path, enforce_eager):
    """Greedy tokens of the engine (Triton kernels, chunked prefill, prefix cache, graphs)
    are transformers' argmax at every step, teacher-forced on the engine's output (a
    near-tie, within 1e-4, may go either way)."""
    from tritium.engine import LLM, SamplingParams

    rng = random.Random(0)
    prompts = [[rng.randrange(512) for _ in range(n)] for n in (1, 9, 40, 150, 300)]
    prompts.append([*prompts[3][:130], 1, 2, 3])  # a prefix-cache hit (full blocks shared)
    llm = LLM(
        str(tiny_config_path),
        load_format="dummy",
        dtype="float32",
        device="cuda",
        max_num_batched_tokens=64,  # chunked prefill next to running decodes
        max_num_seqs=4,  # graphs for 1, 2, 4; more prompts than seqs: queueing
        enforce_eager=enforce_eager,
        num_gpu_blocks_override=512,  # the pool sizing is exercised by the benchmark
    )
    runner = llm.engine_core.runner
    assert runner.gpu is not None
    assert bool(runner.gpu.graphs) != enforce_eager
    sp = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True, detokenize=False)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], sp, use_tqdm=False)
    got = [list(o.outputs[0].token_ids) for o in outs]
    del llm, runner
    hf = _hf_model(tiny_config_path)
    with torch.no_grad():
        for p, g in zip(prompts, got, strict=True):
            assert len(g) == 16
            logits = hf(torch.tensor([p + g[:-1]], device="cuda")).logits[0, len(p) - 1 :]
            chosen = logits.gather(1, torch.tensor(g, device="cuda")[:, None])[:, 0]
            gap = logits.max(1).values - chosen
            assert gap.max().item() < 1e-4, (p[:5], g, gap.tolist())


def test_bf16_is_the_cuda_default():
    from tritium.engine.config import EngineArgs

    assert EngineArgs(device="cuda").resolved_dtype() == torch.bfloat16
