"""Rotary position embedding with the scaling variants of Llama 3, Qwen and friends.

The inverse frequencies come from transformers' own ROPE_INIT_FUNCTIONS, so every
rope_type (linear, dynamic, yarn, llama3, longrope) matches the reference exactly;
"dynamic" is taken at the model's max_position_embeddings (static, as vLLM does).
"""

from __future__ import annotations

import torch
from torch import nn


def rope_parameters(config) -> dict:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return dict(params)


def inv_freq_and_scale(config, head_dim: int) -> tuple[torch.Tensor, float]:
    params = rope_parameters(config)
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        if rope_type not in ROPE_INIT_FUNCTIONS:
            raise ValueError(f"unsupported rope_type {rope_type!r}")
        inv_freq, scale = ROPE_INIT_FUNCTIONS[rope_type](config, torch.device("cpu"))
        return inv_freq.float(), float(scale)
    theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    return 1.0 / (theta**exponents), 1.0


class RotaryEmbedding(nn.Module):
    """RoPE (rotate-half / NeoX layout, as Llama checkpoints use). One per model: the
    cos/sin rows of a step's positions are looked up once and shared by every layer."""

    cos: torch.Tensor  # [max_positions, head_dim] buffers, registered in __init__
    signed_sin: torch.Tensor

    def __init__(self, config, head_dim: int, max_positions: int) -> None:
        super().__init__()
        inv_freq, scale = inv_freq_and_scale(config, head_dim)
        t = torch.arange(max_positions, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq.to(t.device))  # t is on the model device (CUDA)
        emb = torch.cat((freqs, freqs), dim=-1)
        half = head_dim // 2
        sin = emb.sin() * scale
        # rotate_half(x) * sin == roll(x, half) * signed_sin, with the sign folded into the
        # table (negation is exact, so the result is bit-identical to Hugging Face's).
        sin[:, :half] = -sin[:, :half]
        self.register_buffer("cos", emb.cos() * scale, persistent=False)
        self.register_buffer("signed_sin", sin, persistent=False)

    def forward(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, signed sin) rows for `positions`: [T, 1, D] each, for `apply_rope`."""
        cos = self.cos.index_select(0, positions).unsqueeze(1).to(dtype)
        sin = self.signed_sin.index_select(0, positions).unsqueeze(1).to(dtype)
        return cos, sin


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """x: [T, heads, D] (q, k, or both side by side) -> x * cos + rotate_half(x) * sin."""
    cos, sin = rope
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin
