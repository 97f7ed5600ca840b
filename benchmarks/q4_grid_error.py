"""How far the engine's q4 weights are from a GGUF file's own 4-bit weights.

A Q4_0 or Q4_1 tensor (gguf's reference quantizer on Gaussian weights of a 4096 x 2048
layer) is dequantized as the loader does, then put in the CPU q4 format, once spanning
each block in 15 steps (the rule before 2026-12-03) and once on the block's own grid
(`quant_kernel._grid_steps`); the table gives the error added to the file's values, and
the time to quantize the layer (random fp32 weights too, where no grid is found).

    python benchmarks/q4_grid_error.py [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import gguf
import torch

from tritium.engine.layers import quant_kernel as qk

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (4096, 2048)


def file_weights(qtype: gguf.GGMLQuantizationType) -> torch.Tensor:
    x = (torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)) * 0.02).numpy()
    blocks = gguf.quants.quantize(x, qtype)
    return torch.from_numpy(gguf.quants.dequantize(blocks, qtype)).reshape(SHAPE)


def measure(w: torch.Tensor, probe_rows: int) -> dict[str, float]:
    default = qk._GRID_PROBE_ROWS
    qk._GRID_PROBE_ROWS = probe_rows  # 0: the grid is never looked for (15 steps)
    try:
        t = time.perf_counter()
        codes, dm = qk.quantize_weight_q4(w)
        seconds = time.perf_counter() - t
    finally:
        qk._GRID_PROBE_ROWS = default
    err = (qk.dequantize_q4(codes, dm) - w).abs()
    return {
        "max_abs_err": float(err.max()),
        "mean_abs_err": float(err.mean()),
        "relative_l2": float(err.norm() / w.norm()),
        "quantize_s": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "q4_grid_error.json"))
    args = ap.parse_args()
    sources = {
        "Q4_0 file": file_weights(gguf.GGMLQuantizationType.Q4_0),
        "Q4_1 file": file_weights(gguf.GGMLQuantizationType.Q4_1),
        "fp32 weights": torch.randn(SHAPE, generator=torch.Generator().manual_seed(1)) * 0.02,
    }
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.machine()}
    print(
        f"{'source':<14}{'rule':<12}{'max abs err':>13}{'mean abs err':>14}{'rel L2':>10}{'s':>8}"
    )
    for name, w in sources.items():
        for rule, probe in (("15 steps", 0), ("own grid", qk._GRID_PROBE_ROWS)):
            measure(w, probe)  # warm-up
            r = results[f"{name} / {rule}"] = measure(w, probe)
            print(
                f"{name:<14}{rule:<12}{r['max_abs_err']:>13.3g}{r['mean_abs_err']:>14.3g}"
                f"{r['relative_l2']:>10.3g}{r['quantize_s']:>8.3f}",
                flush=True,
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
