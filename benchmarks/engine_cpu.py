"""CPU benchmark: tritium.engine vs transformers on SmolLM2-135M (the default GGUF).

Chat prompts from shared/data/prompts.txt, N new tokens each, greedy, ignore_eos.
Measures, in one run: our engine with one stream and with all prompts at once, in its
default weight formats for this file (q4 for its Q4_1 weights, with 8-bit inputs as
llama.cpp; q8 for its Q8_0 embedding and the tied lm_head), as int8 everywhere (fp32
inputs), and dequantized (`--quantization none`, the dtype below); then our engine on the
Hugging Face folder transformers loads (the same weights as bf16 safetensors: by default
kept bf16 under fp32 math, and `none`, fp32 weights); then transformers `generate` one
prompt at a time, a static batch of all prompts (left
padding) and its continuous batching `generate_batch` where it runs, in bf16 (what the
issue names) and fp32 (the fair one on a CPU without native bf16). Prints each number as
it is measured, then a table with the ratios; writes benchmarks/out/engine_cpu.json.

    python benchmarks/engine_cpu.py                     # the full run (20 prompts, 128 tokens)
    python benchmarks/engine_cpu.py --skip-hf --num-prompts 8 --max-tokens 32   # quick
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from tritium.engine import LLM, SamplingParams
from tritium.engine.layers import quant_kernel
from tritium.engine.loader import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
PROMPTS_FILE = ROOT.parent / "shared" / "data" / "prompts.txt"
HF_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
# One stream lasts a few seconds, short enough for the host's swings to halve a sample;
# both sides report the best of a few runs (noise only ever slows a run down).
SINGLE_REPEATS = 3


def chat_prompts(tokenizer, n: int) -> list[list[int]]:
    lines = [line.strip() for line in PROMPTS_FILE.read_text().splitlines() if line.strip()]
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
        for p in lines[:n]
    ]


def report(result: dict, key: str, value: float) -> None:
    result[key] = value
    print(f"  {key:<36}{value:>10.1f}", flush=True)


def bench_engine(llm: LLM, prompts: list[list[int]], n_tokens: int, result: dict, tag: str) -> None:
    params = SamplingParams(temperature=0, max_tokens=n_tokens, ignore_eos=True)
    warm = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    # Warm up both shapes (one stream, the whole batch), then forget the cached prefixes so
    # every timed run computes its prompts.
    llm.generate([{"prompt_token_ids": p} for p in prompts], warm, use_tqdm=False)
    samples = []
    for _ in range(SINGLE_REPEATS):
        llm.engine_core.block_manager.reset_prefix_cache()
        t = time.perf_counter()
        out = llm.generate([{"prompt_token_ids": prompts[0]}], params, use_tqdm=False)
        samples.append(len(out[0].outputs[0].token_ids) / (time.perf_counter() - t))
    result[f"engine_{tag}_single_samples"] = samples
    report(result, f"engine_{tag}_single_tok_s", max(samples))
    llm.engine_core.block_manager.reset_prefix_cache()
    t = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    gen = sum(len(o.outputs[0].token_ids) for o in outs)
    report(result, f"engine_{tag}_concurrent{len(prompts)}_tok_s", gen / (time.perf_counter() - t))


def bench_hf(
    model_dir: Path,
    prompts: list[list[int]],
    n_tokens: int,
    pad_id: int,
    tag: str,
    result: dict,
    generate_batch: bool,
) -> None:
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=HF_DTYPES[tag]).eval()
    gen_kw = dict(
        max_new_tokens=n_tokens, min_new_tokens=n_tokens, do_sample=False, pad_token_id=pad_id
    )
    b = len(prompts)
    with torch.inference_mode():
        model.generate(
            torch.tensor([prompts[0]]), max_new_tokens=4, do_sample=False, pad_token_id=pad_id
        )
        samples = []
        for _ in range(SINGLE_REPEATS):
            t = time.perf_counter()
            model.generate(torch.tensor([prompts[0]]), **gen_kw)
            samples.append(n_tokens / (time.perf_counter() - t))
        result[f"hf_{tag}_single_samples"] = samples
        report(result, f"hf_{tag}_single_tok_s", max(samples))
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        t = time.perf_counter()
        model.generate(ids, attention_mask=mask, **gen_kw)
        report(result, f"hf_{tag}_static{b}_tok_s", n_tokens * b / (time.perf_counter() - t))
    if not generate_batch:
        return
    # Outside inference_mode: its generation loop runs in a thread of its own, which may not
    # update tensors made in inference mode (transformers 5.23 fails every request so).
    try:
        cfg = GenerationConfig(
            max_new_tokens=n_tokens, do_sample=False, eos_token_id=-1, pad_token_id=pad_id
        )
        t = time.perf_counter()
        out = model.generate_batch(inputs=prompts, generation_config=cfg, progress_bar=False)
        dt = time.perf_counter() - t
        n = sum(len(r.generated_tokens) for r in out.values())
        if n < b * n_tokens:
            raise RuntimeError(f"generate_batch returned {n} of {b * n_tokens} tokens")
        report(result, f"hf_{tag}_generate_batch{b}_tok_s", n / dt)
    except Exception as exc:  # not every transformers version runs it on CPU
        result[f"hf_{tag}_generate_batch_error"] = repr(exc)[:200]
        print(f"  hf_{tag}_generate_batch: {exc!r}"[:200], flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtype", default="auto", help="engine dtype (auto: fp32 without native bf16)")
    ap.add_argument(
        "--quantization",
        default="auto,int8,none",
        help="engine weight formats to measure, comma list: auto (the default: the GGUF's "
        "4-bit weights as q4, its Q8_0 ones as q8), q4, q8, int8, none (dequantized, in --dtype)",
    )
    ap.add_argument(
        "--folder-quantization",
        default="auto,none",
        help="weight formats for the engine on the bf16 HF folder, comma list (empty: skip): "
        "auto (bf16 kept, fp32 math, where the CPU lacks native bf16), none, int8, ...",
    )
    ap.add_argument(
        "--kv-cache-dtype",
        default="auto",
        help="the engine's KV cache dtype (auto: the compute dtype, float16 for quantized weights)",
    )
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--num-prompts", type=int, default=20)
    ap.add_argument("--skip-hf", action="store_true", help="measure only our engine")
    ap.add_argument("--hf-dtypes", default="bf16,fp32", help="comma list of bf16, fp32")
    ap.add_argument("--skip-generate-batch", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "engine_cpu.json"))
    args = ap.parse_args()

    ckpt = load_checkpoint("smollm2", progress=False)
    prompts = chat_prompts(ckpt.tokenizer, args.num_prompts)
    b = len(prompts)
    result: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": platform.processor() or platform.machine(),
        "num_prompts": b,
        "new_tokens": args.max_tokens,
        "kv_cache_dtype": args.kv_cache_dtype,
        "amx": quant_kernel.is_available() and quant_kernel.amx_enabled(),
    }
    kv = "" if args.kv_cache_dtype == "auto" else f"-kv-{args.kv_cache_dtype}"
    runs = [("smollm2", f"{fmt}{kv}", fmt) for fmt in args.quantization.split(",")]
    runs += [
        (str(ckpt.model_dir), f"folder-{fmt}{kv}", fmt)
        for fmt in args.folder_quantization.split(",")
        if fmt
    ]
    tags = [tag for _, tag, _ in runs]
    for model, tag, fmt in runs:
        t = time.perf_counter()
        llm = LLM(
            model,
            dtype=args.dtype,
            quantization=None if fmt == "auto" else fmt,
            kv_cache_dtype=args.kv_cache_dtype,
        )
        runner = llm.engine_core.runner
        result[f"engine_{tag}_startup_s"] = time.perf_counter() - t
        result[f"engine_{tag}_weights"] = runner.quantization or str(runner.dtype)
        result["threads"] = torch.get_num_threads()
        print(
            f"engine on {'the HF folder' if model != 'smollm2' else 'the GGUF'}, "
            f"quantization={fmt} ({result[f'engine_{tag}_weights']} weights, "
            f"{result['threads']} threads):",
            flush=True,
        )
        bench_engine(llm, prompts, args.max_tokens, result, tag)
        del llm
    if not args.skip_hf:
        pad = ckpt.tokenizer.pad_token_id
        pad = pad if pad is not None else ckpt.eos_token_ids[0]
        for tag in args.hf_dtypes.split(","):
            print(f"transformers {tag}:", flush=True)
            bench_hf(
                ckpt.model_dir, prompts, args.max_tokens, pad, tag, result,
                not args.skip_generate_batch,
            )  # fmt: skip

    print(f"\n{'setup':<40}{'tok/s':>10}")
    for k, v in result.items():
        if k.endswith("tok_s"):
            print(f"{k:<40}{v:>10.1f}")
    for ours in tags:
        one = result[f"engine_{ours}_single_tok_s"]
        many = result[f"engine_{ours}_concurrent{b}_tok_s"]
        for tag in HF_DTYPES:
            if f"hf_{tag}_single_tok_s" not in result:
                continue
            r1 = result[f"ratio_{ours}_single_vs_hf_{tag}"] = one / result[f"hf_{tag}_single_tok_s"]
            rb = result[f"ratio_{ours}_concurrent_vs_hf_{tag}_static"] = (
                many / result[f"hf_{tag}_static{b}_tok_s"]
            )
            print(
                f"engine {ours} vs transformers {tag}: one stream {r1:.2f}x, "
                f"{b} concurrent vs static batch {rb:.2f}x"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
