"""Weight-only quantization on CPU: the C kernels (int8, q4), the quantized Linear, and the
engine choosing a format from the checkpoint."""

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
from tritium.engine.layers import quant_kernel
from tritium.engine.layers.linear import QUANT_KERNEL_MAX_ROWS, Linear, quantize_linears
from tritium.engine.loader import gguf, load_checkpoint

pytestmark = pytest.mark.skipif(
    not quant_kernel.is_available(), reason="the quantized kernels need a C compiler"
)

FORMATS = ["int8", "q4"]


@pytest.mark.parametrize("method", FORMATS)
@pytest.mark.parametrize("rows", [1, 2, 3, 7, QUANT_KERNEL_MAX_ROWS, QUANT_KERNEL_MAX_ROWS + 1])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_equals_fp32_math_on_the_dequantized_weight(
    method: str, rows: int, bias: bool
) -> None:
    torch.manual_seed(rows)
    # 37 rows: a partial tile of the kernels' 4; K = 160: five q4 blocks, K % 16 != 0.
    layer = Linear(160, 37, bias=bias)
    layer.quantize(method)
    assert layer.weight is None and layer.quant == method
    x = torch.randn(rows, 160)
    expected = x @ layer.dequantized_weight().T + (layer.bias if bias else 0)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", FORMATS)
def test_linear_keeps_input_dtype_and_leading_dims(method: str) -> None:
    layer = Linear(64, 24, bias=False)
    layer.quantize(method)
    x = torch.randn(2, 3, 64, dtype=torch.bfloat16)
    out = layer(x)
    assert out.shape == (2, 3, 24) and out.dtype == torch.bfloat16
    expected = x.float() @ layer.dequantized_weight().T
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)


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


def test_quantize_rejects_what_the_kernels_cannot_run() -> None:
    with pytest.raises(ValueError, match="in_features % 8"):
        Linear(12, 4).quantize("int8")
    with pytest.raises(ValueError, match="in_features % 32"):
        Linear(40, 4).quantize("q4")
    with pytest.raises(ValueError, match="unknown weight format"):
        Linear(32, 4).quantize("q3")


def test_layers_take_their_sources_format_and_fall_back_by_width() -> None:
    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c, self.d = (
                Linear(64, 8), Linear(64, 8), Linear(40, 8), Linear(64, 8)
            )  # fmt: skip

    model = Tiny()
    counts = quantize_linears(
        model, {"a.weight": "q4", "b.weight": "int8", "c.weight": "q4"}
    )  # d has a float source: it stays float; c is 40 wide: q4 cannot tile it, int8 can
    assert (model.a.quant, model.b.quant, model.c.quant, model.d.quant) == (
        "q4", "int8", "int8", None
    )  # fmt: skip
    assert counts == {"q4": 1, "int8": 2}


@pytest.mark.parametrize("method", FORMATS)
def test_quantized_engine_matches_transformers_on_the_same_weights(smollm2_dir, method) -> None:
    """Our quantized engine is exact: transformers given the dequantized weights (fp32)
    produces the same greedy tokens."""
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
    for prompt, out in zip(PROMPTS, outs, strict=True):
        assert out.outputs[0].token_ids == hf_greedy(model, tok.encode(prompt), NEW_TOKENS)


def test_a_quantized_gguf_runs_quantized_on_cpu_unless_told_otherwise(smollm2_dir) -> None:
    gguf_ckpt = load_checkpoint("smollm2", dtype=torch.float32, progress=False)
    assert gguf_ckpt.gguf_file is not None  # the packaged Q4_1 file
    formats = resolve_quantization(EngineArgs(model="smollm2"), gguf_ckpt)
    names = gguf.quantized_weight_names(gguf_ckpt.gguf_file)
    assert "model.layers.0.self_attn.q_proj.weight" in names
    assert formats == dict.fromkeys(names, "int8")
    assert resolve_quantization(EngineArgs(model="smollm2", quantization="none"), gguf_ckpt) is None
    folder_ckpt = load_checkpoint(str(smollm2_dir), dtype=torch.float32, progress=False)
    assert resolve_quantization(EngineArgs(model=str(smollm2_dir)), folder_ckpt) is None
    for method in FORMATS:
        args = EngineArgs(model=str(smollm2_dir), quantization=method)
        assert resolve_quantization(args, folder_ckpt) == method
        cuda = EngineArgs(model="smollm2", quantization=method, device="cuda")
        with pytest.raises(ValueError, match="CPU weight-only"):
            resolve_quantization(cuda, gguf_ckpt)


def test_unknown_quantization_is_named() -> None:
    with pytest.raises(ValueError, match="quantization='awq' is not supported"):
        EngineArgs(model="m", quantization="awq")


def test_without_a_compiler_the_engine_dequantizes_and_q4_says_why() -> None:
    script = """
import torch
from tritium.engine import EngineArgs
from tritium.engine.engine_core import resolve_quantization
from tritium.engine.layers import quant_kernel
from tritium.engine.loader import load_checkpoint
assert not quant_kernel.is_available()
ckpt = load_checkpoint("smollm2", dtype=torch.float32, progress=False)
assert resolve_quantization(EngineArgs(model="smollm2"), ckpt) is None
try:
    resolve_quantization(EngineArgs(model="smollm2", quantization="q4"), ckpt)
except quant_kernel.KernelUnavailable as exc:
    print("refused:", exc)
"""
    env = dict(os.environ, CC="/bin/false")  # the build key includes the compiler
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "refused: building the quantized CPU kernels failed" in proc.stdout
