"""Incremental detokenizer: UTF-8 safety, stop strings and hold-back."""

from __future__ import annotations

import pytest

from tritium.engine.detokenizer import IncrementalDetokenizer
from tritium.engine.sampling_params import SamplingParams


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


def test_token_by_token_equals_full_decode_and_never_splits_utf8(tokenizer):
    text = "Héllo wörld — 你好, 🎉 emoji!"
    ids = tokenizer.encode(text)
    d = IncrementalDetokenizer(tokenizer, [], SamplingParams())
    pieces = []
    for tid in ids:
        d.update([tid])
        piece = d.get_text(finished=False, delta=True)
        assert "\ufffd" not in piece
        pieces.append(piece)
    assert "".join(pieces) == tokenizer.decode(ids) == d.output_text


def test_stop_string_cuts_and_holds_back(tokenizer):
    ids = tokenizer.encode("one two three STOP four")
    d = IncrementalDetokenizer(tokenizer, [], SamplingParams(stop=["STOP"]))
    shown = ""
    hit = None
    for tid in ids:
        hit = d.update([tid])
        shown += d.get_text(finished=hit is not None, delta=True)
        assert "ST" not in shown or hit is not None
        if hit:
            break
    assert hit == "STOP" and shown == "one two three "
