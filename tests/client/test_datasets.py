"""Prompt files and random datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tritium.client.datasets import file_dataset, load_prompts, random_dataset


def test_load_prompts_skips_blank_lines_and_keeps_order(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("first prompt\n\n  \nsecond prompt\r\nthird\n", encoding="utf-8")
    assert load_prompts(path) == ["first prompt", "second prompt", "third"]


def test_load_prompts_rejects_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no prompts"):
        load_prompts(path)


def test_file_dataset_cycles_to_num_prompts(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("a b\nc\n", encoding="utf-8")
    requests = file_dataset(path, 5, max_tokens=7)
    assert [r.prompt for r in requests] == ["a b", "c", "a b", "c", "a b"]
    assert {r.max_tokens for r in requests} == {7}
    assert [r.prompt_words for r in requests[:2]] == [2, 1]


def test_random_dataset_lengths_within_range_and_reproducible() -> None:
    requests = random_dataset(50, input_len=20, output_len=10, range_ratio=0.5, seed=3)
    assert len(requests) == 50
    for r in requests:
        assert 10 <= r.prompt_words <= 30
        assert len(r.prompt.split()) == r.prompt_words
        assert r.max_tokens is not None and 5 <= r.max_tokens <= 15
    assert len({r.prompt_words for r in requests}) > 1
    assert random_dataset(50, 20, 10, 0.5, seed=3) == requests
    assert random_dataset(50, 20, 10, 0.5, seed=4) != requests


def test_random_dataset_fixed_lengths_without_range() -> None:
    requests = random_dataset(4, input_len=8, output_len=3, seed=0)
    assert [r.prompt_words for r in requests] == [8] * 4
    assert [r.max_tokens for r in requests] == [3] * 4
    assert len({r.prompt for r in requests}) == 4  # distinct prompts: no accidental prefix hits


def test_random_dataset_rejects_a_bad_range_ratio() -> None:
    with pytest.raises(ValueError, match="range ratio"):
        random_dataset(1, 8, 3, range_ratio=1.0)
