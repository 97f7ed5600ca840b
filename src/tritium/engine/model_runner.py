"""ModelRunner: owns the model and the KV pool, turns a scheduled batch into tokens.

One step = build the batch's inputs once (token ids, positions, cache slots, attention
metadata, sampling metadata), one forward over all tokens of all sequences, logits only
at the rows that sample, one sampler call.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from dataclasses import dataclass, field

import torch

from tritium.engine.config import EngineArgs, default_cpu_kv_bytes
from tritium.engine.decode_kv import DecodeKV
from tritium.engine.layers.attention import AttentionMetadata, PrefillChunk
from tritium.engine.layers.linear import (
    embedding_formats,
    quantize_as_loaded,
    round_inputs_to_bf16,
    store_embeddings,
    weight_formats,
)
from tritium.engine.layers.sampler import Sampler, SamplingMetadata, gather_logprobs
from tritium.engine.loader.prepared import PreparedWeights, worth_caching
from tritium.engine.messages import TokenLogprobs
from tritium.engine.models import build_model
from tritium.engine.scheduler import SchedulerOutput
from tritium.engine.sequence import Sequence


@dataclass
class StepResult:
    """Sampled tokens of the rows that sampled, in the scheduler's order."""

    seqs: list[Sequence]
    token_ids: list[int]
    # Per sampled row: (token ids, logprobs, rank of the sampled token) or None.
    logprobs: list[TokenLogprobs | None]
    # The sequences that want prompt logprobs and computed prompt positions this step:
    # those positions' (token ids, logprobs, rank), in order, from num_prompt_logprobs on.
    prompt_logprobs: list[tuple[Sequence, list[TokenLogprobs]]] = field(default_factory=list)


#: Prompt positions whose logits are computed at once for prompt_logprobs (a position's
#: fp32 logits take vocab_size * 4 bytes).
PROMPT_LOGPROBS_ROWS = 256


def batch_order(num_new_tokens: list[int]) -> list[int]:
    """The order of a step's scheduled sequences in its flattened batch: the single-token
    queries first (batched decode attention), then the prompt chunks, each in scheduling
    order (how ModelRunner._prepare and GpuExecutor.prepare lay a step out)."""
    return sorted(range(len(num_new_tokens)), key=lambda i: num_new_tokens[i] != 1)


def first_rows(num_new_tokens: list[int]) -> list[int]:
    """Where each scheduled sequence's tokens start in a step's flattened batch."""
    rows, row = [0] * len(num_new_tokens), 0
    for i in batch_order(num_new_tokens):
        rows[i] = row
        row += num_new_tokens[i]
    return rows


class ModelRunner:
    """Runs the model on one device with a paged KV cache of `num_blocks` blocks."""

    def __init__(
        self,
        args: EngineArgs,
        hf_config,
        weights,
        max_model_len: int,
        quantization: str | dict[str, str] | None = None,
        cached: PreparedWeights | None = None,
        tables: str | dict[str, str] | None = None,
        kv_dtype: torch.dtype | None = None,
        bf16_matmuls: bool = False,
    ) -> None:
        """`cached`: the cache entry of these weights in `quantization`'s formats
        (loader/prepared.py), read instead of `weights` when it exists, written when not
        (for formats worth it); None loads from `weights` alone. `tables`: the formats of
        the embedding tables (engine_core.resolve_table_formats), `quantization`'s when
        None. `kv_dtype`: the KV cache's (engine_core.resolve_kv_cache_dtype), the compute
        dtype when None. `bf16_matmuls`: the layers with bf16 weights compute bf16 matmuls
        (linear.round_inputs_to_bf16; engine_core.bf16_matmuls_on_cpu)."""
        self.device = args.resolved_device()
        self.dtype = args.resolved_dtype()
        self.kv_dtype = self.dtype if kv_dtype is None else kv_dtype
        self.block_size = args.block_size
        self.vocab_size = hf_config.vocab_size
        self.max_model_len = max_model_len
        if self.device.type == "cpu":
            torch.set_num_threads(len(os.sched_getaffinity(0)))
        torch.manual_seed(args.seed)
        default_dtype = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            with torch.device(self.device):
                self.model = build_model(hf_config, max_model_len)
        finally:
            torch.set_default_dtype(default_dtype)
        plan = {} if quantization is None else weight_formats(self.model, quantization)
        tables = quantization if tables is None else tables
        if tables is not None:
            store_embeddings(self.model, embedding_formats(self.model, tables))
        if cached is not None and not worth_caching(self.model, plan):
            cached = None
        if cached is None or not cached.load(self.model, plan):
            self.model.load_weights(quantize_as_loaded(self.model, plan, weights))
            if cached is not None:
                cached.save(self.model)
        if bf16_matmuls:
            round_inputs_to_bf16(self.model)
        #: How the linear layers' weights are stored, e.g. "q4 x210, q8 x1"; None: dtype.
        counts = sorted(Counter(plan.values()).items())
        self.quantization = ", ".join(f"{k} x{n}" for k, n in counts) or None
        self.model.eval()
        self.sampler = Sampler()
        self.attn_layers = self.model.attention_layers
        first = self.attn_layers[0]
        self.num_kv_heads, self.head_dim = first.num_kv_heads, first.head_dim
        self.num_blocks = self._num_blocks(args)
        # Zeroed, as vLLM does: a padded decode batch reads slots no token was written to
        # (masked out), and recycled memory could hold NaN bit patterns, which a mask
        # cannot hide (NaN - inf is NaN; 0 * NaN is NaN).
        self.kv_cache = torch.zeros(
            2, len(self.attn_layers), self.num_blocks, self.block_size, self.num_kv_heads,
            self.head_dim, dtype=self.kv_dtype, device=self.device,
        )  # fmt: skip
        for i, layer in enumerate(self.attn_layers):
            layer.k_cache, layer.v_cache = self.kv_cache[0, i], self.kv_cache[1, i]
            layer.layer_idx = i
        # CPU: the decode batch's context kept contiguous across steps (decode_kv.py).
        self.decode_kv = DecodeKV(self.kv_cache) if self.device.type == "cpu" else None
        self.gpu = None  # CUDA: Triton paged attention + CUDA graphs (cuda_graphs.py)
        if self.device.type == "cuda":
            from tritium.engine.layers.paged_attention_triton import HAS_TRITON

            if HAS_TRITON:
                from tritium.engine.cuda_graphs import GpuExecutor

                self.gpu = GpuExecutor(self, args.max_num_seqs, args.enforce_eager)

    @functools.cached_property
    def sliding_window(self) -> int | None:
        """The window of the model's sliding-window layers; None when every layer attends
        to its whole context. Models here have one window (Qwen2 mixes it with full layers)."""
        windows = {layer.sliding_window for layer in self.attn_layers} - {None}
        if len(windows) > 1:
            raise ValueError(f"layers with different sliding windows are unsupported: {windows}")
        return windows.pop() if windows else None

    @property
    def block_bytes(self) -> int:
        """Bytes of one block across all layers, keys and values."""
        elt = torch.empty(0, dtype=self.kv_dtype).element_size()
        return 2 * len(self.attn_layers) * self.block_size * self.num_kv_heads * self.head_dim * elt

    def _num_blocks(self, args: EngineArgs) -> int:
        if args.num_gpu_blocks_override is not None:
            return args.num_gpu_blocks_override
        if self.device.type == "cuda":
            return self._profile_cuda_blocks(args)
        by_memory = (args.kv_cache_memory_bytes or default_cpu_kv_bytes()) // self.block_bytes
        # No more than every sequence at full length could use (small models, big budgets).
        by_need = args.max_num_seqs * -(-self.max_model_len // self.block_size)
        return max(1, min(by_memory, by_need))

    def _profile_cuda_blocks(self, args: EngineArgs) -> int:
        """vLLM's sizing: run the largest batch once without a cache to measure the peak,
        then give the pool what is left of gpu_memory_utilization of the device."""
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        n = args.max_num_batched_tokens
        with torch.inference_mode():
            ids = torch.zeros(n, dtype=torch.long, device=self.device)
            pos = torch.arange(n, device=self.device) % 1024
            for layer in self.attn_layers:  # a throwaway one-block cache per layer
                layer.k_cache = torch.empty(
                    -(-n // self.block_size), self.block_size, self.num_kv_heads, self.head_dim,
                    dtype=self.dtype, device=self.device,
                )  # fmt: skip
                layer.v_cache = torch.empty_like(layer.k_cache)
            meta = AttentionMetadata(
                slot_mapping=torch.arange(n, device=self.device), prefills=[PrefillChunk(0, n, 0)]
            )
            hidden = self.model(ids, pos, meta)
            self.model.compute_logits(hidden[-min(n, args.max_num_seqs) :])
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device)
        for layer in self.attn_layers:
            layer.k_cache = layer.v_cache = torch.empty(0)
        free, total = torch.cuda.mem_get_info(self.device)
        used_by_others = total - free - torch.cuda.memory_reserved(self.device)
        budget = total * args.gpu_memory_utilization - peak - used_by_others
        if budget < self.block_bytes:
            raise RuntimeError(
                f"no room for a KV cache: {peak / 2**30:.2f} GiB used by the model at peak, "
                f"gpu_memory_utilization={args.gpu_memory_utilization} of {total / 2**30:.1f} GiB"
            )
        return int(budget // self.block_bytes)

    @torch.inference_mode()
    def execute(self, out: SchedulerOutput) -> StepResult:
        if self.gpu is not None:
            hidden, sample_rows, sample_seqs = self.gpu.forward(out)
        else:
            ids, positions, meta, sample_rows, sample_seqs = self._prepare(out)
            hidden = self.model(ids, positions, meta)
        prompt_logprobs = self._prompt_logprobs(out, hidden)
        if not sample_rows:
            return StepResult([], [], [], prompt_logprobs)
        logits = self.model.compute_logits(hidden[sample_rows])
        md = SamplingMetadata.build(sample_seqs, self.vocab_size, self.device)
        so = self.sampler(logits, md)
        tokens = so.token_ids.tolist()
        logprobs: list[TokenLogprobs | None] = [None] * len(tokens)
        if so.logprobs is not None:
            # The sampler sets logprob_token_ids and ranks whenever it sets logprobs.
            assert so.logprob_token_ids is not None and so.ranks is not None
            lp, lp_ids, ranks = (
                so.logprobs.tolist(),
                so.logprob_token_ids.tolist(),
                so.ranks.tolist(),
            )
            for i, seq in enumerate(sample_seqs):
                k = seq.params.logprobs
                if k is not None:
                    logprobs[i] = (lp_ids[i][: k + 1], lp[i][: k + 1], ranks[i])
        return StepResult(sample_seqs, tokens, logprobs, prompt_logprobs)

    def _prompt_logprobs(
        self, out: SchedulerOutput, hidden: torch.Tensor
    ) -> list[tuple[Sequence, list[TokenLogprobs]]]:
        """The prompt logprobs this step's rows give: position p's logits score prompt token
        p + 1 (the last prompt position samples instead). Positions a preempted sequence
        already reported are not reported again; the prefix cache never skips positions
        not yet reported (BlockManager.get_computed_blocks), so they follow on."""
        found = []
        rows: list[int] | None = None
        for i, (seq, n) in enumerate(zip(out.seqs, out.num_new_tokens, strict=True)):
            k = seq.params.prompt_logprobs
            start = max(seq.num_computed_tokens, seq.num_prompt_logprobs)
            end = min(seq.num_computed_tokens + n, seq.num_prompt_tokens - 1)
            if k is None or start >= end:
                continue
            rows = rows or first_rows(out.num_new_tokens)
            first = rows[i] - seq.num_computed_tokens  # the row of position 0
            entries: list[TokenLogprobs] = []
            for a in range(start, end, PROMPT_LOGPROBS_ROWS):
                b = min(a + PROMPT_LOGPROBS_ROWS, end)
                logits = self.model.compute_logits(hidden[first + a : first + b]).float()
                targets = torch.tensor(seq.token_ids[a + 1 : b + 1], device=self.device)
                lps, ids, ranks = gather_logprobs(torch.log_softmax(logits, dim=-1), targets, k)
                entries += zip(ids.tolist(), lps.tolist(), ranks.tolist(), strict=True)
            found.append((seq, entries))
        return found

    def _prepare(self, out: SchedulerOutput):
        """Flatten the batch: single-token queries first (batched decode attention), then
        prompt chunks. Rows to sample are returned in the scheduler's order."""
        bs = self.block_size
        seqs, nums = out.seqs, out.num_new_tokens
        order = batch_order(nums)
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        tables: list[list[int]] = []
        ctx_lens: list[int] = []
        decode_seqs: list[Sequence] = []
        prefills: list[PrefillChunk] = []
        last_row = [0] * len(seqs)
        for i in order:
            seq, n = seqs[i], nums[i]
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + nums[i]
            row = len(ids)
            ids += seq.token_ids[start:end]
            positions += range(start, end)
            bt = seq.block_table
            slots += [bt[p // bs] * bs + p % bs for p in range(start, end)]
            last_row[i] = row + n - 1
            if n == 1:
                tables.append(bt)
                ctx_lens.append(end)
                decode_seqs.append(seq)
            else:
                prefills.append(self._prefill_chunk(row, n, start, bt))
        dev = self.device
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.long, device=dev),
            num_decodes=len(tables),
            prefills=prefills,
        )
        if tables:
            self._prepare_decodes(meta, decode_seqs, tables, ctx_lens)
        elif self.decode_kv is not None:
            self.decode_kv.invalidate()
        sample = [
            i
            for i in range(len(seqs))
            if seqs[i].num_computed_tokens + nums[i] == seqs[i].num_tokens
        ]
        return (
            torch.tensor(ids, dtype=torch.long, device=dev),
            torch.tensor(positions, dtype=torch.long, device=dev),
            meta,
            [last_row[i] for i in sample],
            [seqs[i] for i in sample],
        )

    def _prepare_decodes(
        self,
        meta: AttentionMetadata,
        seqs: list[Sequence],
        tables: list[list[int]],
        ctx_lens: list[int],
    ) -> None:
        dev, n = self.device, max(ctx_lens)
        meta.decode_len = n
        if len(tables) > 1:  # one sequence attends to exactly its context: no mask
            # Additive, in the model's dtype: SDPA would convert a bool mask in every layer.
            ctx = torch.tensor(ctx_lens, device=dev)
            pad = torch.arange(n, device=dev) >= ctx.unsqueeze(1)
            mask = torch.zeros(pad.shape, dtype=self.dtype, device=dev)
            meta.decode_mask = mask.masked_fill_(pad, float("-inf"))[:, None, None, :]
        w = self.sliding_window
        if w is not None and n > w:  # the window hides keys: windowed layers skip them
            self._window_decodes(meta, ctx_lens, w)
        dense = self.decode_kv.prepare(seqs, ctx_lens, tables) if self.decode_kv else None
        if dense is not None:
            meta.decode_views, meta.decode_rows = dense
            return
        width = max(len(t) for t in tables)
        meta.block_tables = torch.tensor(
            [t + [0] * (width - len(t)) for t in tables], dtype=torch.long, device=dev
        )

    def _window_decodes(self, meta: AttentionMetadata, ctx_lens: list[int], w: int) -> None:
        """The query at position c - 1 sees keys [c - w, c): windowed layers read keys from
        the shortest row's first visible one, masking what each row must not see."""
        n, shortest, dev = meta.decode_len, min(ctx_lens), self.device
        lo = max(0, shortest - w)
        meta.window_decode_start = lo
        if shortest == n:  # every row sees exactly keys [lo, n): no mask
            return
        k_pos = torch.arange(lo, n, device=dev)
        ctx = torch.tensor(ctx_lens, device=dev).unsqueeze(1)
        hide = (k_pos >= ctx) | (k_pos < ctx - w)
        mask = torch.zeros(hide.shape, dtype=self.dtype, device=dev)
        meta.window_decode_mask = mask.masked_fill_(hide, float("-inf"))[:, None, None, :]

    def _prefill_chunk(self, row: int, n: int, start: int, bt: list[int]) -> PrefillChunk:
        chunk = PrefillChunk(row, row + n, start)
        w = self.sliding_window
        if w is not None and start + n > w:  # the window hides keys from the last queries
            # Query p sees keys (p - w, p]; none of the chunk sees keys before window_start.
            lo = max(0, start - w + 1)
            q_pos = torch.arange(start, start + n, device=self.device).unsqueeze(1)
            k_pos = torch.arange(lo, start + n, device=self.device).unsqueeze(0)
            chunk.window_start = lo
            chunk.window_mask = (k_pos <= q_pos) & (k_pos > q_pos - w)
        if start:
            end, bs, dev = start + n, self.block_size, self.device
            blocks = torch.tensor(bt[: -(-end // bs)], dtype=torch.long, device=dev)
            chunk.kv_slots = (blocks.unsqueeze(1) * bs + torch.arange(bs, device=dev)).flatten()[
                :end
            ]
            q_pos = torch.arange(start, end, device=dev).unsqueeze(1)
            chunk.mask = torch.arange(end, device=dev).unsqueeze(0) <= q_pos
        return chunk
