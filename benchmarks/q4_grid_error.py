"""How far the engine's q4 weights are from a GGUF file's own 4-bit weights.

A Q4_0 or Q4_1 tensor (gguf's reference quantizer on Gaussian weights of a 4096 x 2048
layer) is dequantized as the loader does, then put in the CPU q4 format, once spanning
each block in 15 steps (the rule before 2026-12-03) and once on the block's own grid
(`quant_kernel._grid_steps`); the table gives the error added to the file's values, and
the time to quantize the layer (random fp32 weights too, where no grid is found).

With --gguf FILE, the same for every 4-bit (Q4_0, Q4_1, Q4_K) and Q8_0 tensor of a real
file, each put in the format the engine runs it in (q4, q8), and how many of its blocks
come back exactly. A file with Q4_K tensors from llama.cpp's own quantizer, here from the
default model (llama-cpp-python, as benchmarks/setup_peers.py installs it):

    python -c "import ctypes, llama_cpp as l; p = l.llama_model_quantize_default_params(); \
        p.ftype = l.LLAMA_FTYPE_MOSTLY_Q4_K_M; p.allow_requantize = True; \
        l.llama_model_quantize(b'SmolLM2-135M-Instruct.Q4_1.gguf', b'q4_k_m.gguf', ctypes.byref(p))"

    python benchmarks/q4_grid_error.py [--out FILE] [--gguf FILE]
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


def file_tensors(path: Path) -> dict:
    """Every Q4_0/Q4_1/Q4_K/Q8_0 tensor of a real file in the engine's format for it: the
    error against the file's values, and the share of blocks of 32 that come back exact."""
    from tritium.engine.loader import gguf as gguf_loader

    kinds = ("Q4_0", "Q4_1", "Q4_K", "Q8_0")
    reader = gguf.GGUFReader(path)
    per_kind: dict[str, dict[str, float]] = {}
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        if kind not in kinds:
            continue
        w = gguf_loader.dequantize(tensor).float()
        w = w.reshape(-1, w.shape[-1])
        if kind == "Q8_0":
            back = qk.dequantize_q8(*qk.quantize_weight_q8(w))
        else:
            back = qk.dequantize_q4(*qk.quantize_weight_q4(w))
        err = (back - w).abs()
        exact = (err.reshape(-1, 32).amax(dim=-1) == 0).float()
        acc = per_kind.setdefault(kind, {"tensors": 0, "max_abs_err": 0.0, "err2": 0.0, "w2": 0.0, "exact": 0.0, "blocks": 0})  # fmt: skip
        acc["tensors"] += 1
        acc["max_abs_err"] = max(acc["max_abs_err"], float(err.max()))
        acc["err2"] += float(err.pow(2).sum())
        acc["w2"] += float(w.pow(2).sum())
        acc["exact"] += float(exact.sum())
        acc["blocks"] += exact.numel()
    results = {}
    print(
        f"{'type':<6}{'tensors':>8}{'format':>8}{'max abs err':>13}{'rel L2':>10}{'exact blocks':>14}"
    )
    for kind, acc in per_kind.items():
        r = results[kind] = {
            "tensors": acc["tensors"],
            "format": "q8" if kind == "Q8_0" else "q4",
            "max_abs_err": acc["max_abs_err"],
            "relative_l2": (acc["err2"] / acc["w2"]) ** 0.5,
            "exact_blocks": acc["exact"] / acc["blocks"],
        }
        print(
            f"{kind:<6}{r['tensors']:>8}{r['format']:>8}{r['max_abs_err']:>13.3g}"
            f"{r['relative_l2']:>10.3g}{r['exact_blocks']:>13.1%}"
        )
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "q4_grid_error.json"))
    ap.add_argument("--gguf", help="measure this file's 4-bit and Q8_0 tensors instead")
    args = ap.parse_args()
    if args.gguf:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"file": args.gguf, **file_tensors(Path(args.gguf))}, indent=2))
        print(f"wrote {out}")
        return
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
