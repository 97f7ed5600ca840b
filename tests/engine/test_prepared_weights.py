"""Prepared weights (loader/prepared.py): a model's q4/int8 weights cached by the first
start and memory-mapped by the next ones, which must then run exactly as the first."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from tritium.engine import LLM, SamplingParams, engine_core
from tritium.engine.loader import checkpoint, prepared

PROMPTS = ["The capital of France is", "def fibonacci(n):"]
GREEDY = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache, and no size floor: the tiny models are worth caching here."""
    monkeypatch.setenv("TRITIUM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(prepared, "MIN_CACHED_WEIGHTS", 0)
    return tmp_path / "cache"


@pytest.fixture
def model_dir(tmp_path: Path, tiny_model_dirs) -> Path:
    """A copy of the tiny tied-embedding Llama that a test may touch."""
    return Path(shutil.copytree(tiny_model_dirs["llama"], tmp_path / "llama"))


def entries(cache_dir: Path) -> list[Path]:
    root = cache_dir / "prepared"
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


def checkpoint_names(folder: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        return list(f.keys())


def token_ids(llm: LLM) -> list[list[int]]:
    return [list(o.outputs[0].token_ids) for o in llm.generate(PROMPTS, GREEDY)]


def model_state(llm: LLM) -> dict[str, torch.Tensor]:
    return dict(llm.engine_core.runner.model.state_dict())


@pytest.fixture
def no_checkpoint_reads(monkeypatch: pytest.MonkeyPatch):
    """Fail any start that reads the checkpoint's weights (instead of the prepared ones)."""

    def refuse(files, *args, **kwargs):
        raise AssertionError(f"read the checkpoint weights in {files}")
        yield  # a generator, as the reader is: only iterating it reads

    def forbid() -> None:
        monkeypatch.setattr(checkpoint, "iter_weights", refuse)

    return forbid


@pytest.mark.parametrize("method", ["q4", "int8"])
def test_the_second_start_maps_what_the_first_computed(
    cache_dir, model_dir, no_checkpoint_reads, method
) -> None:
    first = LLM(str(model_dir), dtype="float32", quantization=method)
    expected, state = token_ids(first), model_state(first)
    (entry,) = entries(cache_dir)
    assert (entry / "model.safetensors").is_file()

    no_checkpoint_reads()
    second = LLM(str(model_dir), dtype="float32", quantization=method)
    assert second.engine_core.runner.quantization == first.engine_core.runner.quantization
    assert token_ids(second) == expected
    loaded = model_state(second)
    assert loaded.keys() == state.keys()
    for name, tensor in state.items():
        assert torch.equal(loaded[name], tensor), name
    # The tied embedding and the lm_head's own q4/int8 copy both came back.
    model = second.engine_core.runner.model
    assert model.lm_head.quant == method and model.lm_head.weight is None
    assert entries(cache_dir) == [entry]


def test_a_tied_lm_head_left_plain_stays_tied(
    cache_dir, model_dir, monkeypatch, no_checkpoint_reads
) -> None:
    """A format per checkpoint weight (as a GGUF file gives) that leaves the embedding
    plain: lm_head keeps sharing it after a prepared start, and the rest is q4."""

    plan = {name: "q4" for name in checkpoint_names(model_dir) if ".layers." in name}
    monkeypatch.setattr(engine_core, "resolve_quantization", lambda args, ckpt: plan)
    first = LLM(str(model_dir), dtype="float32")
    expected = token_ids(first)
    assert len(entries(cache_dir)) == 1
    no_checkpoint_reads()
    second = LLM(str(model_dir), dtype="float32")
    model = second.engine_core.runner.model
    assert model.lm_head.quant is None
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.model.layers[0].mlp.gate_up_proj.quant == "q4"
    assert token_ids(second) == expected


def test_a_16_bit_table_shared_with_the_lm_head_comes_back_shared(
    cache_dir, model_dir, monkeypatch, no_checkpoint_reads
) -> None:
    """q4 layers with a bf16 embedding (as a GGUF file with an F16/BF16 token_embd gives):
    the tied lm_head takes the table itself, the entry stores it once, and the next start
    maps it once for both."""

    names = checkpoint_names(model_dir)
    plan = {name: "q4" for name in names if ".layers." in name}
    plan["model.embed_tokens.weight"] = "bf16"
    monkeypatch.setattr(engine_core, "resolve_quantization", lambda args, ckpt: plan)
    first = LLM(str(model_dir), dtype="float32")
    expected = token_ids(first)
    no_checkpoint_reads()
    second = LLM(str(model_dir), dtype="float32")
    model = second.engine_core.runner.model
    table = model.model.embed_tokens.weight
    assert table.dtype == torch.bfloat16 and model.lm_head.quant == "bf16"
    assert model.lm_head.qweight.data_ptr() == table.data_ptr()
    assert torch.equal(table, first.engine_core.runner.model.model.embed_tokens.weight)
    assert token_ids(second) == expected


def test_formats_that_cost_nothing_to_load_are_not_cached(cache_dir, model_dir) -> None:
    for kwargs in ({}, {"quantization": "bf16"}, {"quantization": "none"}):
        LLM(str(model_dir), dtype="float32", **kwargs)
    # Dummy weights are generated, not read: nothing to key an entry on.
    config = str(model_dir / "config.json")
    LLM(config, load_format="dummy", dtype="float32", quantization="q4")
    assert entries(cache_dir) == []


def test_each_format_and_dtype_is_its_own_entry(cache_dir, model_dir) -> None:
    LLM(str(model_dir), dtype="float32", quantization="q4")
    LLM(str(model_dir), dtype="float32", quantization="int8")
    LLM(str(model_dir), dtype="bfloat16", quantization="int8")
    assert len(entries(cache_dir)) == 3


def test_a_rewritten_checkpoint_is_read_again_and_its_old_entry_removed(
    cache_dir, model_dir
) -> None:
    first = LLM(str(model_dir), dtype="float32", quantization="q4")
    expected = token_ids(first)
    (old,) = entries(cache_dir)
    weights = model_dir / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    again = LLM(str(model_dir), dtype="float32", quantization="q4")
    (new,) = entries(cache_dir)
    assert new != old and not old.exists()
    assert token_ids(again) == expected


def test_entries_of_another_version_go_after_a_grace_period(cache_dir, model_dir) -> None:
    """A PREPARED_VERSION bump makes old entries unreachable: the next save removes those
    written more than a day ago, and keeps fresh ones (another Tritium version sharing the
    cache during an upgrade still uses them)."""
    import json

    from tritium.engine.loader.cache import MARKER

    LLM(str(model_dir), dtype="float32", quantization="q4")
    (entry,) = entries(cache_dir)
    fresh, old = cache_dir / "prepared" / "fresh", cache_dir / "prepared" / "old"
    for copy in (fresh, old):
        shutil.copytree(entry, copy)
        marker = json.loads((copy / MARKER).read_text())
        marker["version"] = prepared.PREPARED_VERSION - 1
        (copy / MARKER).write_text(json.dumps(marker))
    then = (old / MARKER).stat().st_mtime - 2 * 24 * 3600
    os.utime(old / MARKER, (then, then))
    LLM(str(model_dir), dtype="float32", quantization="int8")  # a new entry: the sweep runs
    assert fresh.exists() and entry.exists() and not old.exists()
    assert len(entries(cache_dir)) == 3


def test_a_damaged_entry_is_ignored_and_replaced(
    cache_dir, model_dir, no_checkpoint_reads, caplog
) -> None:
    expected = token_ids(LLM(str(model_dir), dtype="float32", quantization="q4"))
    (entry,) = entries(cache_dir)
    shard = entry / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # cut mid-file
    with caplog.at_level("WARNING", logger="tritium.engine.loader.prepared"):
        repaired = LLM(str(model_dir), dtype="float32", quantization="q4")
    assert "damaged prepared weights" in caplog.text
    assert token_ids(repaired) == expected
    no_checkpoint_reads()  # the entry was written anew, whole
    assert token_ids(LLM(str(model_dir), dtype="float32", quantization="q4")) == expected


def test_an_entry_for_another_model_shape_is_not_used(cache_dir, model_dir, caplog) -> None:
    """An entry whose tensors do not fit (here: one tensor gone) leaves the model untouched
    and the weights are read from the checkpoint."""
    from safetensors.torch import load_file, save_file

    expected = token_ids(LLM(str(model_dir), dtype="float32", quantization="q4"))
    (entry,) = entries(cache_dir)
    tensors = load_file(entry / "model.safetensors")
    del tensors["model.norm.weight"]
    save_file(tensors, entry / "model.safetensors")
    with caplog.at_level("WARNING", logger="tritium.engine.loader.prepared"):
        llm = LLM(str(model_dir), dtype="float32", quantization="q4")
    assert "model.norm.weight" in caplog.text
    assert token_ids(llm) == expected


def test_a_cache_that_cannot_be_written_only_costs_the_shortcut(
    tmp_path, model_dir, monkeypatch, caplog
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("TRITIUM_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(prepared, "MIN_CACHED_WEIGHTS", 0)
    with caplog.at_level("WARNING", logger="tritium.engine.loader.prepared"):
        llm = LLM(str(model_dir), dtype="float32", quantization="q4")
    assert "could not cache prepared weights" in caplog.text
    assert all(len(ids) == GREEDY.max_tokens for ids in token_ids(llm))


def test_small_models_are_not_worth_an_entry(tmp_path, model_dir, monkeypatch) -> None:
    monkeypatch.setenv("TRITIUM_CACHE_DIR", str(tmp_path / "cache"))
    LLM(str(model_dir), dtype="float32", quantization="q4")  # ~3M weights: under the floor
    assert entries(tmp_path / "cache") == []


def test_a_quantized_gguf_runs_from_the_file_and_never_writes_full_precision(
    tmp_path, cache_dir, monkeypatch
) -> None:
    """A Q4_1 file on CPU: the first start streams its weights from the file into q4 and
    caches that; no dequantized copy is written. Plain weights ("none") still come from a
    conversion made once."""
    from test_loader_gguf import Q, tiny_config, tiny_model, write_gguf

    from tritium.engine.loader import gguf

    path = tmp_path / "tiny.gguf"
    write_gguf(path, "llama", tiny_model(tiny_config("llama")), Q.Q4_1)
    first = LLM(str(path), dtype="float32")
    assert "q4" in first.engine_core.runner.quantization
    expected = token_ids(first)
    assert not list((cache_dir / "gguf").rglob("*.safetensors"))
    assert len(entries(cache_dir)) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("read the GGUF weights again")
        yield

    with monkeypatch.context() as mp:
        mp.setattr(gguf, "iter_file_weights", refuse)
        assert token_ids(LLM(str(path), dtype="float32")) == expected

    plain = LLM(str(path), dtype="float32", quantization="none")
    assert plain.engine_core.runner.quantization is None
    assert list((cache_dir / "gguf").rglob("model.safetensors"))
