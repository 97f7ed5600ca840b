"""What an AVX-512 build (without AMX) would add over the AVX2 build that CPUs with AVX-512
but no AMX get today (Ice Lake servers, Zen 4): the engine on the default GGUF, 20 chat
prompts x 128 tokens, greedy, with AMX off, each build in its own process, alternating.

The only AVX-512 code outside the AMX kernels is decode attention (csrc/cpu_ops.c), so
this measures that: run it on a CPU with AVX-512 (AMX or not) to see what a build tier of
its own would be worth.

    python benchmarks/cpu_build_tiers.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AVX512 = ["-mavx512f", "-mavx512bw", "-mavx512vl"]

RUN = """
import json, sys, time
sys.path.insert(0, {bench!r})
from tritium.engine.layers import native
base = native._compile_flags()[-1]
flags = base + {extra!r}
native._compile_flags = lambda: [flags]
from tritium.engine import LLM, SamplingParams
from tritium.engine.loader import load_checkpoint
from engine_cpu import chat_prompts
prompts = chat_prompts(load_checkpoint("smollm2", progress=False).tokenizer, 20)
llm = LLM("smollm2")
params = SamplingParams(temperature=0, max_tokens=128, ignore_eos=True)
batch = [{{"prompt_token_ids": p}} for p in prompts]
llm.generate(batch[:2], params, use_tqdm=False)  # warm-up
many = one = 0.0
for _ in range(3):
    t = time.perf_counter()
    llm.generate(batch, params, use_tqdm=False)
    many = max(many, 20 * 128 / (time.perf_counter() - t))
for _ in range(2):
    t = time.perf_counter()
    llm.generate(batch[:1], params, use_tqdm=False)
    one = max(one, 128 / (time.perf_counter() - t))
print(json.dumps({{"one_stream_tok_s": one, "concurrent20_tok_s": many}}))
"""


def run(extra: list[str]) -> dict[str, float]:
    code = RUN.format(bench=str(ROOT / "benchmarks"), extra=extra)
    env = dict(os.environ, TRITIUM_CPU_AMX="0")
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "cpu_build_tiers.json"))
    args = ap.parse_args()
    flags = Path("/proc/cpuinfo").read_text()
    if "avx512bw" not in flags or "avx512vl" not in flags:
        sys.exit("this CPU has no AVX-512 (F, BW, VL): nothing to compare")
    results: dict[str, list[dict[str, float]]] = {"avx2": [], "avx512": []}
    for r in range(args.rounds):
        for tier, extra in (("avx2", []), ("avx512", AVX512)):
            got = run(extra)
            results[tier].append(got)
            print(
                f"round {r + 1} {tier:<7} one stream {got['one_stream_tok_s']:7.1f} tok/s, "
                f"20 concurrent {got['concurrent20_tok_s']:7.1f} tok/s",
                flush=True,
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), **results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
