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

    python benchmarks/quant_quality_cpu.py [--tokens 1500]
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


def mean_nll(model: torch.nn.Module, ids: torch.Tensor) -> float:
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, :-1]
    return torch.nn.functional.cross_entropy(logits.float(), ids[0, 1:]).item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=1500)
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM

    ckpt = load_checkpoint("smollm2", progress=False)
    text = "\n".join(p.read_text() for p in TEXTS)
    ids = torch.tensor([ckpt.tokenizer.encode(text)[: args.tokens]])
    model = AutoModelForCausalLM.from_pretrained(ckpt.model_dir, dtype=torch.float32).eval()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {ids.shape[1]} tokens of {[p.name for p in TEXTS]}")
    results = {"file": mean_nll(model, ids)}
    hooks = {
        m: m.register_forward_pre_hook(lambda _, a: (quant_kernel.quantize_activations_q8(a[0]),))
        for m in linears
    }
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
    base = results["file"]
    print(f"{'format':<9}{'log-loss':>10}{'perplexity':>12}{'vs file':>10}")
    for name, nll in results.items():
        rel = (nll - base) / base * 100
        print(f"{name:<9}{nll:>10.4f}{torch.tensor(nll).exp().item():>12.3f}{rel:>+9.2f}%")


if __name__ == "__main__":
    main()
