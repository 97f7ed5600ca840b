"""The CPU kernels' portable C build (no AVX2: ARM laptops, older x86), built here by
leaving out the vector flags, against the same references as the AVX2 build."""

from __future__ import annotations

import ctypes
import platform

import pytest
import torch
from engine_testing import BF16_MATMUL, compact_linear, kernel_inputs

from tritium.engine.layers import native
from tritium.engine.layers.linear import QUANT_METHODS

pytestmark = pytest.mark.skipif(
    not native.is_available(), reason="the CPU kernels need a C compiler"
)


@pytest.fixture(scope="module")
def portable() -> ctypes.CDLL:
    """The library built without any -m vector flags (a separate build key)."""
    flags = [f for f in native._compile_flags()[-1] if not f.startswith("-m")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(native, "_compile_flags", lambda: [flags])
        return native._build()


def test_a_new_build_removes_builds_unused_for_a_day(tmp_path, monkeypatch) -> None:
    """Each change of the sources or flags leaves a build in the cache: a new build deletes
    those no process has loaded for a day, and keeps recent ones (another version in use)."""
    import os
    import time

    monkeypatch.setenv("TRITIUM_CACHE_DIR", str(tmp_path))
    folder = tmp_path / "kernels"
    folder.mkdir()
    stale, recent = folder / "tritium_cpu-0000000000000000.so", folder / "tritium_cpu-1111111111111111.so"  # fmt: skip
    for path in (stale, recent):
        path.write_bytes(b"an older build")
    day_ago = time.time() - 25 * 3600
    os.utime(stale, (day_ago, day_ago))
    native._build()
    builds = sorted(p.name for p in folder.glob("tritium_cpu-*.so"))
    assert stale.name not in builds and recent.name in builds and len(builds) == 2
    # A load marks its build as used: loading an old one keeps it for another day.
    (built,) = set(folder.glob("tritium_cpu-*.so")) - {recent}
    os.utime(built, (day_ago, day_ago))
    native._build()
    assert time.time() - built.stat().st_mtime < 3600


def test_the_amx_flag_set_builds_where_the_cpu_has_amx(tmp_path, monkeypatch) -> None:
    """A compile error in the AMX kernels would not fail the library: the next flag set
    builds, and every AMX test skips. Where the CPU and the compiler have AMX, the first
    flag set must build."""
    import subprocess

    candidates = native._compile_flags()
    if len(candidates) < 2:
        pytest.skip("this CPU has no AMX")
    empty = tmp_path / "empty.c"
    empty.write_text("int tritium_probe;\n")
    probe = subprocess.run(["cc", *candidates[0], str(empty), "-o", str(tmp_path / "p.so")])
    if probe.returncode != 0:
        pytest.skip("this compiler has no AMX")
    monkeypatch.setenv("TRITIUM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_compile_flags", lambda: candidates[:1])
    native._build()  # KernelUnavailable, with the compiler's message, when it fails


def test_the_vector_build_is_what_this_machine_runs() -> None:
    """Guards the comparison: on an AVX2 machine the default build is the vector one."""
    if platform.machine() in ("x86_64", "AMD64") and {"avx2", "fma", "f16c"} <= native._cpu_flags():
        assert "-mavx2" in native._compile_flags()[0]


@pytest.fixture(scope="module")
def without_amx() -> ctypes.CDLL | None:
    """The build an AVX2 machine without AMX gets (the fallback flag set); None where this
    machine has no AMX flag set to fall back from."""
    candidates = native._compile_flags()
    if len(candidates) < 2:
        return None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(native, "_compile_flags", lambda: candidates[1:])
        return native._build()


@pytest.mark.parametrize("method", [*sorted(QUANT_METHODS), BF16_MATMUL])
@pytest.mark.parametrize("rows", [1, 5, 80])
def test_the_build_without_amx_matches_the_reference(
    without_amx, monkeypatch, method, rows
) -> None:
    """On an AMX machine, the AVX2 build it would fall back to still builds and computes
    the same (several rows and prompt-sized inputs included); elsewhere the default build
    is that build, and tests/engine/test_quant.py covers it."""
    if without_amx is None:
        pytest.skip("no AMX build here to fall back from")
    assert not without_amx.tritium_amx_enabled()
    _check_linear_on(without_amx, monkeypatch, method, rows)


@pytest.mark.parametrize("method", [*sorted(QUANT_METHODS), BF16_MATMUL])
@pytest.mark.parametrize("rows", [1, 5])
def test_portable_linears_match_their_reference(portable, monkeypatch, method, rows) -> None:
    _check_linear_on(portable, monkeypatch, method, rows)


def _check_linear_on(lib: ctypes.CDLL, monkeypatch, method: str, rows: int) -> None:
    """A `method` layer run by `lib` against fp32 math on its weights (and its inputs at 8
    bits for q4 and q8, in bf16 for a bf16 matmul), and against the default build."""
    torch.manual_seed(rows)
    layer = compact_linear(160, 37, method)
    x = torch.randn(rows, 160)
    seen = kernel_inputs(layer, x)
    expected = seen @ layer.dequantized_weight().T + layer.bias
    default = layer(x)
    monkeypatch.setattr(native, "library", lambda: lib)
    out = layer(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, default, rtol=1e-5, atol=1e-5)


def test_portable_engine_gives_the_vector_builds_tokens(
    portable, tiny_model_dirs, monkeypatch
) -> None:
    """The whole CPU step on the portable build (fused ops, the one-call decode layer,
    bf16 weights): the same greedy tokens and near-equal logprobs."""
    from engine_testing import assert_pool_free, tokens_and_logprobs

    from tritium.engine import LLM, SamplingParams

    prompts = [{"prompt_token_ids": list(range(100, 100 + n))} for n in (11, 3)]
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=1)

    def run() -> tuple[list[list[int]], list[float]]:
        llm = LLM(str(tiny_model_dirs["qwen2"]), dtype="float32", quantization="bf16")
        outs = llm.generate(prompts, params, use_tqdm=False)
        assert_pool_free(llm)
        return tokens_and_logprobs(outs)

    vector_tokens, vector_logprobs = run()
    monkeypatch.setattr(native, "library", lambda: portable)
    tokens, logprobs = run()
    assert tokens == vector_tokens
    torch.testing.assert_close(
        torch.tensor(logprobs), torch.tensor(vector_logprobs), rtol=0, atol=1e-4
    )


def test_portable_fp16_kv_cache_rounds_and_reads_as_torch(portable, monkeypatch) -> None:
    """The portable build's scalar fp16 conversions (no F16C): a store rounds as torch does
    (to nearest even; subnormals, overflow, infinities and NaN), and attention reads the
    rows back as the values they hold."""
    from tritium.engine.layers import cpu_ops

    monkeypatch.setattr(native, "library", lambda: portable)
    edge = torch.tensor(
        [1e-8, 3e-8, 6e-8, -2.9802322e-08, 5.96e-8, 6.1e-5, 65504.0, 65519.0, 65520.0, 1e6,
         -float("inf"), float("nan"), 1.0 + 2**-11, 1.0 + 3 * 2**-11, -0.0, 2.0**-24]
    )  # fmt: skip
    torch.manual_seed(0)
    k = torch.randn(3, 2, 16)
    k[0, 0] = edge
    v = torch.randn(3, 2, 16)
    k_pool = torch.zeros(8, 2, 16, dtype=torch.float16)
    v_pool = torch.zeros(8, 2, 16, dtype=torch.float16)
    slots = torch.tensor([5, 0, 2])
    cpu_ops.store_kv(k, v, k_pool, v_pool, slots)
    expected = k.half()
    assert torch.equal(k_pool[slots].view(torch.int16), expected.view(torch.int16))
    assert torch.equal(v_pool[slots], v.half())

    b, kvh, heads, d, n = 2, 2, 4, 40, 30
    buf = torch.randn(2, b, n, kvh, d).half()
    k_all, v_all = buf[0].transpose(1, 2), buf[1].transpose(1, 2)
    q = torch.randn(b, heads, d)
    got = cpu_ops.decode_attention(q, k_all, v_all, 0, n, None, d**-0.5)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.unsqueeze(2), k_all.float(), v_all.float(), scale=d**-0.5, enable_gqa=True
    ).reshape(b, -1)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
