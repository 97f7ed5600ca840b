"""The Llama family written for the engine: Llama 2/3, Mistral, Qwen2, Qwen3, SmolLM2.

They differ only in small switches read from the config: attention bias (Qwen2), q/k
RMSNorm (Qwen3), tied embeddings, head_dim, RoPE scaling. Projections are packed (one
matmul for q/k/v and one for gate/up); `packed_modules_mapping` maps checkpoint names.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from tritium.engine.layers import cpu_ops, fused_ops_triton
from tritium.engine.layers.attention import Attention, AttentionMetadata
from tritium.engine.layers.linear import Linear
from tritium.engine.layers.norm import RMSNorm
from tritium.engine.layers.paged_attention_triton import paged_attention
from tritium.engine.layers.rotary import RotaryEmbedding, apply_rope

Rope = tuple[torch.Tensor, torch.Tensor]


def head_dim_of(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def layer_sliding_windows(config, arch: str) -> list[int | None]:
    """Each layer's sliding window, or None for full attention, by transformers' rules: the
    query at position p sees keys at positions > p - window. Mistral windows every layer
    when `sliding_window` is set; Qwen2/Qwen3 only with `use_sliding_window`, on the layers
    `layer_types` names (by default those from `max_window_layers` on); Llama never."""
    n = config.num_hidden_layers
    window = getattr(config, "sliding_window", None)
    if not window or arch == "LlamaForCausalLM":
        return [None] * n
    if arch == "MistralForCausalLM":
        return [int(window)] * n
    if not getattr(config, "use_sliding_window", False):
        return [None] * n
    types = getattr(config, "layer_types", None)
    if types:
        return [int(window) if t == "sliding_attention" else None for t in types]
    first = getattr(config, "max_window_layers", 0)
    return [int(window) if i >= first else None for i in range(n)]


class LlamaAttention(nn.Module):
    def __init__(self, config, arch: str, sliding_window: int | None = None) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = head_dim_of(config)
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        bias = bool(getattr(config, "attention_bias", False))
        qkv_bias = bias or arch == "Qwen2ForCausalLM"
        o_bias = bias and arch != "Qwen2ForCausalLM"
        self.qkv_proj = Linear(config.hidden_size, self.q_size + 2 * self.kv_size, bias=qkv_bias)
        self.o_proj = Linear(self.q_size, config.hidden_size, bias=o_bias)
        self.qk_norm = arch == "Qwen3ForCausalLM"
        if self.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.attn = Attention(
            self.num_heads, self.num_kv_heads, self.head_dim, self.head_dim**-0.5, sliding_window
        )
        self.triton_ops = False  # fused_ops_triton.use_triton_ops

    def forward(self, rope: Rope, x: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        t, h, d = x.shape[0], self.num_heads, self.head_dim
        qkv = self.qkv_proj(x)
        if self.triton_ops and getattr(meta, "paged_triton", False) and qkv.stride(1) == 1:
            return self.o_proj(self._triton_attention(qkv, rope, meta))
        v = qkv[:, self.q_size + self.kv_size :].view(t, self.num_kv_heads, d)
        if cpu_ops.enabled(qkv) and qkv.is_contiguous() and self._c_qk_norm():
            if self.qk_norm:  # in place, as the one-call decode layer does
                kvh, eps = self.num_kv_heads, self.q_norm.eps
                cpu_ops.head_rms_norm_(qkv, 0, h, d, self.q_norm.weight, eps)
                cpu_ops.head_rms_norm_(qkv, h, kvh, d, self.k_norm.weight, eps)
            cpu_ops.rope_(qkv, h + self.num_kv_heads, d, *rope)  # in place, one call
            q = qkv[:, : self.q_size].view(t, h, d)
            k = qkv[:, self.q_size : self.q_size + self.kv_size].view(t, self.num_kv_heads, d)
        elif self.qk_norm:
            q, k = qkv[:, : self.q_size], qkv[:, self.q_size : self.q_size + self.kv_size]
            q = apply_rope(self.q_norm(q.view(t, h, d))[0], rope)
            k = apply_rope(self.k_norm(k.view(t, self.num_kv_heads, d))[0], rope)
        else:  # q and k side by side: one rotation for both
            qk = apply_rope(qkv[:, : self.q_size + self.kv_size].view(t, -1, d), rope)
            q, k = qk[:, :h], qk[:, h:]
        return self.o_proj(self.attn(q, k, v, meta))

    def _triton_attention(self, qkv: torch.Tensor, rope: Rope, meta) -> torch.Tensor:
        """The CUDA step: one kernel for the q/k norms, RoPE and the cache store, in place
        in qkv, then paged attention over the cache."""
        attn = self.attn
        qk_norm = None
        if self.qk_norm:
            qk_norm = (self.q_norm.weight, self.k_norm.weight, self.q_norm.eps)
        fused_ops_triton.qkv_rope_write_kv(
            qkv, self.num_heads, self.num_kv_heads, self.head_dim, rope,
            attn.k_cache, attn.v_cache, meta.slot_mapping, qk_norm,
        )  # fmt: skip
        q = qkv[:, : self.q_size].view(qkv.shape[0], self.num_heads, self.head_dim)
        return paged_attention(attn, q, meta)

    def _c_qk_norm(self) -> bool:
        """Whether the C ops cover this layer's q/k norms (always, without them): fp32
        weights and one eps, as the C layer takes."""
        if not self.qk_norm:
            return True
        norms = (self.q_norm, self.k_norm)
        return all(n.weight.dtype == torch.float32 for n in norms) and norms[0].eps == norms[1].eps


class LlamaMLP(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        bias = bool(getattr(config, "mlp_bias", False))
        self.intermediate_size = config.intermediate_size
        self.gate_up_proj = Linear(config.hidden_size, 2 * config.intermediate_size, bias=bias)
        self.down_proj = Linear(config.intermediate_size, config.hidden_size, bias=bias)
        if getattr(config, "hidden_act", "silu") != "silu":
            raise ValueError(f"unsupported hidden_act {config.hidden_act!r} (only silu)")
        self.triton_ops = False  # fused_ops_triton.use_triton_ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)
        if self.triton_ops and gate_up.dim() == 2 and gate_up.stride(1) == 1:
            return self.down_proj(fused_ops_triton.silu_mul(gate_up))
        if gate_up.dim() == 2 and cpu_ops.enabled(gate_up) and gate_up.is_contiguous():
            return self.down_proj(cpu_ops.silu_mul(gate_up))
        gate, up = gate_up.split(self.intermediate_size, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config, arch: str, sliding_window: int | None = None) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config, arch, sliding_window)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def decode_params(self) -> cpu_ops.LayerParams | None:
        """This layer as one C call for decode steps (cpu_ops.decode_layer), or None where
        the C layer does not cover it: a weight in a plain tensor, norms not in fp32 or with
        different eps, a head layout outside the attention kernel's limits, or a KV cache in
        a dtype it does not read."""
        attn, mlp = self.self_attn, self.mlp
        linears = [cpu_ops.linear_params(m) for m in (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj)]  # fmt: skip
        norms = (self.input_layernorm.weight, self.post_attention_layernorm.weight)
        if (
            any(p is None for p in linears)
            or not attn._c_qk_norm()
            or (attn.qk_norm and attn.q_norm.eps != self.input_layernorm.eps)
            or any(w.dtype != torch.float32 for w in norms)
            or not cpu_ops.heads_fit(attn.num_heads, attn.num_kv_heads, attn.head_dim)
            or attn.attn.k_cache.dtype not in cpu_ops.KV_DTYPES
            or self.input_layernorm.eps != self.post_attention_layernorm.eps
        ):
            return None
        qk = (attn.q_norm.weight.data_ptr(), attn.k_norm.weight.data_ptr()) if attn.qk_norm else (None, None)  # fmt: skip
        return cpu_ops.LayerParams(
            *linears, norms[0].data_ptr(), norms[1].data_ptr(), *qk, self.input_layernorm.eps,
            attn.attn.scale, attn.o_proj.out_features, attn.num_heads, attn.num_kv_heads,
            attn.head_dim, mlp.intermediate_size,
        )  # fmt: skip

    def forward(
        self,
        rope: Rope,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        meta: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, residual = self.input_layernorm(x, residual)
        x = self.self_attn(rope, x, meta)
        x, residual = self.post_attention_layernorm(x, residual)
        return self.mlp(x), residual


class LlamaModel(nn.Module):
    def __init__(self, config, arch: str, max_positions: int) -> None:
        super().__init__()
        # Uninitialised, as Linear is: the table always comes from the checkpoint.
        table = torch.empty(config.vocab_size, config.hidden_size)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, _weight=table)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(config, arch, w) for w in layer_sliding_windows(config, arch)
        )
        self.rotary_emb = RotaryEmbedding(config, head_dim_of(config), max_positions)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        # CPU decode steps run each layer as one C call when every layer allows it: each
        # layer's C parameters and attention, built at the first such step (after the
        # weights are quantized); empty when some layer does not allow it.
        self._decode_layers: list[tuple[cpu_ops.LayerParams, Attention]] | None = None

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        # A CPU model may keep its table in 16 bits (linear.embedding_formats).
        x = self.embed_tokens(input_ids).to(self.norm.weight.dtype)
        rope = self.rotary_emb(positions, x.dtype)  # once per step, shared by every layer
        if (
            isinstance(meta, AttentionMetadata)  # not the Triton step's PagedMetadata
            and meta.decode_views is not None
            and not meta.prefills
            and cpu_ops.enabled(x)
        ):
            layers = self._fused_decode_params()
            if layers:
                return self._fused_decode(layers, x, rope, meta)
        residual = None
        for layer in self.layers:
            x, residual = layer(rope, x, residual, meta)
        return self.norm(x, residual)[0]

    def _fused_decode_params(self) -> list[tuple[cpu_ops.LayerParams, Attention]]:
        if self._decode_layers is None:
            built: list[tuple[cpu_ops.LayerParams, Attention]] = []
            for layer in self.layers:
                assert isinstance(layer, LlamaDecoderLayer)
                params = layer.decode_params()
                if params is None:
                    built = []
                    break
                built.append((params, layer.self_attn.attn))
            self._decode_layers = built
        return self._decode_layers

    def _fused_decode(
        self,
        layers: list[tuple[cpu_ops.LayerParams, Attention]],
        x: torch.Tensor,
        rope: Rope,
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        """A decode-only step, each layer one C call: the same ops, in the same order, as
        the layers' forward with the C ops, without ~40 Python-level operations per layer."""
        residual = torch.zeros_like(x)  # + 0.0 is exact: layer 0 normalizes x itself
        work = x.new_empty(cpu_ops.workspace_floats(layers[0][0], x.shape[0]))
        for params, attn in layers:
            cpu_ops.decode_layer(params, x, residual, rope, attn, meta, work)
        return self.norm(x, residual)[0]


class LlamaForCausalLM(nn.Module):
    """A decoder-only Llama-family model over the paged KV cache."""

    # checkpoint name -> (packed parameter, shard)
    packed_modules_mapping: dict[str, tuple[str, str | int]] = {
        "q_proj": ("qkv_proj", "q"),
        "k_proj": ("qkv_proj", "k"),
        "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", 0),
        "up_proj": ("gate_up_proj", 1),
    }

    def __init__(self, config, arch: str = "LlamaForCausalLM", max_positions: int = 4096) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config, arch, max_positions)
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", False))
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        if self.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @property
    def attention_layers(self) -> list[Attention]:
        layers = self.model.layers  # every entry is a LlamaDecoderLayer
        return [layer.self_attn.attn for layer in layers if isinstance(layer, LlamaDecoderLayer)]

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """Hidden states of every token: [T, hidden]."""
        return self.model(input_ids, positions, meta)

    def checkpoint_names(self, module: str) -> list[str]:
        """The checkpoint weights a linear module is loaded from (packed ones have several)."""
        if module == "lm_head" and self.tie_word_embeddings:
            return ["model.embed_tokens.weight"]
        prefix, _, leaf = module.rpartition(".")
        parts = [ck for ck, (packed, _) in self.packed_modules_mapping.items() if packed == leaf]
        return [f"{prefix}.{p}.weight" for p in parts] if parts else [f"{module}.weight"]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy Hugging Face-named tensors into the packed parameters. Each parameter is
        looked up as its tensor arrives, not held from the start: a layer put in a compact
        format while loading (linear.quantize_as_loaded) frees its full-precision weight."""
        params = {n for n, _ in self.named_parameters(remove_duplicate=False)}
        loaded: set[str] = set()
        for name, tensor in weights:
            if "rotary_emb.inv_freq" in name:
                continue
            if name == "lm_head.weight" and self.tie_word_embeddings:
                continue
            target, shard = name, None
            for ckpt_name, (packed, shard_id) in self.packed_modules_mapping.items():
                if f".{ckpt_name}." in name:
                    target, shard = name.replace(ckpt_name, packed), shard_id
                    break
            if target not in params:
                raise ValueError(
                    f"checkpoint tensor {name!r} has no place in {type(self).__name__}"
                )
            self._load_shard(self.get_parameter(target), tensor, target, shard)
            loaded.add(target)
        missing = {
            n
            for n in params
            if n not in loaded and not (n == "lm_head.weight" and self.tie_word_embeddings)
        }
        if missing:
            raise ValueError(f"checkpoint is missing tensors: {sorted(missing)[:8]}")

    def _load_shard(
        self, param: nn.Parameter, tensor: torch.Tensor, name: str, shard: str | int | None
    ) -> None:
        data = param.data
        if shard is None:
            if data.shape != tensor.shape:
                raise ValueError(
                    f"{name}: checkpoint shape {tuple(tensor.shape)} != {tuple(data.shape)}"
                )
            data.copy_(tensor)
            return
        if name.endswith(("qkv_proj.weight", "qkv_proj.bias")):
            attn = self._attn_of(name)
            offsets = {
                "q": (0, attn.q_size),
                "k": (attn.q_size, attn.kv_size),
                "v": (attn.q_size + attn.kv_size, attn.kv_size),
            }
            start, size = offsets[shard]  # type: ignore[index]
        else:
            size = data.shape[0] // 2
            start = int(shard) * size
        target = data.narrow(0, start, size)
        if target.shape != tensor.shape:
            raise ValueError(
                f"{name}[{shard}]: checkpoint shape {tuple(tensor.shape)} != {tuple(target.shape)}"
            )
        target.copy_(tensor)

    def _attn_of(self, param_name: str) -> LlamaAttention:
        index = int(param_name.split(".")[2])  # model.layers.<i>.self_attn.qkv_proj.weight
        return self.model.layers[index].self_attn  # type: ignore[return-value]
