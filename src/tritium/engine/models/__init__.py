"""Engine-native model classes, chosen by the checkpoint's `architectures`."""

from __future__ import annotations

from tritium.engine.models.llama import LlamaForCausalLM

# Every architecture here is the Llama shape with config switches.
MODEL_REGISTRY: dict[str, type[LlamaForCausalLM]] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": LlamaForCausalLM,
    "Qwen3ForCausalLM": LlamaForCausalLM,
}


def resolve_architecture(config) -> str:
    """The supported architecture named by the config; ValueError naming it otherwise."""
    archs = list(getattr(config, "architectures", None) or [])
    for arch in archs:
        if arch in MODEL_REGISTRY:
            return arch
    raise ValueError(
        f"unsupported model architecture {archs or '(none given)'}; "
        f"supported: {', '.join(sorted(MODEL_REGISTRY))}"
    )


def build_model(config, max_positions: int) -> LlamaForCausalLM:
    arch = resolve_architecture(config)
    return MODEL_REGISTRY[arch](config, arch, max_positions)
