"""OutputProcessor: the frontend's per-request state. Fans a request out into n core
requests, turns core token outputs into text (incremental detokenization, stop strings)
and into RequestOutputs of the requested kind (cumulative, delta, final only)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from tritium.engine.detokenizer import IncrementalDetokenizer
from tritium.engine.messages import EngineCoreOutput, EngineCoreRequest, TokenLogprobs
from tritium.engine.outputs import CompletionOutput, Logprob, RequestOutput
from tritium.engine.sampling_params import RequestOutputKind, SamplingParams


@dataclass
class SampleState:
    """One of a request's n samples (one core request)."""

    index: int
    core_id: str
    detok: IncrementalDetokenizer
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, Logprob]] | None = None
    cumulative_logprob: float | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    sent_tokens: int = 0
    sent_logprobs: int = 0


@dataclass
class RequestState:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    samples: list[SampleState]
    # prompt_logprobs: [None] (the first token), then what the core sends; None if unasked.
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None
    sent_prompt_logprobs: bool = False

    @property
    def finished(self) -> bool:
        return all(s.finish_reason is not None for s in self.samples)


class OutputProcessor:
    """Owns every live request's frontend state."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.requests: dict[str, RequestState] = {}
        self._by_core_id: dict[str, tuple[RequestState, SampleState]] = {}

    def add_request(
        self,
        request_id: str,
        prompt: str | None,
        prompt_token_ids: list[int],
        params: SamplingParams,
        priority: int = 0,
    ) -> list[EngineCoreRequest]:
        """Register a request; returns the core requests to send (n of them)."""
        if request_id in self.requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        samples, core_reqs = [], []
        for i in range(params.n):
            core_id = request_id if params.n == 1 else f"{i}_{request_id}"
            # One core request scores the prompt for all n: the same numbers.
            child = dataclasses.replace(
                params, n=1, prompt_logprobs=params.prompt_logprobs if i == 0 else None
            )
            if params.n > 1 and params.seed is not None:
                child.seed = params.seed + i  # distinct but reproducible samples
            sample = SampleState(
                i, core_id, IncrementalDetokenizer(self.tokenizer, prompt_token_ids, child)
            )
            if params.logprobs is not None:
                sample.logprobs, sample.cumulative_logprob = [], 0.0
            samples.append(sample)
            core_reqs.append(EngineCoreRequest(core_id, list(prompt_token_ids), child, priority))
        state = RequestState(request_id, prompt, list(prompt_token_ids), params, samples)
        if params.prompt_logprobs is not None:
            state.prompt_logprobs = [None]
        self.requests[request_id] = state
        for s in samples:
            self._by_core_id[s.core_id] = (state, s)
        return core_reqs

    def core_ids(self, request_id: str) -> list[str]:
        state = self.requests.get(request_id)
        return [s.core_id for s in state.samples if s.finish_reason is None] if state else []

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """Finish a request as aborted; returns its final output (None if unknown)."""
        state = self.requests.get(request_id)
        if state is None:
            return None
        out = None
        for s in state.samples:
            if s.finish_reason is None:
                s.finish_reason = "abort"
                out = self._make_output(state, s)
        return out

    def process_outputs(
        self, outputs: list[EngineCoreOutput]
    ) -> tuple[list[RequestOutput], list[str]]:
        """Apply one step's core outputs. Returns the RequestOutputs to deliver and the core
        request ids to abort (a stop string ended them while the core kept going)."""
        results: list[RequestOutput] = []
        to_abort: list[str] = []
        for o in outputs:
            entry = self._by_core_id.get(o.request_id)
            if entry is None:
                continue  # aborted here while the core was stepping
            state, s = entry
            if s.finish_reason is not None:
                continue
            s.token_ids += o.new_token_ids
            if s.logprobs is not None and o.new_logprobs:
                self._add_logprobs(s, o.new_logprobs)
            if state.prompt_logprobs is not None and o.new_prompt_logprobs:
                state.prompt_logprobs += map(self._logprob_entry, o.new_prompt_logprobs)
            stop_token = o.finish_reason == "stop"  # the core stops only on tokens
            stop_str = None
            if state.params.detokenize:
                stop_str = s.detok.update(
                    o.new_token_ids, skip_last=stop_token and not s.detok.include_stop
                )
            if stop_str is not None:
                s.finish_reason, s.stop_reason = "stop", stop_str
                if o.finish_reason is None:
                    to_abort.append(s.core_id)
            elif o.finish_reason is not None:
                s.finish_reason, s.stop_reason = o.finish_reason, o.stop_reason
            result = self._make_output(state, s)
            if result is not None:
                results.append(result)
        return results, to_abort

    def _add_logprobs(self, s: SampleState, new: list[TokenLogprobs]) -> None:
        assert s.logprobs is not None and s.cumulative_logprob is not None
        for token in new:
            s.logprobs.append(self._logprob_entry(token))
            s.cumulative_logprob += token[1][0]

    def _logprob_entry(self, token: TokenLogprobs) -> dict[int, Logprob]:
        """{token id: Logprob} for the scored token and the top k, with their text."""
        ids, lps, rank = token
        entry = {ids[0]: Logprob(lps[0], rank, self.tokenizer.decode([ids[0]]))}
        for r, (tid, lp) in enumerate(zip(ids[1:], lps[1:], strict=True), start=1):
            entry.setdefault(tid, Logprob(lp, r, self.tokenizer.decode([tid])))
        return entry

    def _make_output(self, state: RequestState, s: SampleState) -> RequestOutput | None:
        kind = state.params.output_kind
        finished = state.finished
        if finished:
            for sample in state.samples:
                self._by_core_id.pop(sample.core_id, None)
            del self.requests[state.request_id]
        if kind == RequestOutputKind.FINAL_ONLY:
            if not finished:
                return None
            completions = [self._completion(x, delta=False) for x in state.samples]
        elif kind == RequestOutputKind.DELTA:
            completions = [self._completion(s, delta=True)]
        else:
            completions = [self._completion(x, delta=False) for x in state.samples]
        out = RequestOutput(
            state.request_id, state.prompt, state.prompt_token_ids, completions, finished
        )
        lps = state.prompt_logprobs
        complete = lps is not None and len(lps) == len(state.prompt_token_ids)
        if complete and (kind != RequestOutputKind.DELTA or not state.sent_prompt_logprobs):
            out.prompt_logprobs, state.sent_prompt_logprobs = list(lps or ()), True
        return out

    def _completion(self, s: SampleState, delta: bool) -> CompletionOutput:
        done = s.finish_reason is not None
        text = s.detok.get_text(done, delta)
        if delta:
            tokens, s.sent_tokens = s.token_ids[s.sent_tokens :], len(s.token_ids)
            logprobs = None
            if s.logprobs is not None:
                logprobs, s.sent_logprobs = s.logprobs[s.sent_logprobs :], len(s.logprobs)
        else:
            tokens, logprobs = (
                list(s.token_ids),
                (list(s.logprobs) if s.logprobs is not None else None),
            )
        return CompletionOutput(
            s.index, text, tokens, s.cumulative_logprob, logprobs, s.finish_reason, s.stop_reason
        )
