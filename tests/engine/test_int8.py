"""Weight-only int8 on CPU: the C kernel, the quantized Linear, and the engine choosing it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from engine_testing import assert_pool_free
from test_models import NEW_TOKENS, PROMPTS, hf_greedy

from tritium.engine import LLM, EngineArgs, SamplingParams
from tritium.engine.engine_core import resolve_quantization
from tritium.engine.layers import int8_kernel
from tritium.engine.layers.linear import INT8_KERNEL_MAX_ROWS, Linear
from tritium.engine.loader import load_checkpoint

pytestmark = pytest.mark.skipif(
    not int8_kernel.is_available(), reason="the int8 kernel needs a C compiler"
)


def dequantized(layer: Linear) -> torch.Tensor:
    assert layer.qweight is not None and layer.wscale is not None
    return layer.qweight.float() * layer.wscale[:, None]


@pytest.mark.parametrize("rows", [1, 2, 3, 7, INT8_KERNEL_MAX_ROWS, INT8_KERNEL_MAX_ROWS + 1])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_equals_fp32_math_on_the_dequantized_weight(rows: int, bias: bool) -> None:
    torch.manual_seed(rows)
    layer = Linear(104, 37, bias=bias)  # 37 rows: a partial tile of the 4; K % 16 = 8
    layer.quantize_int8()
    assert layer.weight is None and layer.qweight.dtype == torch.int8
    x = torch.randn(rows, 104)
    expected = x @ dequantized(layer).T + (layer.bias if bias else 0)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_linear_keeps_input_dtype_and_leading_dims() -> None:
    layer = Linear(64, 24, bias=False)
    layer.quantize_int8()
    x = torch.randn(2, 3, 64, dtype=torch.bfloat16)
    out = layer(x)
    assert out.shape == (2, 3, 24) and out.dtype == torch.bfloat16
    expected = x.float() @ dequantized(layer).T
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)


def test_quantized_weight_is_within_half_a_step() -> None:
    w = torch.randn(50, 128) * torch.logspace(-3, 1, 50)[:, None]  # rows of very different size
    q, scale = int8_kernel.quantize_weight(w)
    assert q.abs().max() <= 127
    err = (q.float() * scale[:, None] - w).abs()
    assert bool((err <= scale[:, None] / 2 + 1e-7).all())


def test_quantize_rejects_a_width_the_kernel_cannot_run() -> None:
    with pytest.raises(ValueError, match="in_features % 8"):
        Linear(12, 4).quantize_int8()


def test_int8_engine_matches_transformers_on_the_same_int8_weights(smollm2_dir) -> None:
    """Our int8 engine is exact: transformers given the dequantized int8 weights (fp32)
    produces the same greedy tokens."""
    from transformers import AutoModelForCausalLM

    llm = LLM(str(smollm2_dir), dtype="float32", quantization="int8")
    assert llm.engine_core.runner.quantization == "int8"
    ours = llm.engine_core.runner.model
    tok = llm.get_tokenizer()
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
    outs = llm.generate(PROMPTS, params, use_tqdm=False)
    assert_pool_free(llm)

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    layers = dict(ours.named_modules())
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        ours_name, rows = name, slice(None)
        for proj, packed in (
            ("q_proj", "qkv_proj"),
            ("k_proj", "qkv_proj"),
            ("v_proj", "qkv_proj"),
        ):
            if name.endswith(proj):
                ours_name = name.replace(proj, packed)
        for proj in ("gate_proj", "up_proj"):
            if name.endswith(proj):
                ours_name = name.replace(proj, "gate_up_proj")
        w = dequantized(layers[ours_name])
        attn = layers[ours_name.rsplit(".", 1)[0]]
        if name.endswith("q_proj"):
            rows = slice(0, attn.q_size)
        elif name.endswith("k_proj"):
            rows = slice(attn.q_size, attn.q_size + attn.kv_size)
        elif name.endswith("v_proj"):
            rows = slice(attn.q_size + attn.kv_size, None)
        elif name.endswith("gate_proj"):
            rows = slice(0, w.shape[0] // 2)
        elif name.endswith("up_proj"):
            rows = slice(w.shape[0] // 2, None)
        # A fresh Parameter also unties lm_head from the (still fp32) embedding.
        module.weight = torch.nn.Parameter(w[rows].clone())
    for prompt, out in zip(PROMPTS, outs, strict=True):
        assert out.outputs[0].token_ids == hf_greedy(model, tok.encode(prompt), NEW_TOKENS)


def test_a_quantized_gguf_runs_int8_on_cpu_unless_told_otherwise(smollm2_dir) -> None:
    gguf_ckpt = load_checkpoint("smollm2", dtype=torch.float32, progress=False)
    assert gguf_ckpt.gguf_file is not None  # the packaged Q4_1 file
    assert resolve_quantization(EngineArgs(model="smollm2"), gguf_ckpt) == "int8"
    assert resolve_quantization(EngineArgs(model="smollm2", quantization="none"), gguf_ckpt) is None
    folder_ckpt = load_checkpoint(str(smollm2_dir), dtype=torch.float32, progress=False)
    assert resolve_quantization(EngineArgs(model=str(smollm2_dir)), folder_ckpt) is None
    args = EngineArgs(model=str(smollm2_dir), quantization="int8")
    assert resolve_quantization(args, folder_ckpt) == "int8"
    cuda = EngineArgs(model="smollm2", quantization="int8", device="cuda")
    with pytest.raises(ValueError, match="CPU weight-only"):
        resolve_quantization(cuda, gguf_ckpt)


def test_unknown_quantization_is_named() -> None:
    with pytest.raises(ValueError, match="quantization='awq' is not supported"):
        EngineArgs(model="m", quantization="awq")


def test_without_a_compiler_the_engine_dequantizes_and_int8_says_why() -> None:
    script = """
import torch
from tritium.engine import EngineArgs
from tritium.engine.engine_core import resolve_quantization
from tritium.engine.layers import int8_kernel
from tritium.engine.loader import load_checkpoint
assert not int8_kernel.is_available()
ckpt = load_checkpoint("smollm2", dtype=torch.float32, progress=False)
assert resolve_quantization(EngineArgs(model="smollm2"), ckpt) is None
try:
    resolve_quantization(EngineArgs(model="smollm2", quantization="int8"), ckpt)
except int8_kernel.Int8KernelUnavailable as exc:
    print("refused:", exc)
"""
    env = dict(os.environ, CC="/bin/false")  # the build key includes the compiler
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "refused: building the int8 CPU kernel failed" in proc.stdout
