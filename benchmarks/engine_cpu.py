"""CPU benchmark: tritium.engine vs transformers on SmolLM2-135M (the default GGUF).

20 chat prompts (shared/data/prompts.txt), 128 new tokens each, greedy, ignore_eos.
Measures, in one run: our engine with one stream and with all 20 at once; transformers
`generate` one prompt at a time (bf16), a static batch of 20 (bf16, left padding), and
its continuous batching `generate_batch` where it runs. Prints a table, writes JSON.

    python benchmarks/engine_cpu.py [--dtype auto] [--skip-hf] [--tokens 128]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from tritium.engine import LLM, SamplingParams
from tritium.engine.loader import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
PROMPTS_FILE = ROOT.parent / "shared" / "data" / "prompts.txt"


def chat_prompts(tokenizer) -> list[list[int]]:
    lines = [line.strip() for line in PROMPTS_FILE.read_text().splitlines() if line.strip()]
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
        for p in lines
    ]


def bench_engine(llm: LLM, prompts: list[list[int]], n_tokens: int) -> dict:
    params = SamplingParams(temperature=0, max_tokens=n_tokens, ignore_eos=True)
    llm.generate(
        [prompts[0]], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True), use_tqdm=False
    )
    t = time.perf_counter()
    out = llm.generate([prompts[0]], params, use_tqdm=False)
    single = time.perf_counter() - t
    t = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    batch = time.perf_counter() - t
    gen = sum(len(o.outputs[0].token_ids) for o in outs)
    return {
        "single_tok_s": len(out[0].outputs[0].token_ids) / single,
        "concurrent20_tok_s": gen / batch,
        "single_s": single,
        "concurrent20_s": batch,
    }


def bench_hf(model_dir: Path, prompts: list[list[int]], n_tokens: int, pad_id: int) -> dict:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    gen_kw = dict(
        max_new_tokens=n_tokens, min_new_tokens=n_tokens, do_sample=False, pad_token_id=pad_id
    )
    res: dict = {}
    with torch.inference_mode():
        model.generate(
            torch.tensor([prompts[0]]), max_new_tokens=4, do_sample=False, pad_token_id=pad_id
        )
        t = time.perf_counter()
        model.generate(torch.tensor([prompts[0]]), **gen_kw)
        res["hf_single_tok_s"] = n_tokens / (time.perf_counter() - t)
        print(res, flush=True)
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        t = time.perf_counter()
        model.generate(ids, attention_mask=mask, **gen_kw)
        res["hf_static20_tok_s"] = n_tokens * len(prompts) / (time.perf_counter() - t)
        print(res, flush=True)
        try:
            from transformers import GenerationConfig

            cfg = GenerationConfig(
                max_new_tokens=n_tokens, do_sample=False, eos_token_id=-1, pad_token_id=pad_id
            )
            t = time.perf_counter()
            out = model.generate_batch(inputs=prompts, generation_config=cfg)
            dt = time.perf_counter() - t
            n = sum(len(r.generated_tokens) for r in out.values())
            res["hf_generate_batch_tok_s"] = n / dt
        except Exception as exc:  # not every transformers version runs it on CPU
            res["hf_generate_batch_error"] = repr(exc)[:200]
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args()
    ckpt = load_checkpoint("smollm2", progress=False)
    prompts = chat_prompts(ckpt.tokenizer)
    llm = LLM("smollm2", dtype=args.dtype)
    result = {
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "engine_dtype": str(llm.engine_core.runner.dtype),
        "new_tokens": args.tokens,
    }
    result.update(bench_engine(llm, prompts, args.tokens))
    print({k: round(v, 1) for k, v in result.items() if k.endswith("tok_s")}, flush=True)
    if not args.skip_hf:
        pad = (
            ckpt.tokenizer.pad_token_id
            if ckpt.tokenizer.pad_token_id is not None
            else ckpt.eos_token_ids[0]
        )
        result.update(bench_hf(ckpt.model_dir, prompts, args.tokens, pad))
    print(f"{'setup':<40}{'tok/s':>10}")
    for k, v in result.items():
        if k.endswith("tok_s"):
            print(f"{k:<40}{v:>10.1f}")
    if "hf_single_tok_s" in result:
        print(
            f"single stream ratio vs HF bf16 generate: {result['single_tok_s'] / result['hf_single_tok_s']:.2f}x"
        )
        print(
            f"20 concurrent ratio vs HF static batch:  {result['concurrent20_tok_s'] / result['hf_static20_tok_s']:.2f}x"
        )
    out = ROOT / "benchmarks" / "out" / "engine_cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
