"""The AMX matmuls (csrc/amx_linear.c) against their references and against the AVX2
kernels they replace for several rows. They run only on CPUs with AMX (Sapphire Rapids
and later) whose kernel grants the tile state; elsewhere these tests skip, and the AVX2
and portable builds are what tests/engine/test_quant.py and test_portable_kernels.py check."""

from __future__ import annotations

import pytest
import torch
from engine_testing import (
    BF16_MATMUL,
    assert_pool_free,
    compact_linear,
    kernel_inputs,
    tokens_and_logprobs,
)

from tritium.engine.layers import native, quant_kernel
from tritium.engine.layers.linear import BLOCK_FORMATS

pytestmark = pytest.mark.skipif(
    not native.is_available() or not quant_kernel.amx_enabled(),
    reason="needs a CPU with AMX and the C kernels",
)


def test_an_amx_machine_builds_the_amx_kernels() -> None:
    assert "-mamx-int8" in native._compile_flags()[0]
    assert quant_kernel.amx_enabled()


def _avx2(fn):
    """fn() with AMX off (the AVX2 kernels), AMX back on after."""
    quant_kernel.set_amx(False)
    try:
        return fn()
    finally:
        assert quant_kernel.set_amx(True)


# Shapes with a partial tile of weight rows (37), of input rows (2, 17, 27, 33: for int8 and
# bf16, whose three input parts share tiles past the last 16 rows, a last group of rows in
# one, two or three tiles; for a bf16 matmul, one part, 1 to 3 tiles and a tile of its
# own for the last rows) and, for int8 and bf16, of K (40: not a multiple of the 32 values
# a tile row holds).
@pytest.mark.parametrize(
    ("method", "k", "n"),
    [(m, k, n) for m in ("q4", "q8", "int8", "bf16", BF16_MATMUL)
     for k, n in ((96, 37), (576, 960), (40, 19)) if m not in BLOCK_FORMATS or k % 32 == 0],
)  # fmt: skip
@pytest.mark.parametrize("rows", [2, 17, 27, 33, 49, 65, 200])
def test_amx_linear_matches_reference_and_avx2(method: str, rows: int, k: int, n: int) -> None:
    torch.manual_seed(rows * k + n)
    layer = compact_linear(k, n, method)
    x = torch.randn(rows, k) * 3
    seen = kernel_inputs(layer, x)
    # fp64 reference: the AMX result is fp32 math on the stored weights (the q4 path's
    # inputs rounded to 8 bits per block first), whatever the order of the sums.
    expected = (seen.double() @ layer.dequantized_weight().double().T + layer.bias.double()).float()
    got = layer(x)
    scale = x.abs().sum(dim=1, keepdim=True) * layer.dequantized_weight().abs().max()
    assert ((got - expected).abs() <= 1e-6 * scale + 1e-6).all()
    torch.testing.assert_close(got, _avx2(lambda: layer(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["q4", "q8", "int8", "bf16", BF16_MATMUL])
def test_amx_rows_do_not_depend_on_the_batch(method: str) -> None:
    """A row's result is the same, bit for bit, whichever rows share its call: a sequence's
    logits do not change as others join or leave the decode batch."""
    torch.manual_seed(1)
    layer = compact_linear(96, 37, method)
    x = torch.randn(70, 96)
    full = layer(x)
    for rows in (2, 5, 16, 17, 20, 27, 33, 49, 64, 65):
        assert torch.equal(layer(x[:rows]), full[:rows]), rows
        assert torch.equal(layer(x[-rows:]), full[-rows:]), rows


@pytest.mark.parametrize(
    ("method", "rows", "k"),
    [
        ("int8", 289, 576),
        ("bf16", 305, 576),
        ("bf16", 300, 40),
        (BF16_MATMUL, 1000, 576),
        (BF16_MATMUL, 900, 576),
        ("q4", 1100, 1536),
        ("q8", 1100, 1536),
    ],
)
def test_long_inputs_go_over_the_weights_in_passes(method: str, rows: int, k: int) -> None:
    """Inputs beyond about a megabyte of tiles (q4: two) are taken in passes over the
    weights: rows past the first pass, and a last group of 1 row (289) or 1 + 16 rows (305)
    split from or kept with the pass before, come out as in a call of their own. A bf16
    matmul's passes are of 56 tiles (896 rows) at K = 576: 1000 rows end in a pass of 7
    tiles (the last 4 in one chain), and 900 rows keep their 57th tile in the first pass."""
    torch.manual_seed(rows)
    layer = compact_linear(k, 37, method)
    x = torch.randn(rows, k)
    got = layer(x)
    seen = kernel_inputs(layer, x)
    expected = seen.double() @ layer.dequantized_weight().double().T + layer.bias.double()
    scale = x.abs().sum(dim=1, keepdim=True) * layer.dequantized_weight().abs().max()
    assert ((got.double() - expected).abs() <= 1e-6 * scale + 1e-6).all()
    assert torch.equal(layer(x[-20:]), got[-20:])


def test_int8_amx_keeps_fp32_inputs_exact() -> None:
    """Inputs whose low bits matter (1 + j * 2^-20: bf16 keeps only the 1): three bf16
    parts keep them, so the error is fp32 summation's, not the 6e-6 of a single part."""
    torch.manual_seed(0)
    layer = compact_linear(64, 16, "int8", bias=False)
    x = 1.0 + torch.arange(64, dtype=torch.float32).repeat(4, 1) * 2**-20
    w = layer.dequantized_weight().double()
    expected = x.double() @ w.T
    scale = x.double().abs() @ w.abs().T
    assert ((layer(x).double() - expected).abs() / scale).max() < 1e-6
    one_part = x.bfloat16().double() @ w.T  # what a single bf16 part would compute
    assert ((one_part - expected).abs() / scale).max() > 5e-6


def test_engine_tokens_with_and_without_amx(tiny_model_dirs) -> None:
    """A batch decoding together (several-row matmuls) and its prompts (many rows) give
    the same greedy tokens and near-equal logprobs on AMX as on the AVX2 kernels."""
    from tritium.engine import LLM, SamplingParams

    prompts = [{"prompt_token_ids": list(range(100, 100 + n))} for n in (90, 11, 3, 40)]
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=1)

    def run() -> tuple[list[list[int]], list[float]]:
        outs = []
        for quantization in ("q4", "q8", "int8", "bf16"):
            llm = LLM(str(tiny_model_dirs["llama"]), dtype="float32", quantization=quantization)
            outs += llm.generate(prompts, params, use_tqdm=False)
            assert_pool_free(llm)
        return tokens_and_logprobs(outs)

    amx_tokens, amx_logprobs = run()
    tokens, logprobs = _avx2(run)
    assert amx_tokens == tokens
    # q4 rounds its inputs to 8 bits: a last-bit difference upstream can move one of those
    # roundings, so its logprobs agree less tightly than fp32 sums alone would.
    torch.testing.assert_close(
        torch.tensor(amx_logprobs), torch.tensor(logprobs), rtol=0, atol=1e-3
    )
