"""RMSNorm: the torch float32 path is bit-identical to Hugging Face's expression (the C op
used on CPU is checked in test_cpu_ops.py)."""

from __future__ import annotations

import pytest
import torch

from tritium.engine.layers import cpu_ops
from tritium.engine.layers.norm import RMSNorm


@pytest.fixture(autouse=True)
def torch_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_ops, "enabled", lambda x: False)


def hf_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm.forward, as transformers writes it."""
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return weight * (x.float() * torch.rsqrt(variance + eps)).to(x.dtype)


@pytest.mark.parametrize("rows", [1, 7, 20, 300])
def test_fused_float32_norm_is_bit_identical(rows: int) -> None:
    torch.manual_seed(rows)
    norm = RMSNorm(576, eps=1e-5)
    norm.weight.data = torch.randn(576) * 2
    x = torch.randn(rows, 576) * torch.logspace(-2, 2, 576)  # outlier channels, as in LLMs
    residual = torch.randn(rows, 576)
    out, new_residual = norm(x, residual)
    assert torch.equal(new_residual, x + residual)
    assert torch.equal(out, hf_rms_norm(x + residual, norm.weight, 1e-5))


def test_bf16_norm_follows_the_float32_recipe() -> None:
    norm = RMSNorm(64).to(torch.bfloat16)
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    out, _ = norm(x)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, hf_rms_norm(x, norm.weight, norm.eps))
