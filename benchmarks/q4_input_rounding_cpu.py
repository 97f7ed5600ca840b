"""CPU microbenchmark: the cost of rounding a q4 layer's inputs to 8 bits (Q8_1 blocks).

A q4 linear first rounds each input row to int8 per block of 32 (and, for several rows,
back to fp32). With only 16 output columns the call is almost all of that rounding, so
its time shows the rounding's cost per call: 20 rows of 1536 (SmolLM2's down_proj input
at 20 concurrent streams). Best of 5 runs of 200 calls, microseconds per call.

    python benchmarks/q4_input_rounding_cpu.py
"""

from __future__ import annotations

import time

import torch

from tritium.engine.layers import quant_kernel as qk


def main() -> None:
    torch.manual_seed(0)
    codes, dm = qk.quantize_weight_q4(torch.randn(16, 1536) * 0.05)
    x = torch.randn(20, 1536)
    for _ in range(20):
        qk.q4_linear(x, codes, dm, None)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(200):
            qk.q4_linear(x, codes, dm, None)
        best = min(best, (time.perf_counter() - t) / 200)
    print(f"q4_linear M=20 K=1536 N=16: {best * 1e6:.1f} us per call")


if __name__ == "__main__":
    main()
