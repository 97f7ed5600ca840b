"""The CPU matmuls for compact weights (csrc/quant_linear.c, built by native.py: int8,
4-bit and 8-bit blocks, and 16-bit floats widened to fp32) and the functions that quantize
weights for them."""

from __future__ import annotations

from collections.abc import Callable

import torch

from tritium.engine.layers import native
from tritium.engine.layers.native import KernelUnavailable, ensure_available, is_available

__all__ = [
    "KernelUnavailable",
    "amx_enabled",
    "bf16_linear",
    "dequantize_q4",
    "dequantize_q8",
    "ensure_available",
    "fp16_linear",
    "int8_linear",
    "is_available",
    "q4_linear",
    "q8_linear",
    "quantize_activations_q8",
    "quantize_weight_int8",
    "quantize_weight_q4",
    "quantize_weight_q8",
    "set_amx",
]  # fmt: skip

#: 4-bit block size along K: the GGUF Q4_0/Q4_1 block, so those files map block for block.
Q4_BLOCK = 32


#: Weight elements quantized at a time: the fp32 temporaries of a whole large matrix (a
#: 128k-token lm_head is 262M values) would cost several times its fp32 size at load.
_QUANTIZE_CHUNK = 1 << 22


def _by_rows(
    weight: torch.Tensor, fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """`fn` over blocks of rows of `weight`, results concatenated along the rows."""
    rows = max(1, _QUANTIZE_CHUNK // max(1, weight.shape[1]))
    if weight.shape[0] <= rows:
        return fn(weight)
    parts = [fn(block) for block in weight.split(rows)]
    return (
        torch.cat([a for a, _ in parts]).contiguous(),
        torch.cat([b for _, b in parts]).contiguous(),
    )


def quantize_weight_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-row int8: ``weight ~= q * scale[:, None]``; returns (q, scale)."""
    return _by_rows(weight, _int8_rows)


def _int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def quantize_weight_q4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks of 32 along each row as 4-bit codes with an fp16 scale and minimum each
    (``w ~= d * q + m``, Q4_1's rule: m is the block's minimum, d its range / 15).

    Returns (codes [N, K / 2] uint8, dm [N, K / 32, 2] fp16). Weights that came from a Q4_1
    GGUF come back exactly: each of their blocks holds its own minimum and maximum codes.
    Blocks already on a coarser 4-bit grid (Q4_0, Q4_K) keep their codes too, with their
    own step as d (`_grid_steps`): only the fp16 rounding of d and m remains.
    """
    return _by_rows(weight, _q4_rows)


#: Rows of a weight `_q4_rows` looks at to tell whether its blocks lie on a 4-bit grid.
_GRID_PROBE_ROWS = 8


def _q4_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n, k = weight.shape
    w = weight.detach().float().reshape(n, k // Q4_BLOCK, Q4_BLOCK)
    lo, hi = w.amin(dim=-1), w.amax(dim=-1)
    # Whether a weight came off a 4-bit grid shows in any few rows (blocks of 15 steps
    # included: most of a Q4_K file's are, and its few of 14 or fewer need the search
    # too): only then is the search over the blocks worth its time.
    head = slice(0, _GRID_PROBE_ROWS)
    if _grid_steps(w[head], lo[head], hi[head])[1].any():
        d = ((hi - lo) / _grid_steps(w, lo, hi)[0]).half()
    else:
        d = ((hi - lo) / 15.0).half()
    m = lo.half()
    # Codes from the fp16 d and m the kernel will use, so rounding happens once.
    inv = torch.where(d.float() > 0, 1.0 / d.float(), torch.zeros_like(lo))
    q = torch.round((w - m.float()[..., None]) * inv[..., None]).clamp_(0, 15).to(torch.uint8)
    codes = q[..., :16] | (q[..., 16:] << 4)
    return codes.reshape(n, k // 2).contiguous(), torch.stack((d, m), dim=-1).contiguous()


def _grid_steps(
    w: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per block of `w` [..., 32], the number of steps d that span it: 15 in general,
    fewer for a block already on a 4-bit grid ``lo + d * c`` whose integer codes c do not
    reach both 0 and 15. That is how Q4_0 blocks (scale from the largest magnitude alone)
    and Q4_K sub-blocks (a 6-bit scale and min each) dequantize; spanning them in 15 steps
    would round every code again (up to d / 2 off), their own step keeps each code. Also,
    per block, whether it lies on such a grid (of 15 steps included)."""
    steps = torch.full_like(lo, 15.0)
    # Blocks on the 15-step grid need no search (all of a Q4_1 file's, most of a Q4_K's).
    todo = ~_on_steps(w, lo, hi - lo, steps)
    # Candidate grid steps, each tried on the blocks the ones before did not fit: Q4_0's,
    # whose largest magnitude is code 0 of step d (the value -8d); then the gap from either
    # extreme to its nearest value (Q4_K and other grids, when a neighbour code of an
    # extreme is there, as it nearly always is among 32 values); then the smallest gap.
    for candidate in (_q4_0_step, _neighbour_step, _smallest_gap):
        where = todo.nonzero(as_tuple=True)
        if where[0].numel() == 0:
            break
        blocks, low, high = w[where], lo[where], hi[where]
        span = high - low
        n = torch.round(span / candidate(blocks, low, high))
        fits = (n >= 1) & (n <= 15) & _on_steps(blocks, low, span, n)
        steps[where] = torch.where(fits, n, steps[where])
        todo[where] = ~fits
    return steps, ~todo


def _on_steps(
    w: torch.Tensor, lo: torch.Tensor, span: torch.Tensor, n: torch.Tensor
) -> torch.Tensor:
    """Per block of `w` [..., 32], whether its values lie on the grid of `n` steps from its
    minimum `lo` across its `span`."""
    codes = (w - lo[..., None]).mul_((n / span)[..., None])
    off_grid = codes.sub_(codes.round()).abs_().amax(dim=-1)  # in place: big temporaries
    return (span > 0) & (off_grid < 1e-3)


def _smallest_gap(blocks: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """The smallest gap between two of a block's values: one step wherever two neighbour
    codes occur, when the extremes' neighbours are further (a few blocks of a Q4_K file)."""
    tol = (high - low)[:, None] * 1e-4
    gaps = blocks.sort(dim=-1).values.diff(dim=-1)
    return torch.where(gaps > tol, gaps, torch.full_like(gaps, torch.inf)).amin(dim=-1)


def _q4_0_step(blocks: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    return torch.maximum(low.abs(), high.abs()) / 8


def _neighbour_step(blocks: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    tol = (high - low)[:, None] * 1e-4
    inf = torch.full_like(blocks, torch.inf)
    above, below = blocks - low[:, None], high[:, None] - blocks
    return torch.minimum(
        torch.where(above > tol, above, inf).amin(dim=-1),
        torch.where(below > tol, below, inf).amin(dim=-1),
    )


def dequantize_q4(codes: torch.Tensor, dm: torch.Tensor) -> torch.Tensor:
    """The fp32 weight [N, K] that (codes, dm) encode."""
    n = codes.shape[0]
    c = codes.reshape(n, -1, 16)
    q = torch.cat((c & 0x0F, c >> 4), dim=-1).float()  # [N, K / 32, 32]
    d, m = dm.float().unbind(-1)
    return (q * d[..., None] + m[..., None]).reshape(n, -1)


def quantize_weight_q8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks of 32 along each row as 8-bit codes with an fp16 scale each (``w ~= d * q``,
    llama.cpp's Q8_0: d is the block's largest magnitude / 127).

    Returns (codes [N, K] int8, d [N, K / 32] fp16). Weights that came from a Q8_0 GGUF
    come back exactly: each block's largest code is +-127, so d is found again and every
    code with it."""
    return _by_rows(weight, _q8_rows)


def _q8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n, k = weight.shape
    w = weight.detach().float().reshape(n, k // Q4_BLOCK, Q4_BLOCK)
    d = (w.abs().amax(dim=-1) / 127.0).half()
    # Codes from the fp16 d the kernel will use, so rounding happens once.
    inv = torch.where(d.float() > 0, 1.0 / d.float(), torch.zeros_like(d, dtype=torch.float32))
    q = torch.round(w * inv[..., None]).clamp_(-127, 127).to(torch.int8)
    return q.reshape(n, k).contiguous(), d.contiguous()


def dequantize_q8(codes: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The fp32 weight [N, K] that (codes, d) encode."""
    n = codes.shape[0]
    return (codes.reshape(n, -1, Q4_BLOCK).float() * d.float()[..., None]).reshape(n, -1)


def quantize_activations_q8(x: torch.Tensor) -> torch.Tensor:
    """x (fp32, last dim a multiple of 32) as the q4 and q8 kernels see it: each block of 32 values
    rounded to 8 bits with its own scale (llama.cpp's Q8_1), and back to fp32."""
    blocks = x.reshape(*x.shape[:-1], -1, Q4_BLOCK)
    d = blocks.abs().amax(dim=-1, keepdim=True) / 127.0
    inv = torch.where(d > 0, 1.0 / d, torch.zeros_like(d))
    return (torch.round(blocks * inv) * d).reshape(x.shape)


def amx_enabled() -> bool:
    """Whether the several-row matmuls run on AMX here (csrc/amx_linear.c): a CPU and
    compiler with AMX, the kernel's permission, and TRITIUM_CPU_AMX not 0."""
    return bool(native.library().tritium_amx_enabled())


def set_amx(enable: bool) -> bool:
    """Turn the AMX path on or off for this process (tests compare both); returns whether
    it is on now (False where AMX is unavailable)."""
    return bool(native.library().tritium_set_amx(int(enable)))


def _call(
    fn: Callable[..., int],
    x: torch.Tensor,
    codes: torch.Tensor,
    scales: torch.Tensor | None,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    # Decode steps make ~120 of these calls; skip conversions that are no-ops.
    x2 = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
    if x2.dtype != torch.float32 or not x2.is_contiguous():
        x2 = x2.to(torch.float32).contiguous()
    m, k = x2.shape
    n = codes.shape[0]
    out = torch.empty(m, n, dtype=torch.float32)
    weight = [codes.data_ptr()] if scales is None else [codes.data_ptr(), scales.data_ptr()]
    rc = fn(
        x2.data_ptr(), m, k, *weight, None if bias is None else bias.data_ptr(), n,
        out.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    if rc != 0:
        raise MemoryError("quantized linear: cannot allocate its scratch buffer")
    if x.dim() != 2:
        out = out.view(*x.shape[:-1], n)
    return out if x.dtype == torch.float32 else out.to(x.dtype)


def int8_linear(
    x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``x @ (qweight * scale[:, None]).T + bias`` on CPU, in x's dtype.

    x: [..., K] float; qweight: [N, K] int8 (K a multiple of 8); scale, bias: [N] float32,
    contiguous (Linear.quantize makes them so).
    """
    return _call(native.library().tritium_int8_linear, x, qweight, scale, bias)


def q4_linear(
    x: torch.Tensor, codes: torch.Tensor, dm: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``quantize_activations_q8(x) @ dequantize_q4(codes, dm).T + bias`` on CPU, in x's
    dtype (K a multiple of 32): 4-bit weights times 8-bit inputs, as llama.cpp computes."""
    return _call(native.library().tritium_q4_linear, x, codes, dm, bias)


def q8_linear(
    x: torch.Tensor, codes: torch.Tensor, d: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``quantize_activations_q8(x) @ dequantize_q8(codes, d).T + bias`` on CPU, in x's
    dtype (K a multiple of 32): 8-bit weights times 8-bit inputs, llama.cpp's Q8_0 x Q8_0."""
    return _call(native.library().tritium_q8_linear, x, codes, d, bias)


def bf16_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, bf16_inputs: bool = False
) -> torch.Tensor:
    """``x @ weight.float().T + bias`` on CPU in fp32 math, in x's dtype: weight [N, K] bf16
    (K a multiple of 8), widened in registers, so it is read at half fp32's bytes.

    bf16_inputs: ``x.bfloat16().float() @ weight.float().T + bias``, bf16 products summed in
    fp32 (dtype bfloat16's matmul); on AMX a third of the tile work of fp32 inputs."""
    fn = native.library().tritium_bf16_linear
    return _call(lambda *args: fn(*args, int(bf16_inputs)), x, weight, None, bias)


def fp16_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`bf16_linear` for fp16 weights."""
    return _call(native.library().tritium_fp16_linear, x, weight, None, bias)
