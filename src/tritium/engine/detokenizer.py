"""Incremental detokenization with stop strings.

Text grows one token at a time without ever splitting a UTF-8 character (tokenizers'
DecodeStream buffers partial byte sequences), and text that might be the start of a stop
string is held back until it is known not to be one, so a stream never shows text past a
stop string.
"""

from __future__ import annotations

from tokenizers.decoders import DecodeStream

from tritium.engine.sampling_params import SamplingParams

PROMPT_CONTEXT_TOKENS = 4  # prompt tokens replayed so the first output token spaces right


class IncrementalDetokenizer:
    """Turns one sequence's new token ids into text and watches for stop strings."""

    def __init__(self, tokenizer, prompt_token_ids: list[int], params: SamplingParams) -> None:
        self.tokenizer = tokenizer
        self.backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(
            tokenizer, "_tokenizer", None
        )
        self.stop = list(params.stop_strings)
        self.include_stop = params.include_stop_str_in_output
        self.skip_special_tokens = params.skip_special_tokens
        self.output_text = ""
        self._ids: list[int] = []  # slow-tokenizer fallback only
        self._plain = ""
        self._sent = 0  # characters already handed out (for deltas)
        self._stream = None
        if self.backend is not None:
            self._stream = DecodeStream(skip_special_tokens=params.skip_special_tokens)
            for tid in prompt_token_ids[-PROMPT_CONTEXT_TOKENS:]:
                self._stream.step(self.backend, tid)

    def _decode_next(self, token_id: int) -> str:
        if self._stream is not None:
            assert self.backend is not None  # a stream is made only over a fast backend
            return self._stream.step(self.backend, token_id) or ""
        # Slow tokenizers: decode everything and diff; hold text ending in a partial character.
        self._ids.append(token_id)
        text = self.tokenizer.decode(self._ids, skip_special_tokens=self.skip_special_tokens)
        if text.endswith("\ufffd"):
            return ""
        new = text[len(self._plain) :]
        self._plain = text
        return new

    def update(self, new_token_ids: list[int], skip_last: bool = False) -> str | None:
        """Add tokens' text; returns the stop string matched (text cut before it), if any.
        `skip_last`: the last token is a stop token whose text is not part of the output."""
        ids = new_token_ids[:-1] if skip_last else new_token_ids
        for tid in ids:
            before = len(self.output_text)
            self.output_text += self._decode_next(tid)
            if self.stop and len(self.output_text) > before:
                hit = self._find_stop(before)
                if hit is not None:
                    return hit
        return None

    def _find_stop(self, new_from: int) -> str | None:
        best: tuple[int, str] | None = None
        for s in self.stop:
            i = self.output_text.find(s, max(0, new_from - len(s) + 1))
            if i != -1 and (best is None or i < best[0]):
                best = (i, s)
        if best is None:
            return None
        i, s = best
        self.output_text = self.output_text[: i + len(s) if self.include_stop else i]
        return s

    def _holdback(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop string."""
        text = self.output_text
        longest = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:k]):
                    longest = k
                    break
        return longest

    def get_text(self, finished: bool, delta: bool) -> str:
        """The text to show now: all of it when finished, else all but a possible stop
        string's beginning. With `delta`, only what was not shown before."""
        end = (
            len(self.output_text)
            if finished or not self.stop
            else len(self.output_text) - self._holdback()
        )
        end = max(end, self._sent) if delta else end
        if delta:
            text = self.output_text[self._sent : end]
            self._sent = end
            return text
        return self.output_text[:end]
