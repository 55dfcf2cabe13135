"""RequestTracker: one engine request's outputs in, text deltas out.

Whatever drives the engine (``EngineSession`` over ``_core.LLMEngine``, or a server over
``_core.EngineLoop``) feeds each ``_core.RequestOutput`` of a request to its tracker and
gets a ``StreamDelta`` back: incremental detokenization, stop strings, logprobs, finish
and stop reasons. When ``update`` reports ``needs_abort``, a stop string ended the
request and the driver must abort it in the engine; the request is finished already.
"""

from __future__ import annotations

from typing import Any

from nanovllm.detokenizer import IncrementalDetokenizer
from nanovllm.outputs import CompletionOutput, Logprob, SampleLogprobs, StreamDelta
from nanovllm.sampling_params import SamplingParams
from nanovllm.stop_strings import StopStringMatcher

__all__ = ["RequestTracker"]


class RequestTracker:
    """Tracks sample ``index`` of request ``request_id`` sampled with ``params``."""

    def __init__(
        self, request_id: str, params: SamplingParams, tokenizer: Any, *, index: int = 0
    ) -> None:
        self.request_id = request_id
        self.index = index
        self.params = params
        self._tokenizer = tokenizer
        self._detokenizer = IncrementalDetokenizer(
            tokenizer, skip_special_tokens=params.skip_special_tokens
        )
        self._stop = StopStringMatcher(
            params.stop_strings, include_in_output=params.include_stop_str_in_output
        )
        self.text = ""
        self.token_ids: list[int] = []
        self.logprobs: SampleLogprobs | None = [] if params.logprobs is not None else None
        self.cumulative_logprob = 0.0
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None
        self.num_prompt_tokens = 0
        self.num_cached_tokens = 0
        # Set by update() when a stop string ended a request the engine still runs.
        self.needs_abort = False
        self._num_streamed_chars = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def update(self, out: Any) -> StreamDelta:
        """Applies one ``_core.RequestOutput`` of this request; returns what it added.

        Call it until ``finished``; later outputs (the engine's report of the abort that a
        stop string asked for) belong to no one and must be dropped by the driver.
        """
        params = self.params
        new_ids = list(out.new_token_ids)
        self.token_ids.extend(new_ids)
        self.num_prompt_tokens = out.num_prompt_tokens
        self.num_cached_tokens = out.num_cached_tokens
        new_logprobs = self._add_logprobs(out, new_ids)

        text_ids = new_ids
        if out.finished and out.finish_reason == "stop" and new_ids:
            # The engine stopped on eos or a stop token id, the last token. As in vLLM, its
            # text is not part of the output unless asked for.
            if new_ids[-1] in params.stop_token_ids:
                self.stop_reason = new_ids[-1]
            if not params.include_stop_str_in_output:
                text_ids = new_ids[:-1]
        new_text = self._detokenizer.push(text_ids)
        if out.finished:
            new_text += self._detokenizer.flush()
        self.text += new_text

        if self._stop and len(self.token_ids) >= params.min_tokens:
            match = self._stop.find(self.text, len(new_text))
            if match is not None:
                self.text = self.text[: match.end]
                self.finish_reason = "stop"
                self.stop_reason = match.stop
                self.needs_abort = not out.finished
        if self.finish_reason is None and out.finished:
            self.finish_reason = out.finish_reason or "abort"

        # Text that may yet turn out to begin a stop string waits for the next tokens.
        visible = (
            len(self.text) if self.finished else len(self.text) - self._stop.holdback(self.text)
        )
        delta_text = self.text[self._num_streamed_chars : visible]
        self._num_streamed_chars = max(self._num_streamed_chars, visible)
        return StreamDelta(
            request_id=self.request_id,
            index=self.index,
            text=delta_text,
            token_ids=new_ids,
            logprobs=new_logprobs,
            finished=self.finished,
            finish_reason=self.finish_reason,
            stop_reason=self.stop_reason,
            num_prompt_tokens=self.num_prompt_tokens,
            num_cached_tokens=self.num_cached_tokens,
            output=self.completion() if self.finished else None,
        )

    def completion(self) -> CompletionOutput:
        """Everything so far, as a ``CompletionOutput``."""
        return CompletionOutput(
            index=self.index,
            text=self.text,
            token_ids=list(self.token_ids),
            finish_reason=self.finish_reason,
            stop_reason=self.stop_reason,
            logprobs=list(self.logprobs) if self.logprobs is not None else None,
            cumulative_logprob=self.cumulative_logprob if self.logprobs is not None else None,
        )

    def _add_logprobs(self, out: Any, new_ids: list[int]) -> SampleLogprobs | None:
        if self.logprobs is None:
            return None
        sampled = list(out.new_logprobs)
        top = list(out.new_top_logprobs)
        entries: SampleLogprobs = []
        for position, token_id in enumerate(new_ids):
            entry: dict[int, Logprob] = {}
            candidates = top[position] if position < len(top) else []
            for rank, (candidate, logprob) in enumerate(candidates, start=1):
                entry[candidate] = Logprob(logprob, rank, self._decode_one(candidate))
            if position < len(sampled):
                if token_id not in entry:
                    entry[token_id] = Logprob(sampled[position], None, self._decode_one(token_id))
                self.cumulative_logprob += sampled[position]
            entries.append(entry)
        self.logprobs.extend(entries)
        return entries

    def _decode_one(self, token_id: int) -> str:
        return self._tokenizer.decode([token_id], skip_special_tokens=False)
