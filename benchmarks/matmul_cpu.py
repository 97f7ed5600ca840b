"""The CPU matmul kernels alone on SmolLM2-135M's shapes: q4, q8, int8 and bf16 weights at 1
and 20 rows (one stream, a 20-sequence decode step), with AMX on and off where the CPU has
it, against torch's own bf16 matmul (oneDNN) on the same shapes. Median ms per call.

    python benchmarks/matmul_cpu.py
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from tritium.engine.layers import quant_kernel as qk

ROOT = Path(__file__).resolve().parents[1]
#: SmolLM2-135M's linear layers (out_features, in_features); lm_head is q8 (its Q8_0 table).
SHAPES = {"qkv": (960, 576), "o": (576, 576), "gate_up": (3072, 576), "down": (576, 1536), "lm_head": (49152, 576)}  # fmt: skip


def timed(repeats: int, fn, *args) -> float:
    fn(*args)
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "matmul_cpu.json"))
    args = ap.parse_args()
    qk.ensure_available()
    torch.manual_seed(0)
    amx_modes = [True, False] if qk.set_amx(True) else [False]
    result: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "amx_available": amx_modes[0],
    }
    print(
        f"{'shape':<9}{'rows':>5}  "
        + "".join(f"{k:>14}" for k in ("q4", "q8", "int8", "bf16", "torch bf16"))
    )
    for name, (n, k) in SHAPES.items():
        w = torch.randn(n, k) * 0.02
        q4 = qk.quantize_weight_q4(w)
        i8 = qk.quantize_weight_int8(w)
        q8 = qk.quantize_weight_q8(w)
        wb = w.bfloat16()
        for rows in (1, 20):
            x = torch.randn(rows, k)
            xb = x.bfloat16()
            for amx in amx_modes:
                qk.set_amx(amx)
                tag = f"{name}_{rows}{'_amx' if amx else ''}"
                times = {
                    "q4": timed(args.repeats, qk.q4_linear, x, *q4, None),
                    "q8": timed(args.repeats, qk.q8_linear, x, *q8, None),
                    "int8": timed(args.repeats, qk.int8_linear, x, *i8, None),
                    "bf16": timed(args.repeats, qk.bf16_linear, x, wb, None),
                    "torch bf16": timed(args.repeats, torch.nn.functional.linear, xb, wb),
                }
                result[tag] = times
                label = f"{name}{' AMX' if amx else ''}"
                print(
                    f"{label:<13}{rows:>3}  " + "".join(f"{v:>11.3f} ms" for v in times.values()),
                    flush=True,
                )
    qk.set_amx(amx_modes[0])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
