"""Linear layers: nn.Linear, with oneDNN's matmul on CPU in float32 and compact weight
formats on CPU (int8, 4-bit in blocks of 32, or 16-bit floats computed in fp32).

On CPU, for the few-row inputs of decode steps (1 to a few dozen rows against a weight
read from memory), oneDNN's inner-product primitive runs about a third faster than the
BLAS call behind F.linear (measured with SmolLM2-135M's shapes on AVX2). Same parameters
and names as nn.Linear, so loading and other devices are unchanged.

`quantize()` swaps the weight for int8 rows with per-row scales (a quarter of the bytes),
4-bit blocks (an eighth, plus a scale and minimum per 32 values) or 8-bit blocks (a
quarter, plus a scale per 32 values: llama.cpp's Q8_0), both with inputs rounded to 8 bits
per block of 32 as llama.cpp does, or keeps them as bf16/fp16 (half the bytes,
exact for a checkpoint stored so: widening to fp32 is exact); decode-sized inputs then run
our kernels (quant_kernel.py), which stream the compact weight once per step.
Large inputs (prefill chunks) are compute-bound instead, so they widen the weight back to
fp32 and use the regular matmul.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from tritium.engine.layers import quant_kernel as qk

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")

#: Rows above which a quantized layer widens its weight and runs the fp32 matmul (measured
#: on SmolLM2-135M shapes, 2 AVX2 cores: the kernels win up to a few dozen rows). With
#: AMX the kernels take any number of rows, except fp16 weights (not exact in bf16).
QUANT_KERNEL_MAX_ROWS = 64

#: Weight formats `Linear.quantize` accepts, with the in_features multiple each needs.
QUANT_METHODS = {"int8": 8, "q4": qk.Q4_BLOCK, "q8": qk.Q4_BLOCK, "bf16": 8, "fp16": 8}

#: The block formats, whose kernels round their inputs to 8 bits per block of 32.
BLOCK_FORMATS = {"q4": qk.q4_linear, "q8": qk.q8_linear}

#: The 16-bit float formats: the weight kept in this dtype, no scales.
HALF_FORMATS = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Linear(nn.Linear):
    """nn.Linear whose CPU float32 forward goes through oneDNN, optionally with a compact
    weight (`quant` is then a QUANT_METHODS key, and `weight` is None).

    Built uninitialised, as vLLM's layers are: the weights always come from a checkpoint
    or the dummy loader, and random values would cost time and commit the memory of the
    full-precision weight that a compact format replaces as it loads."""

    # int8 [N, K], q4 codes [N, K / 2] uint8, q8 codes [N, K] int8, bf16/fp16 [N, K]
    qweight: torch.Tensor | None
    # int8: [N] fp32 scales; q4: [N, K / 32, 2] fp16 (d, m); q8: [N, K / 32] fp16
    wscale: torch.Tensor | None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.quant: str | None = None
        #: bf16 weights only: round each input to bf16, as a bf16 matmul does (products of
        #: bf16 values, summed in fp32), rather than keep it fp32 (round_inputs_to_bf16).
        self.bf16_inputs = False
        self.register_buffer("qweight", None)
        self.register_buffer("wscale", None)

    def reset_parameters(self) -> None:
        """Leaves the parameters uninitialised (see the class docstring)."""

    def quantize(self, method: str) -> None:
        """Replace the weight by `method`'s format (CPU only). A tied weight stays with
        its other owner (the embedding) and this layer keeps its own compact copy."""
        if method not in QUANT_METHODS:
            raise ValueError(f"unknown weight format {method!r}; known: {sorted(QUANT_METHODS)}")
        if self.weight.device.type != "cpu":
            raise ValueError(f"{method} weight-only quantization runs on CPU only")
        multiple = QUANT_METHODS[method]
        if self.in_features % multiple:
            raise ValueError(
                f"{method} kernel needs in_features % {multiple} == 0, got {self.in_features}"
            )
        if method == "int8":
            self.set_compact_weight(method, *qk.quantize_weight_int8(self.weight))
        elif method == "q4":
            self.set_compact_weight(method, *qk.quantize_weight_q4(self.weight))
        elif method == "q8":
            self.set_compact_weight(method, *qk.quantize_weight_q8(self.weight))
        else:
            half = self.weight.detach().to(HALF_FORMATS[method]).contiguous()
            self.set_compact_weight(method, half, None)

    def set_compact_weight(
        self, method: str, qweight: torch.Tensor, wscale: torch.Tensor | None
    ) -> None:
        """Take a weight already in `method`'s format (from `quantize`, or prepared weights
        read from the cache), in place of the plain one; the bias goes to fp32."""
        self.qweight, self.wscale = qweight, wscale
        self.quant = method
        self.register_parameter("weight", None)
        if self.bias is not None:
            self.bias.data = self.bias.data.float().contiguous()

    def dequantized_weight(self) -> torch.Tensor:
        """The fp32 weight the compact format encodes."""
        assert self.qweight is not None
        if self.quant in HALF_FORMATS:
            return self.qweight.float()
        assert self.wscale is not None
        if self.quant == "int8":
            return self.qweight.float() * self.wscale[:, None]
        if self.quant == "q8":
            return qk.dequantize_q8(self.qweight, self.wscale)
        return qk.dequantize_q4(self.qweight, self.wscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quant is not None:
            assert self.qweight is not None
            rows = x.numel() // self.in_features
            if rows <= QUANT_KERNEL_MAX_ROWS or (self.quant != "fp16" and qk.amx_enabled()):
                if self.quant == "bf16":
                    return qk.bf16_linear(x, self.qweight, self.bias, self.bf16_inputs)
                if self.quant == "fp16":
                    return qk.fp16_linear(x, self.qweight, self.bias)
                assert self.wscale is not None
                kernel = BLOCK_FORMATS.get(self.quant, qk.int8_linear)
                return kernel(x, self.qweight, self.wscale, self.bias)
            w = self.dequantized_weight().to(x.dtype)
            b = None if self.bias is None else self.bias.to(x.dtype)
            if self.quant in BLOCK_FORMATS:  # the kernel's 8-bit inputs: every row size agrees
                x = qk.quantize_activations_q8(x.float()).to(x.dtype)
            elif self.bf16_inputs:
                x = x.to(torch.bfloat16).to(x.dtype)
            return self._dense(x, w, b)
        return self._dense(x, self.weight, self.bias)

    @staticmethod
    def _dense(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        if _ONEDNN and x.is_cpu and x.dtype == torch.float32 == w.dtype and x.dim() == 2:
            return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
        return F.linear(x, w, b)


def weight_formats(model: nn.Module, formats: str | Mapping[str, str]) -> dict[str, str]:
    """The format each Linear of `model` takes, by module name (absent: it keeps a plain
    weight).

    `formats` is one format for every layer, or a format per checkpoint weight name: a
    layer fed by several checkpoint tensors (packed q/k/v, gate/up) takes their format
    when they agree, int8 when int8 and the block formats (q4, q8) mix, and stays float otherwise
    (one source without a format, or 16-bit floats that differ). A layer whose width the
    format cannot tile falls back to float (q4 and q8: to int8 first).
    """
    plan = {}
    for name, layer in model.named_modules():
        if not isinstance(layer, Linear):
            continue
        if isinstance(formats, str):
            fmt: str | None = formats
        else:
            fmt = _shared_format({formats.get(n) for n in _sources(model, name)})
        if fmt in BLOCK_FORMATS and layer.in_features % QUANT_METHODS[fmt]:
            fmt = "int8"
        if fmt is not None and layer.in_features % QUANT_METHODS[fmt]:
            fmt = None
        if fmt is not None:
            plan[name] = fmt
    return plan


def round_inputs_to_bf16(model: nn.Module) -> int:
    """Make every Linear of `model` with bf16 weights compute as a bf16 matmul: each input
    rounded to bf16, the products summed in fp32 (dtype bfloat16 on CPU, where the rest of
    the step stays fp32). Returns how many layers do."""
    layers = [m for m in model.modules() if isinstance(m, Linear) and m.quant == "bf16"]
    for layer in layers:
        layer.bf16_inputs = True
    return len(layers)


def embedding_formats(model: nn.Module, formats: str | Mapping[str, str]) -> dict[str, str]:
    """The embedding tables of `model` that keep 16-bit storage, with their format ("bf16",
    "fp16"): where `formats` (as for `weight_formats`) gives their checkpoint tensor one.
    The rows a step looks up are widened to the compute dtype, which is exact; q4 and int8
    tables stay in the compute dtype (a GGUF file's quantized table is not in their
    layout, so it would not come back exact)."""
    plan = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            fmt = formats if isinstance(formats, str) else formats.get(f"{name}.weight")
            if fmt in HALF_FORMATS:
                plan[name] = fmt
    return plan


def store_embeddings(model: nn.Module, plan: Mapping[str, str]) -> None:
    """Give the embedding tables of `plan` (from `embedding_formats`) their 16-bit storage,
    before the weights are loaded. The Parameter object stays, so a tied lm_head shares
    the table (and, put in the same format, takes it without a copy)."""
    modules = dict(model.named_modules())
    for name, fmt in plan.items():
        weight = modules[name].weight
        weight.data = torch.empty(weight.shape, dtype=HALF_FORMATS[fmt], device=weight.device)


def quantize_linears(model: nn.Module, formats: str | Mapping[str, str]) -> Counter[str]:
    """Put the Linear layers of `model` in their `weight_formats` now; returns how many
    took each format."""
    plan = weight_formats(model, formats)
    modules = dict(model.named_modules())
    for name, fmt in plan.items():
        modules[name].quantize(fmt)
    return Counter(plan.values())


def quantize_as_loaded(
    model: nn.Module, plan: Mapping[str, str], weights: Iterable[tuple[str, torch.Tensor]]
) -> Iterator[tuple[str, torch.Tensor]]:
    """Pass `weights` on to `model.load_weights`, putting each Linear of `plan` (from
    `weight_formats`) in its format as soon as every checkpoint tensor it is loaded from is
    in: the full-precision model never exists whole, so loading peaks near the compact
    model's size rather than the fp32 one's."""
    modules = dict(model.named_modules())
    waiting = {name: set(_sources(model, name)) for name in plan}
    fed_by: dict[str, list[str]] = {}
    for name, sources in waiting.items():
        for source in sources:
            fed_by.setdefault(source, []).append(name)
    for source, tensor in weights:
        yield source, tensor
        # The model has copied `source` in by the time it asks for the next tensor.
        for name in fed_by.get(source, ()):
            waiting[name].discard(source)
            if not waiting[name]:
                modules[name].quantize(plan[name])
    for name, left in waiting.items():  # a source the checkpoint lacks: load_weights says so
        if left and modules[name].weight is not None:
            modules[name].quantize(plan[name])


def _sources(model: nn.Module, name: str) -> list[str]:
    """The checkpoint tensors Linear `name` is loaded from (packed layers have several)."""
    names = getattr(model, "checkpoint_names", None)
    return names(name) if names else [f"{name}.weight"]


def _shared_format(sources: set[str | None]) -> str | None:
    """The one format a packed layer's checkpoint tensors can share (weight_formats)."""
    if len(sources) == 1:
        return next(iter(sources))
    return "int8" if sources <= {"int8", "q4", "q8"} else None
