"""EngineCore: the schedule -> execute -> update loop. Owns the scheduler and the model
runner; knows nothing of text. Runs in the caller's process or its own (core_client)."""

from __future__ import annotations

import dataclasses
import logging

import torch

from tritium.engine.block_manager import BlockManager
from tritium.engine.config import CPU_WEIGHT_FORMATS, KV_CACHE_DTYPES, EngineArgs
from tritium.engine.layers import quant_kernel
from tritium.engine.loader import (
    Checkpoint,
    gguf,
    gguf_source,
    hf_folder,
    load_checkpoint,
    prepared,
)
from tritium.engine.messages import (
    EngineCoreInfo,
    EngineCoreOutput,
    EngineCoreOutputs,
    EngineCoreRequest,
    SchedulerStats,
)
from tritium.engine.model_runner import ModelRunner
from tritium.engine.scheduler import Scheduler
from tritium.engine.sequence import Sequence

DEFAULT_MAX_MODEL_LEN = 8192  # cap when the config allows more and none is asked for

log = logging.getLogger("tritium.engine")


def bf16_matmuls_on_cpu(args: EngineArgs) -> bool:
    """Whether dtype bfloat16 on CPU runs on our kernels: the weights in bf16, each matmul a
    bf16 one (inputs rounded to bf16, products summed in fp32, on AMX where the CPU has it),
    and the rest of a step (norms, RoPE, attention, the residual stream) in fp32 through the
    C ops, with a bf16 KV cache by default. torch's bf16 ops dispatch ~40 ops per layer and
    run decode-sized matmuls slowly (benchmarks/RESULTS.md, "bf16 on CPU"). Not for a
    quantized GGUF file or an explicit `quantization`: those weights keep their formats."""
    if args.resolved_device().type != "cpu" or args.resolved_dtype() != torch.bfloat16:
        return False
    if args.quantization is not None or not quant_kernel.is_available():
        return False
    return not is_quantized_gguf(args)


def is_quantized_gguf(args: EngineArgs) -> bool:
    """Whether the model is a GGUF file with quantized weights (dummy weights are not)."""
    if args.load_format == "dummy":
        return False
    source = gguf_source(args.model, args.revision)
    return source is not None and bool(gguf.quantized_weight_formats(source))


def engine_dtype(args: EngineArgs) -> torch.dtype:
    """The dtype the engine's activations are in: `args`' own, except fp32 for bf16 on our
    CPU kernels (bf16_matmuls_on_cpu) and, for 'auto', for a model that runs in a CPU
    weight format. On a CPU with native bf16 'auto' means bf16, which would pass the weights
    through bf16 on their way to the kernels (moving a Q4_1 file's blocks, and converting a
    GGUF file twice), while the kernels compute in fp32 anyway."""
    dtype = args.resolved_dtype()
    if bf16_matmuls_on_cpu(args):
        return torch.float32
    if (
        args.dtype != "auto"
        or dtype == torch.float32
        or args.resolved_device().type != "cpu"
        or args.load_format == "dummy"
    ):
        return dtype
    if args.quantization in CPU_WEIGHT_FORMATS:
        return torch.float32
    if args.quantization is None and is_quantized_gguf(args):
        return torch.float32 if quant_kernel.is_available() else dtype
    return dtype


def load_engine_checkpoint(args: EngineArgs, progress: bool = True) -> Checkpoint:
    """The loader call both sides of the engine make (the frontend for its tokenizer)."""
    return load_checkpoint(
        args.model,
        revision=args.revision,
        load_format=args.load_format,
        dtype=engine_dtype(args),
        progress=progress,
        tokenizer=args.tokenizer,
        seed=args.seed,
        convert_gguf=False,  # EngineCore converts only when the run does not cache its own
    )


def resolve_quantization(args: EngineArgs, ckpt: Checkpoint) -> str | dict[str, str] | None:
    """The weight format the model runs in: one format for every layer ("q4", "q8", "int8",
    "bf16", "fp16"), a format per checkpoint weight name, or None (every weight in
    ``args.dtype``).

    Unset follows the checkpoint on CPU, when our kernels build here (dequantized
    otherwise). A GGUF file's quantized weights run quantized, as vLLM does: 4-bit types
    as "q4" and Q8_0 as "q8" (the blocks kept exactly, inputs quantized to 8 bits per
    block as llama.cpp does), other wider types as "int8" (inputs stay fp32). When the
    model computes in fp32,
    weights stored as bf16 or fp16 stay so: the kernels widen them exactly, so the math is
    fp32's on the same values, reading half the bytes.
    """
    on_cpu = args.resolved_device().type == "cpu"
    if args.quantization in CPU_WEIGHT_FORMATS:
        if not on_cpu:
            raise ValueError(
                f"quantization={args.quantization!r} is a CPU weight format; on CUDA the "
                "weights run in dtype (bf16 by default)"
            )
        quant_kernel.ensure_available()
        return args.quantization
    if args.quantization is not None or not on_cpu:
        return None
    formats = stored_half_formats(ckpt)
    if ckpt.gguf_file is not None:
        formats |= gguf.quantized_weight_formats(ckpt.gguf_file)
    return formats if formats and quant_kernel.is_available() else None


#: The CPU weight formats whose models keep an fp16 KV cache by default.
QUANTIZED_FORMATS = frozenset({"q4", "q8", "int8"})


def resolve_kv_cache_dtype(
    args: EngineArgs, dtype: torch.dtype, quantization: str | dict[str, str] | None = None
) -> torch.dtype:
    """The KV cache's dtype: `args.kv_cache_dtype`, or for "auto" the compute dtype,
    except fp16 on CPU for a model with quantized weights (`quantization` as
    resolve_quantization gives it), as llama.cpp's default cache type is: half the bytes
    each decode step reads (+7% at 20 concurrent streams of SmolLM2) and twice the tokens
    in the same memory, for a log-loss within the measure's noise (benchmarks/RESULTS.md).
    On CPU a 16-bit cache under fp32 math is read by the C ops, which widen its rows; on
    CUDA the cache is in the compute dtype."""
    if args.kv_cache_dtype == "auto":
        formats = (
            {quantization} if isinstance(quantization, str) else set((quantization or {}).values())
        )
        on_cpu = args.resolved_device().type == "cpu"
        return torch.float16 if on_cpu and formats & QUANTIZED_FORMATS else dtype
    kv = KV_CACHE_DTYPES[args.kv_cache_dtype]
    if kv != dtype and args.resolved_device().type != "cpu":
        raise ValueError(
            f"kv_cache_dtype={args.kv_cache_dtype!r}: on CUDA the cache is in the compute "
            f"dtype ({str(dtype).removeprefix('torch.')})"
        )
    return kv


def stored_half_formats(ckpt: Checkpoint) -> dict[str, str]:
    """The weights the checkpoint stores as bf16 or fp16 ("bf16", "fp16" by name) when the
    model computes in fp32; none otherwise (they are cast to the compute dtype anyway)."""
    if ckpt.dtype != torch.float32:
        return {}
    if ckpt.gguf_file is not None:
        return gguf.half_weight_formats(ckpt.gguf_file)
    return hf_folder.half_weight_formats(ckpt.weight_files, ckpt.load_format)


def resolve_table_formats(
    ckpt: Checkpoint, quantization: str | dict[str, str] | None
) -> str | dict[str, str] | None:
    """The formats the embedding tables take (read by linear.embedding_formats): those of
    `quantization`, except that "q4", "q8" or "int8" for every layer keeps a table the
    checkpoint stores in 16 bits as it is. Tables stay out of those (a looked-up row must come back
    exact), so without this they would widen to fp32: twice the bytes, for the same values.
    """
    if quantization in ("q4", "q8", "int8"):
        return stored_half_formats(ckpt)
    return quantization


class EngineCore:
    """One model's engine: add requests, step, read outputs."""

    def __init__(self, args: EngineArgs, ckpt: Checkpoint | None = None) -> None:
        bf16_matmuls = bf16_matmuls_on_cpu(args)
        ckpt = ckpt or load_engine_checkpoint(args)
        if args.dtype == "auto" or bf16_matmuls:  # as load_engine_checkpoint resolved it
            args = dataclasses.replace(args, dtype=str(ckpt.dtype).removeprefix("torch."))
        cfg = ckpt.hf_config
        max_len = args.max_model_len or min(
            getattr(cfg, "max_position_embeddings", DEFAULT_MAX_MODEL_LEN), DEFAULT_MAX_MODEL_LEN
        )
        quantization = "bf16" if bf16_matmuls else resolve_quantization(args, ckpt)
        if quantization is None:
            # Weights in plain dtype are read from a GGUF file's conversion, made once. With
            # CPU formats they stream from the file: what they become is cached instead
            # (prepared weights), so no full-precision copy is ever written.
            ckpt = ckpt.converted()
        tables = resolve_table_formats(ckpt, quantization)
        cached = None
        if quantization is not None:
            cached = prepared.for_checkpoint(ckpt, quantization, tables)
        kv_dtype = resolve_kv_cache_dtype(
            args, torch.bfloat16 if bf16_matmuls else ckpt.dtype, quantization
        )
        self.runner = ModelRunner(
            args, cfg, ckpt.weights(), max_len, quantization, cached, tables=tables,
            kv_dtype=kv_dtype, bf16_matmuls=bf16_matmuls,
        )  # fmt: skip
        # One sequence must always fit in the pool, or it would preempt itself forever.
        self.max_model_len = min(max_len, self.runner.num_blocks * args.block_size)
        self.block_manager = BlockManager(
            self.runner.num_blocks, args.block_size, args.enable_prefix_caching
        )
        self.scheduler = Scheduler(
            self.block_manager, args.max_num_seqs, args.max_num_batched_tokens, self.max_model_len
        )
        self.eos_token_ids = list(ckpt.eos_token_ids)
        self.info = EngineCoreInfo(
            max_model_len=self.max_model_len,
            num_blocks=self.runner.num_blocks,
            block_size=args.block_size,
            vocab_size=cfg.vocab_size,
            eos_token_ids=self.eos_token_ids,
        )
        self._arrivals = 0
        self.stats = SchedulerStats(num_blocks=self.runner.num_blocks)

    def add_request(self, req: EngineCoreRequest) -> None:
        validate_prompt(req.prompt_token_ids, self.info)
        params = req.sampling_params
        params.all_stop_token_ids = self.eos_token_ids
        self._arrivals += 1
        seq = Sequence(req.request_id, req.prompt_token_ids, params, self._arrivals, req.priority)
        if params.seed is not None:
            seq.generator = torch.Generator(self.runner.device).manual_seed(params.seed % 2**64)
        self.scheduler.add(seq)

    def abort_requests(self, request_ids: list[str]) -> None:
        for rid in request_ids:
            self.scheduler.abort(rid)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished()

    def step(self) -> EngineCoreOutputs:
        """Schedule one batch, run it, and report every request that got a token."""
        sched = self.scheduler.schedule()
        if not sched.seqs:
            return EngineCoreOutputs(outputs=[], stats=self.get_stats())
        prompt_tokens = sum(
            min(n, max(s.num_prompt_tokens - s.num_computed_tokens, 0))
            for s, n in zip(sched.seqs, sched.num_new_tokens, strict=True)
        )
        result = self.runner.execute(sched)
        for seq, entries in result.prompt_logprobs:  # sent with the first token
            seq.pending_prompt_logprobs += entries
            seq.num_prompt_logprobs += len(entries)
        updates = self.scheduler.update(sched, result.token_ids)
        lp_of = {id(s): lp for s, lp in zip(result.seqs, result.logprobs, strict=True)}
        outputs = []
        for u in updates:
            seq = u.seq
            lp = lp_of.get(id(seq))
            prompt_lps, seq.pending_prompt_logprobs = seq.pending_prompt_logprobs, []
            outputs.append(
                EngineCoreOutput(
                    request_id=seq.request_id,
                    new_token_ids=[u.new_token_id],
                    new_logprobs=[lp] if lp is not None else None,
                    finish_reason=seq.finish_reason if u.finished else None,
                    stop_reason=seq.stop_reason if u.finished else None,
                    new_prompt_logprobs=prompt_lps or None,
                )
            )
        st = self.stats
        st.num_steps += 1
        st.prompt_tokens += prompt_tokens
        st.generation_tokens += len(updates)
        return EngineCoreOutputs(outputs=outputs, stats=self.get_stats())

    def get_stats(self) -> SchedulerStats:
        st, bm, sc = self.stats, self.block_manager, self.scheduler
        st.num_running_reqs = len(sc.running)
        st.num_waiting_reqs = len(sc.waiting)
        st.kv_cache_usage = bm.usage
        st.prefix_cache_queries = bm.prefix_cache_queries
        st.prefix_cache_hits = bm.prefix_cache_hits
        st.num_preemptions = sc.num_preemptions
        return SchedulerStats(**{f: getattr(st, f) for f in st.__struct_fields__})


def validate_prompt(prompt_token_ids: list[int], info: EngineCoreInfo) -> None:
    """ValueError for a prompt the engine cannot serve."""
    n = len(prompt_token_ids)
    if n == 0:
        raise ValueError("the prompt is empty")
    if n >= info.max_model_len:
        raise ValueError(
            f"the prompt has {n} tokens, but max_model_len is {info.max_model_len} "
            "(room is needed for at least one generated token)"
        )
    bad = [t for t in prompt_token_ids if not 0 <= t < info.vocab_size]
    if bad:
        raise ValueError(f"token ids out of the vocabulary (size {info.vocab_size}): {bad[:5]}")
