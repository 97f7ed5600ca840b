"""GPU benchmark of the engine: batch-1 decode against the memory floor, and 256-request
throughput against transformers' continuous batching.

    python benchmarks/engine_gpu.py [--out DIR] [--skip-hf] [--models llama-3.2-1b,llama-3-8b]

(1) Batch-1 decode step time (CUDA graphs and eager) for dummy Llama-3.2-1B and Llama-3-8B
    in bf16, against floor = (weight bytes + KV bytes read) / bandwidth, the bandwidth
    measured here by a device-to-device copy (bytes read + written).
(2) 256 requests, seeded random input and output lengths in [100, 1024], ignore_eos:
    output tokens/s of the engine and of transformers' `generate_batch`-style continuous
    batching (same config, random weights: throughput does not depend on their values).
Writes engine_gpu.json into --out (default benchmarks/out).
"""

from __future__ import annotations

import argparse
import functools
import gc
import inspect
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from tritium.engine.config import EngineArgs
from tritium.engine.engine_core import EngineCore, load_engine_checkpoint
from tritium.engine.messages import EngineCoreRequest
from tritium.engine.sampling_params import SamplingParams

RESULTS: dict = {}


def log(*a) -> None:
    print(*a, flush=True)


def save(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "engine_gpu.json").write_text(json.dumps(RESULTS, indent=2))


def measure_bandwidth() -> float:
    """Bytes/s of a 2 GiB device-to-device copy (read + write counted), median of 20."""
    n = 1 << 30
    src = torch.randn(n // 2, dtype=torch.bfloat16, device="cuda")  # 1 GiB
    dst = torch.empty_like(src)
    times = []
    for i in range(25):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        torch.cuda.synchronize()
        if i >= 5:
            times.append(a.elapsed_time(b) / 1e3)
    del src, dst
    return 2 * n / statistics.median(times)


def make_engine(model: str, **kw) -> EngineCore:
    args = EngineArgs(model=model, load_format="dummy", dtype="bfloat16", **kw)
    ckpt = load_engine_checkpoint(args, progress=False)
    # Dummy weights are generated straight on the GPU (the CPU takes a minute for 8B).
    ckpt.weights = functools.partial(ckpt.weights, device="cuda")  # type: ignore[method-assign]
    return EngineCore(args, ckpt)


def weight_bytes(core: EngineCore) -> int:
    """Bytes a decode step reads: every parameter once; the input embedding only if tied
    (otherwise one row is gathered)."""
    model = core.runner.model
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    if not model.tie_word_embeddings:
        emb = model.model.embed_tokens.weight
        total -= emb.numel() * emb.element_size()
    return total


def batch1(model: str, bw: float, prompt_len: int = 512, new_tokens: int = 256) -> dict:
    core = make_engine(model, max_num_seqs=8, max_num_batched_tokens=2048)
    runner = core.runner
    wb = weight_bytes(core)
    kv_per_token = runner.block_bytes // runner.block_size
    rng = random.Random(1)
    res = {"weight_bytes": wb, "kv_bytes_per_token": kv_per_token, "num_blocks": runner.num_blocks}
    for mode in ("cuda_graphs", "eager"):
        if runner.gpu is not None:
            runner.gpu.use_graphs = mode == "cuda_graphs"
        prompt = [rng.randrange(1000, 30000) for _ in range(prompt_len)]
        params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
        core.add_request(EngineCoreRequest(f"b1-{mode}", prompt, params))
        times, ctxs = [], []
        while core.has_unfinished_requests():
            seq = core.scheduler.running[0] if core.scheduler.running else None
            ctx = seq.num_tokens if seq is not None else 0
            t0 = time.perf_counter()
            core.step()  # returns after the sampled token reached the host
            dt = time.perf_counter() - t0
            if seq is not None and seq.num_computed_tokens >= prompt_len:
                times.append(dt)
                ctxs.append(ctx)
        step = statistics.median(times[5:])
        ctx = statistics.median(ctxs[5:])
        floor = (wb + ctx * kv_per_token) / bw
        res[mode] = {
            "median_step_ms": step * 1e3,
            "p10_step_ms": sorted(times[5:])[len(times[5:]) // 10] * 1e3,
            "median_context": ctx,
            "floor_ms": floor * 1e3,
            "ratio_to_floor": step / floor,
            "tokens_per_s": 1 / step,
        }
        if mode == "cuda_graphs" and runner.gpu is not None and 1 in runner.gpu.graphs:
            # The graph alone (no host work): static buffers still hold the last step.
            graph = runner.gpu.graphs[1][0]
            evs = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
            graph_times = []
            for _ in range(30):
                evs[0].record()
                graph.replay()
                evs[1].record()
                torch.cuda.synchronize()
                graph_times.append(evs[0].elapsed_time(evs[1]) / 1e3)
            g = statistics.median(graph_times)
            lm_head = runner.model.lm_head.weight
            body = wb - lm_head.numel() * lm_head.element_size()  # lm_head runs after the graph
            gfloor = (body + ctxs[-1] * kv_per_token) / bw
            res[mode].update(graph_replay_ms=g * 1e3, graph_ratio_to_floor=g / gfloor)
            log(
                f"{model:14s} graph replay alone {g * 1e3:7.3f} ms (ratio {g / gfloor:5.2f}; "
                "the model body without lm_head/sampling/host work)"
            )
        log(
            f"{model:14s} {mode:11s} step {step * 1e3:7.3f} ms  floor {floor * 1e3:7.3f} ms  "
            f"ratio {step / floor:5.2f}  ({1 / step:7.1f} tok/s)"
        )
    del core, runner
    gc.collect()
    torch.cuda.empty_cache()
    return res


def workload(n: int = 256, seed: int = 0, vocab: int = 128000):
    rng = random.Random(seed)
    reqs = []
    for _ in range(n):
        i, o = rng.randint(100, 1024), rng.randint(100, 1024)
        reqs.append(([rng.randrange(1000, vocab) for _ in range(i)], o))
    return reqs


def throughput_engine(model: str, reqs) -> dict:
    core = make_engine(model, max_num_seqs=256, max_num_batched_tokens=8192)
    # Warm-up request (allocator, kernels at prefill shapes).
    core.add_request(
        EngineCoreRequest("warm", reqs[0][0], SamplingParams(max_tokens=16, ignore_eos=True))
    )
    while core.has_unfinished_requests():
        core.step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for k, (prompt, out_len) in enumerate(reqs):
        params = SamplingParams(max_tokens=out_len, temperature=0.0, ignore_eos=True)
        core.add_request(EngineCoreRequest(f"r{k}", prompt, params))
    generated = steps = 0
    while core.has_unfinished_requests():
        generated += len(core.step().outputs)
        steps += 1
    dt = time.perf_counter() - t0
    st = core.get_stats()
    res = {
        "seconds": dt,
        "output_tokens": generated,
        "output_tok_s": generated / dt,
        "total_tok_s": (generated + sum(len(p) for p, _ in reqs)) / dt,
        "steps": steps,
        "preemptions": st.num_preemptions,
        "num_blocks": core.runner.num_blocks,
    }
    log(f"tritium       {dt:7.2f} s  {generated} tokens  {generated / dt:9.1f} out tok/s")
    del core
    gc.collect()
    torch.cuda.empty_cache()
    return res


def throughput_hf(model: str, reqs, time_limit: float) -> dict:
    """transformers' continuous batching on the same config (random bf16 weights)."""
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    from tritium.engine.loader import dummy_config

    cfg = dummy_config(model)
    with torch.device("cuda"):
        hf = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    hf.eval()
    gen = GenerationConfig(max_new_tokens=1024, do_sample=False, eos_token_id=None, pad_token_id=0)
    res: dict = {"transformers": transformers.__version__}
    manager = hf.init_continuous_batching(generation_config=gen)
    add_params = inspect.signature(manager.add_request).parameters
    manager.start()
    try:
        # Warm-up (CUDA graphs / compile of the paged path).
        manager.add_request(input_ids=reqs[0][0], request_id="warm", max_new_tokens=16)
        while (r := manager.get_result(timeout=600)) is not None and r.request_id != "warm":
            pass
        t0 = time.perf_counter()
        for k, (prompt, out_len) in enumerate(reqs):
            kw = {"max_new_tokens": out_len}
            if "eos_token_id" in add_params:
                kw["eos_token_id"] = -1  # ignore_eos
            manager.add_request(input_ids=prompt, request_id=f"r{k}", **kw)
        done, tokens = 0, 0
        while done < len(reqs):
            left = time_limit - (time.perf_counter() - t0)
            if left <= 0:
                break
            r = manager.get_result(timeout=min(left, 5.0))
            if r is None:
                continue
            if r.is_finished():
                done += 1
                tokens += len(r.generated_tokens)
        dt = time.perf_counter() - t0
    finally:
        manager.stop(block=False)
    res.update(
        seconds=dt,
        finished_requests=done,
        output_tokens=tokens,
        output_tok_s=tokens / dt,
        complete=done == len(reqs),
        attn_implementation=getattr(hf.config, "_attn_implementation", None),
    )
    log(
        f"transformers  {dt:7.2f} s  {tokens} tokens  {tokens / dt:9.1f} out tok/s"
        f"  ({done}/{len(reqs)} finished)"
    )
    del hf, manager
    gc.collect()
    torch.cuda.empty_cache()
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/out")
    ap.add_argument("--models", default="llama-3.2-1b,llama-3-8b")
    ap.add_argument("--throughput-model", default="llama-3.2-1b")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--hf-time-limit", type=float, default=240.0)
    a = ap.parse_args()
    out = Path(a.out)
    RESULTS["device"] = torch.cuda.get_device_name()
    RESULTS["torch"] = torch.__version__
    RESULTS["command"] = " ".join([sys.executable, *sys.argv])
    bw = measure_bandwidth()
    RESULTS["bandwidth_GBps"] = bw / 1e9
    log(f"device {RESULTS['device']}  copy bandwidth {bw / 1e12:.2f} TB/s")
    save(out)
    RESULTS["batch1"] = {}
    for m in a.models.split(","):
        RESULTS["batch1"][m] = batch1(m, bw)
        save(out)
    if not a.skip_throughput:
        reqs = workload()
        RESULTS["throughput"] = {
            "model": a.throughput_model,
            "requests": len(reqs),
            "input_tokens": sum(len(p) for p, _ in reqs),
            "output_tokens_requested": sum(o for _, o in reqs),
        }
        RESULTS["throughput"]["tritium"] = throughput_engine(a.throughput_model, reqs)
        save(out)
        if not a.skip_hf:
            try:
                hf = throughput_hf(a.throughput_model, reqs, a.hf_time_limit)
            except Exception as exc:  # record why, keep the rest of the results
                hf = {"error": repr(exc)}
                log("transformers failed:", repr(exc))
            RESULTS["throughput"]["transformers"] = hf
            if "output_tok_s" in hf:
                RESULTS["throughput"]["speedup"] = (
                    RESULTS["throughput"]["tritium"]["output_tok_s"] / hf["output_tok_s"]
                )
            save(out)
    log(json.dumps(RESULTS, indent=1))


if __name__ == "__main__":
    main()
