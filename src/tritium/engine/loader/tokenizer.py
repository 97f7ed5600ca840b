"""Tokenizers for checkpoints: loading from a folder, and the end-of-sequence ids."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from transformers import (
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

#: Any of these makes a folder carry a tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def has_tokenizer(folder: Path) -> bool:
    """Whether ``folder`` holds tokenizer files."""
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer in ``folder``; its chat template comes from ``tokenizer_config.json``
    or ``chat_template.jinja`` (transformers reads both)."""
    if not has_tokenizer(folder):
        raise FileNotFoundError(
            f"no tokenizer in {folder}: expected one of {', '.join(TOKENIZER_FILES)}"
        )
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load the tokenizer in {folder}: {exc}") from exc


#: A ChatML template for the byte-level fallback tokenizer.
_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A file-less tokenizer: one token per byte (ids 0-255) plus ``<s>``, ``</s>``,
    ``<|im_start|>`` and ``<|im_end|>`` (256-259), with a ChatML template.

    For dummy models when no real tokenizer is at hand: it encodes any text, and its ids fit
    in every real vocabulary.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_chars = sorted(alphabet, key=lambda ch: _BYTE_ORDER[ch])
    bpe = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(byte_chars)}, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    bpe.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = _CHATML
    return tok


def _byte_order() -> dict[str, int]:
    # GPT-2's byte -> printable character table, inverted: character -> byte value.
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


_BYTE_ORDER = _byte_order()


def eos_token_ids(
    generation_config: dict[str, Any],
    hf_config: PretrainedConfig | None,
    tokenizer: PreTrainedTokenizerBase | None,
) -> list[int]:
    """End-of-sequence ids: ``generation_config.json`` first, then the model config, then the
    tokenizer, de-duplicated in that order.

    All are kept because they disagree in practice (Llama 3 Instruct ends turns with
    ``<|eot_id|>`` while its config names ``<|end_of_text|>``); stopping on any is right.
    """
    ids: list[int] = []
    sources: list[Any] = [
        generation_config.get("eos_token_id"),
        getattr(hf_config, "eos_token_id", None) if hf_config is not None else None,
        tokenizer.eos_token_id if tokenizer is not None else None,
    ]
    for value in sources:
        for token_id in _as_ints(value):
            if token_id not in ids:
                ids.append(token_id)
    return ids


def _as_ints(value: Any) -> Iterable[int]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return (int(v) for v in value)
