"""Linear layers: nn.Linear, with oneDNN's matmul on CPU in float32 and optional weight-only
int8 on CPU.

On CPU, for the few-row inputs of decode steps (1 to a few dozen rows against a weight
read from memory), oneDNN's inner-product primitive runs about a third faster than the
BLAS call behind F.linear (measured with SmolLM2-135M's shapes on AVX2). Same parameters
and names as nn.Linear, so loading and other devices are unchanged.

`quantize_int8()` swaps the weight for int8 rows and per-row scales (a quarter of the
bytes); decode-sized inputs then run the int8 kernel (int8_kernel.py), which streams the
int8 weight once per step. Large inputs (prefill chunks) are compute-bound instead, so they
widen the weight back to fp32 and use the regular matmul.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tritium.engine.layers.int8_kernel import int8_linear, quantize_weight

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")

#: Rows above which an int8 layer widens its weight and runs the fp32 matmul (measured on
#: SmolLM2-135M shapes, 2 AVX2 cores: the int8 kernel wins up to a few dozen rows).
INT8_KERNEL_MAX_ROWS = 64


class Linear(nn.Linear):
    """nn.Linear whose CPU float32 forward goes through oneDNN, optionally int8 weight-only."""

    qweight: torch.Tensor | None
    wscale: torch.Tensor | None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("qweight", None)
        self.register_buffer("wscale", None)

    def quantize_int8(self) -> None:
        """Replace the weight by symmetric per-row int8 (CPU only). A tied weight stays
        with its other owner (the embedding) and this layer keeps its own int8 copy."""
        if self.weight.device.type != "cpu":
            raise ValueError("int8 weight-only quantization runs on CPU only")
        if self.in_features % 8:
            raise ValueError(f"int8 kernel needs in_features % 8 == 0, got {self.in_features}")
        q, scale = quantize_weight(self.weight)
        self.qweight, self.wscale = q, scale
        self.register_parameter("weight", None)
        if self.bias is not None:
            self.bias.data = self.bias.data.float().contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.qweight is not None:
            assert self.wscale is not None
            if x.numel() // self.in_features <= INT8_KERNEL_MAX_ROWS:
                return int8_linear(x, self.qweight, self.wscale, self.bias)
            w = (self.qweight.float() * self.wscale[:, None]).to(x.dtype)
            b = None if self.bias is None else self.bias.to(x.dtype)
            return self._dense(x, w, b)
        return self._dense(x, self.weight, self.bias)

    @staticmethod
    def _dense(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        if _ONEDNN and x.is_cpu and x.dtype == torch.float32 == w.dtype and x.dim() == 2:
            return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
        return F.linear(x, w, b)


def quantize_linears_int8(model: nn.Module) -> int:
    """Quantize every Linear of `model` to int8 weight-only; returns how many."""
    layers = [m for m in model.modules() if isinstance(m, Linear)]
    for layer in layers:
        layer.quantize_int8()
    return len(layers)
