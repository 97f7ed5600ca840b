"""What the CPU weight formats cost in quality: mean next-token log-loss (and perplexity)
of SmolLM2-135M (the default Q4_1 GGUF) on a fixed text, for each format's arithmetic.

The formats are applied to transformers' own model, so only the arithmetic differs:
  file      the GGUF's weights dequantized to fp32, fp32 inputs (the reference)
  q4/q8     the file's own blocks (4-bit layers, the Q8_0 lm_head), each linear layer's
            inputs rounded to 8 bits per block of 32 (quant_kernel.quantize_activations_q8:
            what the q4 and q8 kernels compute): the default
  q4+int8   the default before q8: the lm_head's weights re-rounded to int8 with a scale
            per row, its inputs fp32
  int8      every weight re-rounded to int8 with a scale per row, fp32 inputs

With --engine-kv DTYPES, the engine itself on the default GGUF (its q4/q8 kernels, its
attention) scores the text through prompt_logprobs, once per KV cache dtype: what a 16-bit
cache costs, and a check that the engine computes what the "q4/q8" row does.

With --gguf FILE, another GGUF of the same model (its own weights the reference), and
the choice for its wider types (Q5_*, Q6_K): the engine's default (int8 per row, fp32
inputs) against q8 (8-bit blocks, 8-bit inputs); 4-bit and Q8_0 tensors run on their own
blocks with 8-bit inputs in both.

    python benchmarks/quant_quality_cpu.py [--tokens 1500] [--gguf FILE]
        [--engine-kv auto,float16,bfloat16]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from tritium.engine.layers import quant_kernel
from tritium.engine.loader import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TEXTS = (ROOT.parent / "shared" / "data" / "prompts.txt", ROOT / "README.md")


def round_inputs(m: torch.nn.Module) -> torch.utils.hooks.RemovableHandle:
    """Round `m`'s inputs to 8 bits per block of 32, as the q4 and q8 kernels do."""
    return m.register_forward_pre_hook(lambda _, a: (quant_kernel.quantize_activations_q8(a[0]),))


def mean_nll(model: torch.nn.Module, ids: torch.Tensor) -> float:
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, :-1]
    return torch.nn.functional.cross_entropy(logits.float(), ids[0, 1:]).item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=1500)
    ap.add_argument(
        "--gguf", help="another GGUF file of SmolLM2: compare int8 and q8 for its wider types"
    )
    ap.add_argument(
        "--engine-kv",
        default="",
        help="comma list of kv_cache_dtype values: also score the text with the engine, each",
    )
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM

    ckpt = load_checkpoint(args.gguf or "smollm2", dtype=torch.float32, progress=False)
    text = "\n".join(p.read_text() for p in TEXTS)
    ids = torch.tensor([ckpt.tokenizer.encode(text)[: args.tokens]])
    model = AutoModelForCausalLM.from_pretrained(ckpt.model_dir, dtype=torch.float32).eval()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {ids.shape[1]} tokens of {[p.name for p in TEXTS]}")
    results = {"file": mean_nll(model, ids)}
    if args.gguf:
        results.update(wider_types(model, Path(args.gguf), ids))
        report(results)
        return
    hooks = {m: round_inputs(m) for m in linears}
    results["q4/q8"] = mean_nll(model, ids)

    def to_int8(m: torch.nn.Linear) -> None:
        hooks.pop(m).remove()
        q, scale = quant_kernel.quantize_weight_int8(m.weight)
        m.weight = torch.nn.Parameter(q.float() * scale[:, None])

    to_int8(model.lm_head)
    results["q4+int8"] = mean_nll(model, ids)
    for m in list(hooks):
        to_int8(m)
    results["int8"] = mean_nll(model, ids)
    for kv in filter(None, args.engine_kv.split(",")):
        results[f"engine kv {kv}"] = engine_nll(ids[0].tolist(), kv)
    report(results)


def engine_nll(ids: list[int], kv_cache_dtype: str) -> float:
    """Mean log-loss of `ids` as the engine scores them (prompt_logprobs), on the default
    GGUF in its default formats, with this KV cache dtype."""
    from tritium.engine import LLM, SamplingParams

    llm = LLM("smollm2", kv_cache_dtype=kv_cache_dtype, max_model_len=len(ids) + 16)
    params = SamplingParams(max_tokens=1, prompt_logprobs=0)
    out = llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)[0]
    assert out.prompt_logprobs is not None
    scored = [e[t].logprob for t, e in zip(ids[1:], out.prompt_logprobs[1:], strict=True) if e]
    return -sum(scored) / len(scored)


def wider_types(model: torch.nn.Module, path: Path, ids: torch.Tensor) -> dict[str, float]:
    """Log-loss with the engine's arithmetic for each quantized weight of the file: its own
    blocks and 8-bit inputs for 4-bit and Q8_0 tensors; the wider ones as int8 per row with
    fp32 inputs (the default), then as q8 blocks with 8-bit inputs."""
    from tritium.engine.loader import gguf as gguf_loader

    def module(name: str) -> torch.nn.Linear:
        if name == "model.embed_tokens.weight":  # tied: the lm_head runs it
            return model.lm_head
        return model.get_submodule(name.removesuffix(".weight"))

    formats = gguf_loader.quantized_weight_formats(path)
    kinds = gguf_loader.tensor_types(path)
    wider = [module(n) for n, f in formats.items() if f == "int8"]
    print(
        f"{len(formats) - len(wider)} tensors on their own blocks, {len(wider)} wider "
        f"({sorted({k for k in kinds.values() if k.startswith(('Q5', 'Q6'))})})"
    )
    weights = {m: m.weight.detach().clone() for m in wider}

    for name, fmt in formats.items():
        if fmt != "int8":
            round_inputs(module(name))
    for m in wider:
        q, scale = quant_kernel.quantize_weight_int8(weights[m])
        m.weight = torch.nn.Parameter(q.float() * scale[:, None])
    results = {"default": mean_nll(model, ids)}
    for m in wider:
        m.weight = torch.nn.Parameter(
            quant_kernel.dequantize_q8(*quant_kernel.quantize_weight_q8(weights[m]))
        )
        round_inputs(m)
    results["wider q8"] = mean_nll(model, ids)
    return results


def report(results: dict[str, float]) -> None:
    base = results["file"]
    print(f"{'format':<20}{'log-loss':>10}{'perplexity':>12}{'vs file':>10}")
    for name, nll in results.items():
        rel = (nll - base) / base * 100
        print(f"{name:<20}{nll:>10.4f}{torch.tensor(nll).exp().item():>12.3f}{rel:>+9.2f}%")


if __name__ == "__main__":
    main()
