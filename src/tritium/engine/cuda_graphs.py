"""The CUDA step: batch inputs for the Triton paged-attention path, and CUDA graphs of
decode-only steps.

`GpuExecutor.forward(sched)` turns a scheduled batch into hidden states. A decode-only batch
of B <= max_num_seqs sequences is padded to the next captured size and replayed from a CUDA
graph (static input buffers, copied into each step; padded rows write no KV and attend to
nothing). Any batch with a prompt chunk runs eagerly; all its prompt chunks go through one
varlen prefill launch per layer.
"""

from __future__ import annotations

import numpy as np
import torch

from tritium.engine.layers import fused_ops_triton
from tritium.engine.layers.paged_attention_triton import (
    PagedMetadata,
    num_decode_splits,
    prefill_tiles,
)
from tritium.engine.scheduler import SchedulerOutput
from tritium.engine.sequence import Sequence


def capture_sizes(max_num_seqs: int) -> list[int]:
    """1, 2, 4, 8, then every multiple of 16, up to and including max_num_seqs."""
    sizes = [s for s in (1, 2, 4, 8) if s < max_num_seqs]
    sizes += list(range(16, max_num_seqs, 16))
    return sorted({*sizes, max_num_seqs})


class GpuExecutor:
    """Runs the runner's model on CUDA through the Triton kernels, with CUDA graphs."""

    def __init__(self, runner, max_num_seqs: int, enforce_eager: bool) -> None:
        self.runner = runner
        self.model = runner.model
        self.device = runner.device
        self.block_size = runner.block_size
        self.max_blocks = -(-runner.max_model_len // self.block_size)
        self.num_kv_heads = runner.num_kv_heads
        # CPU tensors: the tests run this step through Triton's interpreter (no graphs).
        on_cuda = self.device.type == "cuda"
        self.num_sms = 1
        if on_cuda:
            self.num_sms = torch.cuda.get_device_properties(self.device).multi_processor_count
        self.max_num_seqs = max_num_seqs
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        fused_ops_triton.use_triton_ops(self.model)
        self.use_graphs = on_cuda and not enforce_eager
        if self.use_graphs:
            self.capture()

    # ---- inputs --------------------------------------------------------------------------

    def _to_dev(self, arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(arr).to(self.device, non_blocking=True)

    def prepare(self, out: SchedulerOutput):
        """(ids, positions, meta, rows to sample, their sequences), decodes first."""
        bs = self.block_size
        seqs, nums = out.seqs, out.num_new_tokens
        dec = [i for i in range(len(seqs)) if nums[i] == 1]
        pre = [i for i in range(len(seqs)) if nums[i] != 1]
        total = sum(nums)
        ids = np.empty(total, np.int64)
        pos = np.empty(total, np.int64)
        slots = np.empty(total, np.int64)
        last_row = [0] * len(seqs)
        nd = len(dec)
        dec_bt: np.ndarray | None = None
        dec_ctx: np.ndarray | None = None
        if nd:
            width = max(len(seqs[i].block_table) for i in dec)
            dec_bt = np.zeros((nd, width), np.int32)
            dec_ctx = np.empty(nd, np.int32)
            for r, i in enumerate(dec):
                seq = seqs[i]
                p = seq.num_computed_tokens
                bt = seq.block_table
                ids[r] = seq.token_ids[p]
                pos[r] = p
                slots[r] = bt[p // bs] * bs + p % bs
                dec_bt[r, : len(bt)] = bt
                dec_ctx[r] = p + 1
                last_row[i] = r
        meta = PagedMetadata(slot_mapping=torch.empty(0), num_decodes=nd)
        row = nd
        if pre:
            q_start, q_len, ctx_len, tables = [], [], [], []
            for i in pre:
                seq, n = seqs[i], nums[i]
                start = seq.num_computed_tokens
                chunk_pos = np.arange(start, start + n)
                chunk_bt = np.asarray(seq.block_table, np.int64)
                ids[row : row + n] = seq.token_ids[start : start + n]
                pos[row : row + n] = chunk_pos
                slots[row : row + n] = chunk_bt[chunk_pos // bs] * bs + chunk_pos % bs
                q_start.append(row)
                q_len.append(n)
                ctx_len.append(start)
                tables.append(seq.block_table[: -(-(start + n) // bs)])
                last_row[i] = row + n - 1
                row += n
            width = max(len(t) for t in tables)
            pbt = np.zeros((len(pre), width), np.int32)
            for j, table in enumerate(tables):
                pbt[j, : len(table)] = table
            tile_chunk, tile_m0 = prefill_tiles(q_len)
            ints = np.array(q_start + q_len + ctx_len + tile_chunk + tile_m0, np.int32)
            ints_dev = self._to_dev(ints)
            c, t = len(pre), len(tile_chunk)
            meta.prefill_q_start = ints_dev[:c]
            meta.prefill_q_len = ints_dev[c : 2 * c]
            meta.prefill_context_len = ints_dev[2 * c : 3 * c]
            meta.prefill_tile_chunk = ints_dev[3 * c : 3 * c + t]
            meta.prefill_tile_m0 = ints_dev[3 * c + t :]
            meta.prefill_block_tables = self._to_dev(pbt)
            meta.num_prefill_tiles = t
        if nd:
            assert dec_bt is not None and dec_ctx is not None  # built above when nd > 0
            meta.decode_block_tables = self._to_dev(dec_bt)
            meta.decode_context_lens = self._to_dev(dec_ctx)
            meta.decode_splits = num_decode_splits(
                nd, self.num_kv_heads, int(dec_ctx.max()), self.num_sms
            )
        meta.slot_mapping = self._to_dev(slots)
        sample = [
            i
            for i in range(len(seqs))
            if seqs[i].num_computed_tokens + nums[i] == seqs[i].num_tokens
        ]
        return (
            self._to_dev(ids),
            self._to_dev(pos),
            meta,
            [last_row[i] for i in sample],
            [seqs[i] for i in sample],
        )

    # ---- CUDA graphs ---------------------------------------------------------------------

    def _static_meta(self, n: int) -> PagedMetadata:
        return PagedMetadata(
            slot_mapping=self.s_slots[:n],
            num_decodes=n,
            decode_block_tables=self.s_bt[:n],
            decode_context_lens=self.s_ctx[:n],
            decode_splits=num_decode_splits(
                n, self.num_kv_heads, self.runner.max_model_len, self.num_sms
            ),
        )

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture one graph per padded decode batch size, largest first (one memory pool)."""
        m, dev = self.max_num_seqs, self.device
        self.s_ids = torch.zeros(m, dtype=torch.long, device=dev)
        self.s_pos = torch.zeros(m, dtype=torch.long, device=dev)
        self.s_slots = torch.full((m,), -1, dtype=torch.long, device=dev)
        self.s_bt = torch.zeros(m, self.max_blocks, dtype=torch.int32, device=dev)
        self.s_ctx = torch.zeros(m, dtype=torch.int32, device=dev)
        pool = None
        stream = torch.cuda.Stream(dev)
        stream.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(stream):
            for n in sorted(capture_sizes(m), reverse=True):
                meta = self._static_meta(n)
                for _ in range(2):  # compile the Triton kernels outside the capture
                    self.model(self.s_ids[:n], self.s_pos[:n], meta)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool, stream=stream):
                    hidden = self.model(self.s_ids[:n], self.s_pos[:n], meta)
                pool = graph.pool()
                self.graphs[n] = (graph, hidden)
        torch.cuda.current_stream(dev).wait_stream(stream)
        torch.cuda.synchronize(dev)

    def _graph_size(self, n: int) -> int | None:
        for size in sorted(self.graphs):
            if size >= n:
                return size
        return None

    def _replay(self, out: SchedulerOutput, size: int):
        """A decode-only batch through the graph captured for `size` rows."""
        bs = self.block_size
        seqs = out.seqs
        n = len(seqs)
        ints = np.zeros((4, size), np.int64)  # ids, positions, slots, context lengths
        ints[2, n:] = -1
        width = max(len(s.block_table) for s in seqs)
        bt = np.zeros((n, width), np.int32)
        for r, seq in enumerate(seqs):
            p = seq.num_computed_tokens
            table = seq.block_table
            ints[0, r] = seq.token_ids[p]
            ints[1, r] = p
            ints[2, r] = table[p // bs] * bs + p % bs
            ints[3, r] = p + 1
            bt[r, : len(table)] = table
        dev_ints = self._to_dev(ints)
        self.s_ids[:size].copy_(dev_ints[0])
        self.s_pos[:size].copy_(dev_ints[1])
        self.s_slots[:size].copy_(dev_ints[2])
        self.s_ctx[:size].copy_(dev_ints[3])
        self.s_bt[:n, :width].copy_(self._to_dev(bt))
        graph, hidden = self.graphs[size]
        graph.replay()
        return hidden[:n]

    # ---- the step ------------------------------------------------------------------------

    def forward(self, out: SchedulerOutput) -> tuple[torch.Tensor, list[int], list[Sequence]]:
        """Hidden states of the batch, the rows to sample and their sequences."""
        if self.use_graphs and all(n == 1 for n in out.num_new_tokens):
            size = self._graph_size(len(out.seqs))
            if size is not None:
                hidden = self._replay(out, size)
                # A 1-token step of a longer prompt (budget cut) samples nothing.
                rows = [
                    r for r, s in enumerate(out.seqs) if s.num_computed_tokens + 1 == s.num_tokens
                ]
                return hidden, rows, [out.seqs[r] for r in rows]
        ids, positions, meta, rows, seqs = self.prepare(out)
        return self.model(ids, positions, meta), rows, seqs
