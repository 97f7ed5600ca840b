"""Linear layers: nn.Linear, with oneDNN's matmul on CPU in float32.

On CPU, for the few-row inputs of decode steps (1 to a few dozen rows against a weight
read from memory), oneDNN's inner-product primitive runs about a third faster than the
BLAS call behind F.linear (measured with SmolLM2-135M's shapes on AVX2). Same parameters
and names as nn.Linear, so loading and other devices are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class Linear(nn.Linear):
    """nn.Linear whose CPU float32 forward goes through oneDNN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _ONEDNN and x.is_cpu and x.dtype == torch.float32 == self.weight.dtype and x.dim() == 2:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)
