"""Where a CPU decode step goes: wall time per step split into the fused decoder layers (one
C call each: their matmuls, attention and small ops), the quantized matmuls called from
Python (the lm_head; every layer's when the fused path does not apply), attention called
from Python, batch preparation and sampling (wrappers with perf_counter around each; the
rest is the small torch ops between them). The prompt step is measured alone and
subtracted, so rows it alone uses can come out near zero or slightly negative (noise).

    python benchmarks/engine_cpu_split.py --batch 1
    python benchmarks/engine_cpu_split.py --batch 20
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import defaultdict

from tritium.engine import LLM, SamplingParams
from tritium.engine.layers import cpu_ops, quant_kernel
from tritium.engine.layers.attention import Attention
from tritium.engine.layers.sampler import Sampler
from tritium.engine.model_runner import ModelRunner

spent: dict[str, float] = defaultdict(float)


def timed(owner, name: str, key: str) -> None:
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[key] += time.perf_counter() - t

    setattr(owner, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--quantization", default=None, help="engine quantization (default: auto)")
    args = ap.parse_args()
    timed(cpu_ops, "decode_layer", "fused decoder layers")
    timed(quant_kernel, "int8_linear", "int8 matmuls")
    timed(quant_kernel, "q4_linear", "q4 matmuls")
    timed(Attention, "forward", "attention")
    timed(Sampler, "__call__", "sampler")
    timed(ModelRunner, "_prepare", "batch preparation")
    timed(ModelRunner, "execute", "model step")
    llm = LLM("smollm2", quantization=args.quantization)
    base = list(range(100, 160))
    reqs = [{"prompt_token_ids": base[: 40 + i % 20]} for i in range(args.batch)]
    full = SamplingParams(temperature=0, max_tokens=args.steps, ignore_eos=True)
    one = SamplingParams(temperature=0, max_tokens=1)
    llm.generate(reqs, full, use_tqdm=False)  # warm-up

    def run(params: SamplingParams) -> tuple[float, dict[str, float]]:
        llm.engine_core.block_manager.reset_prefix_cache()
        spent.clear()
        t = time.perf_counter()
        llm.generate(reqs, params, use_tqdm=False)
        return time.perf_counter() - t, dict(spent)

    t_prefill, s_prefill = run(one)  # the prompt step alone, subtracted below
    t_all, s_all = run(full)
    steps = args.steps - 1
    print(f"batch {args.batch}, {llm.engine_core.runner.quantization or 'dequantized'} weights:")
    print(f"  decode step          {(t_all - t_prefill) / steps * 1e3:7.2f} ms")
    for key in s_all:
        per_step = (s_all[key] - s_prefill.get(key, 0.0)) / steps
        print(f"  {key:<20} {per_step * 1e3:7.2f} ms")


if __name__ == "__main__":
    main()
