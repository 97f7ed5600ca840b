"""Setup for the whole suite.

Without a GPU, Triton's CUDA kernels run in Triton's interpreter on CPU tensors, so their
tests (and the Triton step end to end) run in CI too. triton.jit reads the switch when a
kernel is defined, so it is set here, before any test module imports the kernels.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
