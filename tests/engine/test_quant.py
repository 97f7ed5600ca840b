"""CPU weight formats: the C kernels (int8, q4, and bf16/fp16 widened to fp32), the compact
Linear, and the engine choosing a format from the checkpoint."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from engine_testing import (
    BF16_MATMUL,
    assert_pool_free,
    compact_linear,
    kernel_inputs,
    q4_block_errors,
    random_linear,
)
from test_models import NEW_TOKENS, PROMPTS, hf_greedy

from tritium.engine import LLM, EngineArgs, SamplingParams
from tritium.engine.engine_core import bf16_matmuls_on_cpu, engine_dtype, resolve_quantization
from tritium.engine.layers import quant_kernel
from tritium.engine.layers.linear import (
    BLOCK_FORMATS,
    QUANT_KERNEL_MAX_ROWS,
    Linear,
    quantize_linears,
)
from tritium.engine.layers.quant_kernel import quantize_weight_int8, quantize_weight_q4
from tritium.engine.loader import gguf, load_checkpoint

pytestmark = pytest.mark.skipif(
    not quant_kernel.is_available(), reason="the quantized kernels need a C compiler"
)

FORMATS = ["int8", "q4", "q8", "bf16", "fp16"]
#: What the kernels compute: each format, and bf16 weights in a bf16 matmul.
KERNEL_FORMATS = [*FORMATS, BF16_MATMUL]


@pytest.mark.parametrize("method", KERNEL_FORMATS)
@pytest.mark.parametrize("rows", [1, 2, 3, 7, QUANT_KERNEL_MAX_ROWS, QUANT_KERNEL_MAX_ROWS + 1])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_equals_fp32_math_on_the_dequantized_weight(
    method: str, rows: int, bias: bool
) -> None:
    """int8, bf16, fp16: fp32 inputs; q4, q8: inputs rounded to 8 bits per block of 32
    (llama.cpp's rule); a bf16 matmul: inputs rounded to bf16; on the one-row path, the
    several-row path and the >64-row matmul."""
    torch.manual_seed(rows)
    # 37 rows: a partial tile of the kernels' 4; K = 160: five q4 blocks, K % 16 != 0.
    layer = compact_linear(160, 37, method, bias=bias)
    assert layer.weight is None and layer.quant == method.split()[0]
    x = torch.randn(rows, 160) * torch.logspace(-1, 1, 160)  # blocks of different scale
    seen = kernel_inputs(layer, x)
    expected = seen @ layer.dequantized_weight().T + (layer.bias if bias else 0)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    if method in (*BLOCK_FORMATS, BF16_MATMUL):  # the rounding is visible: not fp32 inputs
        assert not torch.allclose(
            x @ layer.dequantized_weight().T,
            expected - (layer.bias if bias else 0),
            rtol=1e-5,
            atol=1e-5,
        )


def test_q4_rows_give_the_same_result_alone_or_batched() -> None:
    layer = random_linear(576, 100)
    layer.quantize("q4")
    x = torch.randn(9, 576)
    alone = torch.cat([layer(x[i : i + 1]) for i in range(9)])
    torch.testing.assert_close(layer(x), alone, rtol=1e-6, atol=1e-6)


def test_activation_blocks_round_within_half_a_step() -> None:
    x = torch.randn(3, 96) * torch.logspace(-3, 2, 96)
    x[1, 32:64] = 0.0  # an all-zero block stays zero
    q = quant_kernel.quantize_activations_q8(x)
    step = (x.abs().reshape(3, 3, 32).amax(-1) / 127).repeat_interleave(32, dim=1)
    assert bool(((q - x).abs() <= step / 2 + 1e-7).all())
    assert not q[1, 32:64].any()


@pytest.mark.parametrize("method", KERNEL_FORMATS)
def test_linear_keeps_input_dtype_and_leading_dims(method: str) -> None:
    layer = compact_linear(64, 24, method, bias=False)
    x = torch.randn(2, 3, 64, dtype=torch.bfloat16)
    out = layer(x)
    assert out.shape == (2, 3, 24) and out.dtype == torch.bfloat16
    seen = kernel_inputs(layer, x.float())
    expected = seen @ layer.dequantized_weight().T
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(("method", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_16_bit_formats_keep_16_bit_weights_exactly(method: str, dtype: torch.dtype) -> None:
    layer = random_linear(64, 24)
    with torch.no_grad():
        layer.weight.copy_(layer.weight.to(dtype))  # a checkpoint stored in 16 bits
    stored = layer.weight.detach().clone()
    layer.quantize(method)
    assert layer.qweight is not None and layer.qweight.dtype == dtype and layer.wscale is None
    assert layer.qweight.untyped_storage().nbytes() == 2 * stored.numel()
    assert torch.equal(layer.dequantized_weight(), stored)


def test_int8_weight_is_within_half_a_step() -> None:
    w = torch.randn(50, 128) * torch.logspace(-3, 1, 50)[:, None]  # rows of very different size
    q, scale = quant_kernel.quantize_weight_int8(w)
    assert q.abs().max() <= 127
    err = (q.float() * scale[:, None] - w).abs()
    assert bool((err <= scale[:, None] / 2 + 1e-7).all())


def test_q4_keeps_q4_1_weights_exactly_and_rounds_others_within_half_a_step() -> None:
    torch.manual_seed(0)
    d = (torch.rand(40, 4) * 0.1).half().float()  # fp16 scales and minimums, as in a GGUF
    m = -torch.rand(40, 4).half().float()
    q = torch.randint(0, 16, (40, 4, 32)).float()
    q[..., 0], q[..., 1] = 0, 15  # Q4_1's quantizer puts each block's min and max on 0 and 15
    w = (q * d[..., None] + m[..., None]).reshape(40, 128)
    codes, dm = quant_kernel.quantize_weight_q4(w)
    assert codes.dtype == torch.uint8 and codes.shape == (40, 64) and dm.shape == (40, 4, 2)
    torch.testing.assert_close(quant_kernel.dequantize_q4(codes, dm), w, rtol=0, atol=1e-6)
    other = torch.randn(40, 128)
    codes, dm = quant_kernel.quantize_weight_q4(other)
    step = dm[..., 0].float().repeat_interleave(32, dim=1)
    # + fp16 rounding of the block minimum (|m| < 4: at most 2e-3)
    assert bool(((quant_kernel.dequantize_q4(codes, dm) - other).abs() <= step / 2 + 3e-3).all())


@pytest.mark.parametrize("grid", ["q4_0", "q4_k_like", "q4_k_mostly_15_steps"])
def test_q4_keeps_the_codes_of_blocks_on_a_coarser_4_bit_grid(grid: str) -> None:
    """Q4_0 blocks (scale from the largest magnitude, codes rarely reaching both 0 and 15)
    and Q4_K-like ones (any step and minimum, codes inside 0..15) keep every code: only the
    fp16 rounding of d and m is left, where spanning them in 15 steps rounds each code
    again by up to half a step."""
    import gguf as gguf_py

    torch.manual_seed(0)
    if grid == "q4_0":
        x = (torch.randn(64, 256) * 0.02).numpy()
        qtype = gguf_py.GGMLQuantizationType.Q4_0
        w = torch.from_numpy(gguf_py.quants.dequantize(gguf_py.quants.quantize(x, qtype), qtype))
        w = w.reshape(64, 256)
    else:
        step = torch.rand(64, 8) * 0.01 + 1e-3  # not fp16 values: the rounding is ours
        low = -torch.rand(64, 8) * 0.1
        q = torch.randint(2, 14, (64, 8, 32)).float()
        q[..., 0], q[..., 1] = q[..., 0].clamp(max=4), q[..., 1].clamp(min=11)
        if grid == "q4_k_mostly_15_steps":
            # As llama.cpp's Q4_K files are: nearly every block spans codes 0 to 15, and
            # the rare one that does not is nowhere near the first rows.
            q[..., 0], q[..., 1] = 0.0, 15.0
            q[50, 3, 1] = 13.0
        w = (q * step[..., None] + low[..., None]).reshape(64, 256)
    err, bound = q4_block_errors(w)  # bound: the fp16 rounding of each block's d and m
    blocks = w.reshape(64, 8, 32)
    true_step = (blocks.amax(-1) - blocks.amin(-1)) / 15  # at least the grid's step / 15
    assert bool((err <= bound).all())
    assert bool((err < true_step / 8).all())  # far inside the 15-step rounding


def test_quantize_rejects_what_the_kernels_cannot_run() -> None:
    with pytest.raises(ValueError, match="in_features % 8"):
        random_linear(12, 4).quantize("int8")
    with pytest.raises(ValueError, match="in_features % 32"):
        random_linear(40, 4).quantize("q4")
    with pytest.raises(ValueError, match="in_features % 8"):
        random_linear(12, 4).quantize("bf16")
    with pytest.raises(ValueError, match="unknown weight format"):
        random_linear(32, 4).quantize("q3")


def test_layers_take_their_sources_format_and_fall_back_by_width() -> None:
    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c, self.d, self.e = (
                random_linear(64, 8), random_linear(64, 8), random_linear(40, 8), random_linear(64, 8),
                random_linear(40, 8),
            )  # fmt: skip

    model = Tiny()
    counts = quantize_linears(
        model, {"a.weight": "q4", "b.weight": "int8", "c.weight": "q4", "e.weight": "q8"}
    )  # d has a float source: it stays float; c and e are 40 wide: blocks of 32 cannot
    # tile them, int8 can
    assert (model.a.quant, model.b.quant, model.c.quant, model.d.quant, model.e.quant) == (
        "q4", "int8", "int8", None, "int8"
    )  # fmt: skip
    assert counts == {"q4": 1, "int8": 3}

    class Packed(torch.nn.Module):  # layers fed by two checkpoint tensors each
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c, self.d, self.e = (
                random_linear(64, 8), random_linear(64, 8), random_linear(64, 8), random_linear(64, 8), random_linear(12, 8)
            )  # fmt: skip

        def checkpoint_names(self, name: str) -> list[str]:
            return [f"{name}.x.weight", f"{name}.y.weight"]

    packed = Packed()
    sources = {
        "a": ("bf16", "bf16"), "b": ("q4", "int8"), "c": ("bf16", "fp16"), "d": ("bf16", None),
        "e": ("fp16", "fp16"),
    }  # fmt: skip
    formats = {
        f"{layer}.{part}.weight": fmt
        for layer, pair in sources.items()
        for part, fmt in zip("xy", pair, strict=True)
        if fmt is not None
    }
    quantize_linears(packed, formats)
    # bf16 pairs stay bf16; q4 with int8 takes int8; 16-bit floats that differ, or a float
    # source, stay float (lossless); e is 12 wide, which the 16-bit kernels cannot tile
    assert [getattr(packed, n).quant for n in "abcde"] == ["bf16", "int8", None, None, None]


@pytest.mark.parametrize("method", FORMATS)
def test_quantized_engine_matches_transformers_on_the_same_weights(smollm2_dir, method) -> None:
    """int8, bf16 and fp16 are exact: transformers given the dequantized weights (fp32)
    produces the same greedy tokens. q4 rounds every linear layer's inputs to 8 bits, which turns float noise
    into whole rounding steps (the reference itself moves up to ~1.7 logits between fp32 and
    fp64), so no two implementations agree to the token for long; instead, at every step
    of our output the reference, with the same rounding and fed the same prefix, ranks our
    token at or within a small margin of its top."""
    from transformers import AutoModelForCausalLM

    llm = LLM(str(smollm2_dir), dtype="float32", quantization=method)
    ours = llm.engine_core.runner.model
    layers = dict(ours.named_modules())
    assert llm.engine_core.runner.quantization == f"{method} x{4 * 30 + 1}"
    tok = llm.get_tokenizer()
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
    outs = llm.generate(PROMPTS, params, use_tqdm=False)
    assert_pool_free(llm)

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        packed = "lm_head" if name == "lm_head" else next(
            (m for m in layers if isinstance(layers[m], Linear) and name + ".weight"
             in ours.checkpoint_names(m)),
            None,
        )  # fmt: skip
        assert packed is not None, name
        w = layers[packed].dequantized_weight()
        sources = ours.checkpoint_names(packed)
        if len(sources) > 1:  # q/k/v or gate/up rows, in checkpoint order
            attn = layers[packed.rsplit(".", 1)[0]]
            sizes = (
                [attn.q_size, attn.kv_size, attn.kv_size]
                if packed.endswith("qkv_proj")
                else [w.shape[0] // 2] * 2
            )
            w = w.split(sizes)[sources.index(name + ".weight")]
        # A fresh Parameter also unties lm_head from the (still fp32) embedding.
        module.weight = torch.nn.Parameter(w.clone())
        if method in BLOCK_FORMATS:
            module.register_forward_pre_hook(
                lambda _, args: (quant_kernel.quantize_activations_q8(args[0]),)
            )
    for prompt, out in zip(PROMPTS, outs, strict=True):
        ids, ours_ids = tok.encode(prompt), list(out.outputs[0].token_ids)
        if method not in BLOCK_FORMATS:  # fp32 math on the same weights
            assert ours_ids == hf_greedy(model, ids, NEW_TOKENS)
            continue
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids + ours_ids])).logits[0, len(ids) - 1 : -1]
        gaps = (logits.max(dim=-1).values - logits[torch.arange(len(ours_ids)), ours_ids]).tolist()
        assert max(gaps) < 1.0, gaps  # measured: at most 0.23
        assert sum(g == 0 for g in gaps) >= 0.9 * len(gaps), gaps  # measured: 60 and 61 of 64


def test_a_quantized_gguf_runs_quantized_on_cpu_unless_told_otherwise(smollm2_dir) -> None:
    gguf_ckpt = load_checkpoint("smollm2", dtype=torch.float32, progress=False)
    assert gguf_ckpt.gguf_file is not None  # the packaged Q4_1 file
    formats = resolve_quantization(EngineArgs(model="smollm2"), gguf_ckpt)
    # Q4_1 layers run as q4; the Q8_0 embedding (and so the tied lm_head) as q8
    assert formats == gguf.quantized_weight_formats(gguf_ckpt.gguf_file)
    assert isinstance(formats, dict)
    assert formats["model.layers.0.self_attn.q_proj.weight"] == "q4"
    assert formats["model.embed_tokens.weight"] == "q8"
    assert resolve_quantization(EngineArgs(model="smollm2", quantization="none"), gguf_ckpt) is None
    folder_ckpt = load_checkpoint(str(smollm2_dir), dtype=torch.float32, progress=False)
    # the converted folder stores bf16, which fp32 math keeps (test_a_16_bit_checkpoint_...)
    folder_formats = resolve_quantization(EngineArgs(model=str(smollm2_dir)), folder_ckpt)
    assert isinstance(folder_formats, dict) and set(folder_formats.values()) == {"bf16"}
    for method in FORMATS:
        args = EngineArgs(model=str(smollm2_dir), quantization=method)
        assert resolve_quantization(args, folder_ckpt) == method
        cuda = EngineArgs(model="smollm2", quantization=method, device="cuda")
        with pytest.raises(ValueError, match="CPU weight format"):
            resolve_quantization(cuda, gguf_ckpt)


def test_a_q8_0_gguf_weight_runs_on_its_own_blocks() -> None:
    """SmolLM2's Q8_0 embedding table, tied to the lm_head, runs as q8 holding the file's
    own codes and scales, block for block (no second rounding)."""
    import numpy as np
    from gguf import GGUFReader

    from tritium.engine.loader import default_model_path

    reader = GGUFReader(default_model_path())
    (table,) = [t for t in reader.tensors if t.name == "token_embd.weight"]
    assert table.tensor_type.name == "Q8_0"
    rows = int(table.shape[1])
    blocks = np.asarray(table.data).reshape(rows, -1, 34)  # fp16 d, then 32 int8 codes
    d = torch.from_numpy(blocks[..., :2].copy().view(np.float16)).squeeze(-1)
    codes = torch.from_numpy(blocks[..., 2:].copy().view(np.int8)).reshape(rows, -1)
    llm = LLM("smollm2", kv_cache_memory_bytes=16 << 20)
    lm_head = llm.engine_core.runner.model.lm_head
    assert lm_head.quant == "q8"
    assert torch.equal(lm_head.qweight, codes) and torch.equal(lm_head.wscale, d)


def test_unknown_quantization_is_named() -> None:
    with pytest.raises(ValueError, match="quantization='awq' is not supported"):
        EngineArgs(model="m", quantization="awq")


def test_without_a_compiler_the_engine_runs_dequantized_on_torch_ops_and_q4_says_why() -> None:
    script = """
import torch
from tritium.engine import EngineArgs
from tritium.engine.engine_core import bf16_matmuls_on_cpu, engine_dtype, resolve_quantization
from tritium.engine.layers import quant_kernel
from tritium.engine.layers.quant_kernel import quantize_weight_int8, quantize_weight_q4
from tritium.engine.loader import load_checkpoint
assert not quant_kernel.is_available()
ckpt = load_checkpoint("smollm2", dtype=torch.float32, progress=False)
assert resolve_quantization(EngineArgs(model="smollm2"), ckpt) is None
try:
    resolve_quantization(EngineArgs(model="smollm2", quantization="q4"), ckpt)
except quant_kernel.KernelUnavailable as exc:
    print("refused:", exc)
from tritium.engine import LLM, SamplingParams
from tritium.engine.layers import cpu_ops
assert not cpu_ops.enabled(torch.zeros(1))  # the torch expressions run instead
out = LLM("smollm2").generate(["The capital of France is"], SamplingParams(temperature=0, max_tokens=8))
print("generated:", len(out[0].outputs[0].token_ids))
"""
    env = dict(os.environ, CC="/bin/false")  # the build key includes the compiler
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "refused: building Tritium's CPU kernels failed" in proc.stdout
    assert "generated: 8" in proc.stdout


def test_a_quantized_model_computes_in_fp32_on_a_cpu_with_native_bf16(monkeypatch) -> None:
    """dtype 'auto' means bf16 on a CPU with native bf16, but a quantized model runs in
    fp32 there: its weights reach the kernels unrounded and the kernels compute in fp32."""
    from tritium.engine import config

    monkeypatch.setattr(config, "cpu_has_bf16", lambda: True)
    assert EngineArgs(model="smollm2", device="cpu").resolved_dtype() == torch.bfloat16
    converted = []
    real_convert = gguf.convert
    monkeypatch.setattr(
        gguf, "convert", lambda p, d, *a: converted.append(d) or real_convert(p, d, *a)
    )
    llm = LLM("smollm2", device="cpu")
    runner = llm.engine_core.runner
    assert runner.dtype == torch.float32 and runner.quantization == "q4 x120, q8 x1"
    assert runner.kv_dtype == torch.float16  # llama.cpp's default cache type
    # Streamed from the file in fp32 into q4/q8: never through bf16, nor through a copy.
    assert converted == []
    # Asked for, bf16 is what it gets; and an unquantized model keeps 'auto' = bf16.
    assert (
        engine_dtype(EngineArgs(model="smollm2", device="cpu", dtype="bfloat16")) == torch.bfloat16
    )
    args = EngineArgs(model="smollm2", device="cpu", quantization="none")
    assert engine_dtype(args) == torch.bfloat16
    out = llm.generate(["The capital of France is"], SamplingParams(temperature=0, max_tokens=4))
    assert len(out[0].outputs[0].token_ids) == 4


@pytest.fixture(scope="module")
def half_dirs(tiny_model_dirs, tmp_path_factory) -> dict[str, Path]:
    """The tiny llama (tied embeddings) saved as bf16 and as fp16 safetensors."""
    from transformers import AutoModelForCausalLM

    dirs = {}
    for method, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        src = tiny_model_dirs["llama"]
        out = tmp_path_factory.mktemp(f"tiny-llama-{method}")
        AutoModelForCausalLM.from_pretrained(src, dtype=dtype).save_pretrained(out)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(src / name, out / name)
        dirs[method] = out
    return dirs


@pytest.mark.parametrize(("method", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_a_16_bit_checkpoint_keeps_its_weights_under_fp32_math(half_dirs, method, dtype) -> None:
    """fp32 compute (dtype 'auto' on a CPU without native bf16) keeps a bf16 or fp16
    checkpoint's linear weights as stored: same values, half the bytes of fp32, the decode
    steps in the one-call C layer, and the tokens of the same weights held in fp32."""
    from safetensors.torch import load_file

    from tritium.engine.models.llama import LlamaModel

    folder = half_dirs[method]
    llm = LLM(str(folder), dtype="float32")
    runner = llm.engine_core.runner
    assert runner.dtype == torch.float32
    assert runner.quantization == f"{method} x{4 * 2 + 1}"  # 2 layers' 4 linears + lm_head
    stored = load_file(folder / "model.safetensors")
    layers = dict(runner.model.named_modules())
    qkv = layers["model.layers.1.self_attn.qkv_proj"]
    q = stored["model.layers.1.self_attn.q_proj.weight"]
    assert q.dtype == dtype and qkv.qweight.dtype == dtype
    assert torch.equal(qkv.qweight[: q.shape[0]], q)
    down = layers["model.layers.0.mlp.down_proj"]
    assert torch.equal(down.qweight, stored["model.layers.0.mlp.down_proj.weight"])
    assert torch.equal(layers["lm_head"].qweight, stored["model.embed_tokens.weight"])
    # The input embedding keeps the table in 16 bits too, and the tied lm_head reads that
    # very table: one copy of the vocabulary matrix, at half fp32's bytes.
    table = layers["model.embed_tokens"].weight
    assert table.dtype == dtype and torch.equal(table, stored["model.embed_tokens.weight"])
    assert layers["lm_head"].qweight.data_ptr() == table.data_ptr()

    prompts = [{"prompt_token_ids": list(range(100, 100 + n))} for n in (9, 4)]
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    ours = [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    assert_pool_free(llm)
    model = runner.model.model
    assert isinstance(model, LlamaModel) and model._decode_layers  # the one-call layer ran
    plain = LLM(str(folder), dtype="float32", quantization="none")
    assert plain.engine_core.runner.quantization is None
    assert [o.outputs[0].token_ids for o in plain.generate(prompts, params, use_tqdm=False)] == ours


@pytest.mark.parametrize("method", ["q4", "int8"])
def test_q4_or_int8_on_a_16_bit_checkpoint_keeps_its_table_16_bit(
    half_dirs, monkeypatch, method
) -> None:
    """Asked for q4/int8 everywhere, a bf16 checkpoint's embedding table stays bf16 (the
    tables take no q4/int8) rather than widening to fp32: the same values, the same tokens,
    half the bytes; the tied lm_head takes its own q4/int8 copy."""
    from safetensors.torch import load_file

    from tritium.engine import engine_core

    folder = half_dirs["bf16"]
    llm = LLM(str(folder), dtype="float32", quantization=method)
    model = llm.engine_core.runner.model
    table = model.model.embed_tokens.weight
    stored = load_file(folder / "model.safetensors")["model.embed_tokens.weight"]
    assert table.dtype == torch.bfloat16 and torch.equal(table, stored)
    assert model.lm_head.quant == method
    prompts = [{"prompt_token_ids": list(range(100, 100 + n))} for n in (9, 4)]
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    ours = [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    monkeypatch.setattr(engine_core, "resolve_table_formats", lambda ckpt, q: q)
    wide = LLM(str(folder), dtype="float32", quantization=method)
    assert wide.engine_core.runner.model.model.embed_tokens.weight.dtype == torch.float32
    assert [o.outputs[0].token_ids for o in wide.generate(prompts, params, use_tqdm=False)] == ours


def test_which_cpu_models_keep_16_bit_weights_and_which_run_bf16_matmuls(
    half_dirs, monkeypatch
) -> None:
    from tritium.engine import config

    folder = str(half_dirs["bf16"])
    ckpt = load_checkpoint(folder, dtype=torch.float32, progress=False)
    formats = resolve_quantization(EngineArgs(model=folder, device="cpu"), ckpt)
    assert isinstance(formats, dict) and set(formats.values()) == {"bf16"}
    assert "model.layers.0.mlp.gate_proj.weight" in formats
    none = EngineArgs(model=folder, device="cpu", quantization="none")
    assert resolve_quantization(none, ckpt) is None
    assert not bf16_matmuls_on_cpu(EngineArgs(model=folder, device="cpu", dtype="float32"))
    # A CPU with native bf16 computes in bf16 on the kernels: fp32 activations around bf16
    # matmuls (any checkpoint: an fp16 one too). Not a quantized GGUF (q4 and q8 compute
    # in fp32), nor an explicit format, nor where the kernels do not build (torch's bf16).
    monkeypatch.setattr(config, "cpu_has_bf16", lambda: True)
    args = EngineArgs(model=folder, device="cpu")
    assert bf16_matmuls_on_cpu(args) and engine_dtype(args) == torch.float32
    assert bf16_matmuls_on_cpu(EngineArgs(model=str(half_dirs["fp16"]), device="cpu"))
    assert not bf16_matmuls_on_cpu(EngineArgs(model="smollm2", device="cpu", dtype="bfloat16"))
    assert not bf16_matmuls_on_cpu(dataclasses.replace(args, quantization="none"))
    assert not bf16_matmuls_on_cpu(dataclasses.replace(args, quantization="bf16"))
    monkeypatch.setattr(quant_kernel, "is_available", lambda: False)
    assert not bf16_matmuls_on_cpu(args) and engine_dtype(args) == torch.bfloat16
    bf16 = load_checkpoint(folder, dtype=torch.bfloat16, progress=False)
    assert resolve_quantization(args, bf16) is None


def test_bf16_on_cpu_runs_bf16_matmuls_around_fp32_activations(smollm2_dir) -> None:
    """dtype bfloat16 on CPU: bf16 weights, each matmul's inputs rounded to bf16, a bf16 KV
    cache, and fp32 everywhere else (the residual stream, norms, softmax), decode steps in
    the one-call C layer. Against transformers in fp32 on the same weights with each
    linear layer's inputs rounded to bf16 (its attention reads unrounded keys and values),
    our greedy token is, at every step, at or within a small margin of its top; and our
    logprobs are nearer fp32's than transformers' own bf16 ones are."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from tritium.engine.models.llama import LlamaModel

    llm = LLM(str(smollm2_dir), dtype="bfloat16")
    runner = llm.engine_core.runner
    assert runner.dtype == torch.float32 and runner.kv_dtype == torch.bfloat16
    assert runner.quantization == f"bf16 x{4 * 30 + 1}"
    linears = [m for m in runner.model.modules() if isinstance(m, Linear)]
    assert linears and all(m.quant == "bf16" and m.bf16_inputs for m in linears)
    table = runner.model.model.embed_tokens.weight
    stored = load_file(smollm2_dir / "model.safetensors")["model.embed_tokens.weight"]
    assert table.dtype == torch.bfloat16 and torch.equal(table, stored)
    tok = llm.get_tokenizer()
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True, logprobs=1)
    outs = llm.generate(PROMPTS, params, use_tqdm=False)
    assert_pool_free(llm)
    model = runner.model.model
    assert isinstance(model, LlamaModel) and model._decode_layers  # the one-call layer ran

    def teacher_forced(dtype: torch.dtype, round_inputs: bool) -> list[torch.Tensor]:
        """transformers' log-softmax at each of our steps, fed our tokens."""
        hf = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=dtype).eval()
        if round_inputs:
            for module in hf.modules():
                if isinstance(module, torch.nn.Linear):
                    module.register_forward_pre_hook(lambda _, args: (args[0].bfloat16().float(),))
        result = []
        for prompt, out in zip(PROMPTS, outs, strict=True):
            ids, ours_ids = tok.encode(prompt), list(out.outputs[0].token_ids)
            with torch.inference_mode():
                logits = hf(input_ids=torch.tensor([ids + ours_ids])).logits[0, len(ids) - 1 : -1]
            result.append(logits.float().log_softmax(dim=-1))
        return result

    rounded = teacher_forced(torch.float32, round_inputs=True)
    for out, ref in zip(outs, rounded, strict=True):
        ours_ids = list(out.outputs[0].token_ids)
        gaps = (ref.max(dim=-1).values - ref[torch.arange(len(ours_ids)), ours_ids]).tolist()
        assert max(gaps) < 1.0, gaps
        assert sum(g == 0 for g in gaps) >= 0.9 * len(gaps), gaps
    fp32 = teacher_forced(torch.float32, round_inputs=False)
    hf_bf16 = teacher_forced(torch.bfloat16, round_inputs=False)
    for out, exact, theirs in zip(outs, fp32, hf_bf16, strict=True):
        ours_ids = torch.tensor(out.outputs[0].token_ids)
        steps = torch.arange(len(ours_ids))
        ours_lp = torch.tensor([next(iter(s.values())).logprob for s in out.outputs[0].logprobs])
        our_err = (ours_lp - exact[steps, ours_ids]).abs().mean()
        their_err = (theirs[steps, ours_ids] - exact[steps, ours_ids]).abs().mean()
        print(f"mean |logprob - fp32|: ours {our_err:.4f}, transformers bf16 {their_err:.4f}")
        assert our_err < their_err


@pytest.mark.parametrize("method", ["bf16", "fp16"])
def test_a_16_bit_gguf_keeps_its_weights_under_fp32_math(tmp_path, monkeypatch, method) -> None:
    from test_loader_gguf import Q, tiny_config, tiny_model, write_gguf

    monkeypatch.setenv("TRITIUM_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / f"tiny-{method}.gguf"
    model = tiny_model(tiny_config("llama"))
    write_gguf(path, "llama", model, Q.BF16 if method == "bf16" else Q.F16)
    ckpt = load_checkpoint(str(path), dtype=torch.float32, progress=False)
    formats = gguf.half_weight_formats(path)
    assert formats["model.layers.0.self_attn.q_proj.weight"] == method
    assert formats["lm_head.weight"] == method  # untied: llama.cpp's "output"
    assert resolve_quantization(EngineArgs(model=str(path), device="cpu"), ckpt) == formats
    llm = LLM(str(path), dtype="float32")
    assert llm.engine_core.runner.quantization == f"{method} x{4 * 2 + 1}"
    out = llm.generate(["hello world"], SamplingParams(temperature=0, max_tokens=5))
    assert len(out[0].outputs[0].token_ids) == 5
    assert_pool_free(llm)


def test_a_q4_0_gguf_runs_on_its_own_codes(tmp_path, monkeypatch) -> None:
    """The engine's q4 weights of a Q4_0 file are the file's blocks, up to fp16 rounding of
    each block's minimum: the packed q/k/v and gate/up included."""
    from test_loader_gguf import Q, tiny_config, tiny_model, write_gguf

    monkeypatch.setenv("TRITIUM_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "tiny-q4_0.gguf"
    write_gguf(path, "llama", tiny_model(tiny_config("llama")), Q.Q4_0)
    llm = LLM(str(path), dtype="float32")
    layers = dict(llm.engine_core.runner.model.named_modules())
    file_weights = dict(load_checkpoint(str(path), dtype=torch.float32, progress=False).weights())
    packed = {
        "self_attn.qkv_proj": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
        "mlp.gate_up_proj": ["mlp.gate_proj", "mlp.up_proj"],
        "mlp.down_proj": ["mlp.down_proj"],
    }
    for layer, parts in packed.items():
        linear = layers[f"model.layers.1.{layer}"]
        assert linear.quant == "q4"
        expected = torch.cat([file_weights[f"model.layers.1.{p}.weight"] for p in parts])
        err = (linear.dequantized_weight() - expected).abs().max()
        assert err <= expected.abs().max() * 2**-10, (layer, float(err))


def test_each_layer_takes_its_format_as_soon_as_its_weights_are_in(tiny_model_dirs) -> None:
    """Loading never holds the whole fp32 model: a Linear is compact before the next
    checkpoint tensor after its last source arrives, and its fp32 weight is gone."""
    from tritium.engine.layers.linear import quantize_as_loaded, weight_formats
    from tritium.engine.models import build_model

    ckpt = load_checkpoint(str(tiny_model_dirs["qwen2"]), dtype=torch.float32, progress=False)
    model = build_model(ckpt.hf_config, 64)
    plan = weight_formats(model, "int8")
    assert len(plan) == 2 * 4 + 1
    modules = dict(model.named_modules())
    arrived: list[str] = []

    def watched():
        for name, tensor in ckpt.weights():
            compact = {n for n in plan if modules[n].quant is not None}
            complete = {n for n in plan if set(model.checkpoint_names(n)) <= set(arrived)}
            assert compact == complete, (name, complete - compact)
            arrived.append(name)
            yield name, tensor

    model.load_weights(quantize_as_loaded(model, plan, watched()))
    assert all(modules[n].quant == "int8" and modules[n].weight is None for n in plan)


def test_large_weights_quantize_by_blocks_of_rows_to_the_same_result(monkeypatch) -> None:
    w = torch.randn(1000, 96)
    whole = quantize_weight_int8(w), quantize_weight_q4(w)
    monkeypatch.setattr(quant_kernel, "_QUANTIZE_CHUNK", 96 * 64 + 5)  # 64 rows, then a rest
    for (a, b), (c, d) in zip(whole, (quantize_weight_int8(w), quantize_weight_q4(w)), strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)
