"""Prompt processing (prefill) on CPU: the time to the first token of the 20 chat prompts
of shared/data/prompts.txt submitted together, and of one long prompt (those prompts'
tokens joined, cut to --long-tokens), for the engine on SmolLM2's GGUF (its default q4)
and on the bf16 Hugging Face folder in each --folder-dtypes. Best of 3, prefix cache reset
before each run.

    python benchmarks/prefill_cpu.py
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from tritium.engine import LLM, SamplingParams
from tritium.engine.loader import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
PROMPTS_FILE = ROOT.parent / "shared" / "data" / "prompts.txt"


def best_prefill_ms(llm: LLM, prompts: list[dict], repeats: int = 3) -> float:
    params = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    llm.generate(prompts, params, use_tqdm=False)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        llm.engine_core.block_manager.reset_prefix_cache()
        t = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder-dtypes", default="auto,float32", help="comma list; empty: skip")
    ap.add_argument("--long-tokens", type=int, default=1500)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "prefill_cpu.json"))
    args = ap.parse_args()
    ckpt = load_checkpoint("smollm2", progress=False)
    lines = [line.strip() for line in PROMPTS_FILE.read_text().splitlines() if line.strip()]
    chats = [
        ckpt.tokenizer.apply_chat_template(
            [{"role": "user", "content": line}], add_generation_prompt=True, tokenize=True,
            return_dict=False,
        )
        for line in lines[:20]
    ]  # fmt: skip
    batch = [{"prompt_token_ids": ids} for ids in chats]
    long = [{"prompt_token_ids": [t for ids in chats for t in ids][: args.long_tokens]}]
    result: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": platform.processor() or platform.machine(),
        "batch_prompt_tokens": sum(len(ids) for ids in chats),
        "long_prompt_tokens": len(long[0]["prompt_token_ids"]),
    }
    setups = [("gguf-default", "smollm2", "auto")]
    setups += [(f"folder-{d}", str(ckpt.model_dir), d) for d in args.folder_dtypes.split(",") if d]
    for tag, model, dtype in setups:
        llm = LLM(model, dtype=dtype)
        runner = llm.engine_core.runner
        weights = runner.quantization or str(runner.dtype)
        for name, prompts in (("batch", batch), ("long", long)):
            ms = result[f"{tag}_{name}_ms"] = best_prefill_ms(llm, prompts)
            print(f"{tag:<16} ({runner.dtype} math, {weights}) {name:<6}{ms:>8.0f} ms", flush=True)
        del llm
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
