"""CPU model load: peak memory and start-up time of `LLM(...)`, each case in a
fresh process (peak RSS is per process), with a small KV pool so the weights dominate.

    python benchmarks/load_cpu.py [--src DIR] [--cases smollm2-q4,...] [--out FILE]

Cases run against a private cache (`--cache`). A "-first" case empties it first (for
the GGUF cases all of it, GGUF conversions too; otherwise the prepared weights), so the
case after it shows the start that finds the cache; "cache MB" is its size after the case.
"folder-1b" is a Llama-3.2-1B folder of dummy bf16 weights, "gguf-1b" the same shape as a
Q4_0 GGUF file with SmolLM2's tokenizer, both written once under `--models`.

`--src` runs another checkout's engine (e.g. a `git worktree` of an older commit) with
this script, so before/after numbers come from one run. The baseline case imports the
engine and reads SmolLM2's config and tokenizer only: the process's fixed cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name -> (model, engine kwargs); "folder" is the converted SmolLM2 (bf16 safetensors).
CASES: dict[str, tuple[str, dict]] = {
    "smollm2-first-start": ("smollm2", {}),
    "baseline": ("", {}),
    "smollm2-q4": ("smollm2", {}),
    "smollm2-folder-bf16": ("folder", {}),
    "smollm2-folder-fp32": ("folder", {"quantization": "none"}),
    "llama-3.2-1b-folder-q4-first": ("folder-1b", {"quantization": "q4"}),
    "llama-3.2-1b-folder-q4": ("folder-1b", {"quantization": "q4"}),
    "llama-3.2-1b-folder-bf16": ("folder-1b", {}),
    "llama-3.2-1b-gguf-q4-first": ("gguf-1b", {}),
    "llama-3.2-1b-gguf-q4": ("gguf-1b", {}),
    "llama-3.2-1b-q4": ("llama-3.2-1b", {"load_format": "dummy", "quantization": "q4"}),
    "llama-3.2-1b-bf16": ("llama-3.2-1b", {"load_format": "dummy", "quantization": "bf16"}),
    "llama-3.2-1b-fp32": ("llama-3.2-1b", {"load_format": "dummy", "dtype": "float32"}),
}

# Peak anonymous memory (RssAnon), sampled: ru_maxrss also counts the pages of memory-
# mapped weight files, which the kernel can drop at will.
CHILD = """
import json, resource, sys, threading, time
peak = [0]
def sample():
    while True:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    peak[0] = max(peak[0], int(line.split()[1]))
        time.sleep(0.002)
threading.Thread(target=sample, daemon=True).start()
t = time.perf_counter()
from tritium.engine import LLM
from tritium.engine.loader import load_checkpoint
model, kwargs = json.loads(sys.argv[1])
if model == "folder":
    model = str(load_checkpoint("smollm2", progress=False).model_dir)
elif model == "folder-1b":
    model = sys.argv[2]
elif model == "gguf-1b":
    model = sys.argv[3]
result = {}
if model:
    llm = LLM(model, max_model_len=512, kv_cache_memory_bytes=64 << 20, **kwargs)
    runner = llm.engine_core.runner
    result["weights"] = runner.quantization or str(runner.dtype)
    assert llm.generate(["Hello"])[0].outputs[0].token_ids  # it runs
else:
    load_checkpoint("smollm2", progress=False)
result["startup_s"] = time.perf_counter() - t
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
time.sleep(0.01)
result["peak_anon_mb"] = peak[0] / 1024
print(json.dumps(result))
"""


def write_folder_1b(folder: Path) -> Path:
    """A Llama-3.2-1B HF folder of dummy bf16 weights (and SmolLM2's tokenizer files, whose
    ids all fit the larger vocabulary), written once."""
    if (folder / "model.safetensors").is_file():
        return folder
    import shutil

    import torch

    from tritium.engine.loader import load_checkpoint
    from tritium.engine.loader.cache import ShardWriter

    print(f"writing dummy Llama-3.2-1B weights to {folder} (once)", flush=True)
    ckpt = load_checkpoint("llama-3.2-1b", load_format="dummy", dtype=torch.bfloat16)
    smollm2 = load_checkpoint("smollm2", progress=False).model_dir
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ckpt.hf_config.save_pretrained(tmp)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2 / name, tmp / name)
    writer = ShardWriter(tmp, max_shard_bytes=16 << 30)
    for name, tensor in ckpt.weights():
        writer.add(name, tensor)
    writer.close()
    tmp.rename(folder)
    return folder


def write_gguf_1b(path: Path) -> Path:
    """A Llama-3.2-1B-shaped Q4_0 GGUF file of random weights (norms F32, Q/K rows left
    unpermuted: they are random), with SmolLM2's tokenizer, written once."""
    if path.is_file():
        return path
    import gguf
    import numpy as np
    import torch

    from tritium.engine.loader import default_model_path, dummy_config

    print(f"writing a dummy Llama-3.2-1B Q4_0 GGUF to {path} (once)", flush=True)
    cfg = dummy_config("llama-3.2-1b")
    tmp = path.with_name(path.name + ".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name("dummy-llama-3.2-1b")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(500000.0)
    writer.add_vocab_size(cfg.vocab_size)
    fields = gguf.GGUFReader(str(default_model_path())).fields
    writer.add_tokenizer_model(fields["tokenizer.ggml.model"].contents())
    writer.add_tokenizer_pre(fields["tokenizer.ggml.pre"].contents())
    writer.add_token_list(fields["tokenizer.ggml.tokens"].contents())
    writer.add_token_types(fields["tokenizer.ggml.token_type"].contents())
    writer.add_token_merges(fields["tokenizer.ggml.merges"].contents())
    writer.add_bos_token_id(fields["tokenizer.ggml.bos_token_id"].contents())
    writer.add_eos_token_id(fields["tokenizer.ggml.eos_token_id"].contents())
    writer.add_chat_template(fields["tokenizer.chat_template"].contents())
    hidden, inter = cfg.hidden_size, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (hidden // cfg.num_attention_heads)
    shapes = {"token_embd.weight": (cfg.vocab_size, hidden)}
    for i in range(cfg.num_hidden_layers):
        shapes |= {
            f"blk.{i}.attn_norm.weight": (hidden,),
            f"blk.{i}.attn_q.weight": (hidden, hidden),
            f"blk.{i}.attn_k.weight": (kv, hidden),
            f"blk.{i}.attn_v.weight": (kv, hidden),
            f"blk.{i}.attn_output.weight": (hidden, hidden),
            f"blk.{i}.ffn_norm.weight": (hidden,),
            f"blk.{i}.ffn_gate.weight": (inter, hidden),
            f"blk.{i}.ffn_up.weight": (inter, hidden),
            f"blk.{i}.ffn_down.weight": (hidden, inter),
        }
    shapes["output_norm.weight"] = (hidden,)
    gen = torch.Generator().manual_seed(0)
    for name, shape in shapes.items():
        if len(shape) == 1:
            writer.add_tensor(name, np.ones(shape, np.float32))
            continue
        data = (torch.randn(shape, generator=gen) * 0.02).numpy()
        q4 = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q4_0)
        writer.add_tensor(name, q4, raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=True)
    writer.close()
    tmp.rename(path)
    return path


def empty_cache(cache: Path, case: str) -> None:
    import shutil

    if case in ("smollm2-first-start", "llama-3.2-1b-gguf-q4-first"):
        shutil.rmtree(cache, ignore_errors=True)
    elif case.endswith("-first"):
        shutil.rmtree(cache / "prepared", ignore_errors=True)


def cache_mb(cache: Path) -> float:
    return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default=str(ROOT / "src"), help="the tritium source tree to run")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "load_cpu.json"))
    ap.add_argument("--cache", default=str(ROOT / "benchmarks" / "out" / "cache"))
    ap.add_argument("--models", default=str(ROOT / "benchmarks" / "out" / "models"))
    args = ap.parse_args()
    cases = args.cases.split(",")
    env = dict(os.environ, PYTHONPATH=args.src, TQDM_DISABLE="1", TRITIUM_CACHE_DIR=args.cache)
    os.environ["TRITIUM_CACHE_DIR"] = args.cache
    folder_1b = Path(args.models) / "llama-3.2-1b-bf16"
    if any(CASES[c][0] == "folder-1b" for c in cases):
        write_folder_1b(folder_1b)
    gguf_1b = Path(args.models) / "llama-3.2-1b-q4_0.gguf"
    if any(CASES[c][0] == "gguf-1b" for c in cases):
        write_gguf_1b(gguf_1b)
    results: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": platform.processor() or platform.machine(),
        "src": args.src,
    }
    print(
        f"{'case':<30}{'weights':<22}{'peak anon MB':>13}{'peak RSS MB':>12}{'start s':>9}"
        f"{'cache MB':>10}"
    )
    for name in cases:
        model, kwargs = CASES[name]
        empty_cache(Path(args.cache), name)
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps([model, kwargs]), str(folder_1b), str(gguf_1b)],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        if proc.returncode != 0:
            results[name] = {"error": proc.stderr[-400:]}
            print(f"{name:<30}failed: {proc.stderr.strip().splitlines()[-1]}", flush=True)
            continue
        r = results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        r["cache_mb"] = cache_mb(Path(args.cache))
        weights = r.get("weights", "-")[:21]
        print(
            f"{name:<30}{weights:<22}{r['peak_anon_mb']:>13.0f}{r['peak_rss_mb']:>12.0f}"
            f"{r['startup_s']:>9.1f}{r['cache_mb']:>10.0f}",
            flush=True,
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
