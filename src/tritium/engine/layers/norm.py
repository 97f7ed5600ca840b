"""RMSNorm, with the residual add fused in (one call per sub-layer)."""

from __future__ import annotations

import torch
from torch import nn

from tritium.engine.layers import cpu_ops, fused_ops_triton


class RMSNorm(nn.Module):
    """y = x / rms(x) * weight, computed in float32 as Hugging Face does (exact match).

    `triton_ops` (set by the CUDA executor, `fused_ops_triton.use_triton_ops`) runs the
    residual add and the norm as one Triton kernel."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.triton_ops = False

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if dtype == torch.float32 == self.weight.dtype:
            # One fused op, bit-identical to the float32 expression below (checked in
            # tests/engine/test_norm.py); decode steps are bound by per-op overhead.
            return torch.rms_norm(x, self.weight.shape, self.weight, self.eps)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(dtype)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (normed, new residual); with `residual`, normalizes x + residual."""
        if (
            self.triton_ops
            and x.dim() == 2
            and x.stride(1) == 1
            and self.weight.dtype == x.dtype
            and (residual is None or (residual.stride(1) == 1 and residual.dtype == x.dtype))
        ):
            return fused_ops_triton.add_rms_norm(x, residual, self.weight, self.eps)
        if (
            x.dim() == 2
            and cpu_ops.enabled(x)
            and x.is_contiguous()
            and self.weight.dtype == torch.float32
            and (residual is None or (residual.is_contiguous() and residual.dtype == x.dtype))
        ):
            return cpu_ops.add_rms_norm(x, residual, self.weight, self.eps)
        if residual is not None:
            x = x + residual
        return self._norm(x), x
