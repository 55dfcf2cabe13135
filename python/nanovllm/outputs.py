"""What generation returns: plain data, shaped like vLLM's outputs."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CompletionOutput", "Logprob", "RequestOutput", "SampleLogprobs", "StreamDelta"]


@dataclass
class Logprob:
    """One candidate token at one output position."""

    logprob: float
    # 1 = most likely; None for a sampled token outside the requested top N.
    rank: int | None = None
    decoded_token: str | None = None


# Per output token: candidate token id -> Logprob. Always holds the sampled token, plus
# the top ``logprobs`` candidates when ``SamplingParams.logprobs`` > 0.
SampleLogprobs = list[dict[int, Logprob]]


@dataclass
class CompletionOutput:
    """One sample of one prompt."""

    index: int  # which of the prompt's ``n`` samples
    text: str
    token_ids: list[int]
    # "stop" (eos, stop token or stop string), "length" (max_tokens / max_model_len) or
    # "abort"; None while unfinished.
    finish_reason: str | None = None
    # The stop string or stop token id that ended the sample; None otherwise (eos too).
    stop_reason: str | int | None = None
    # Only when SamplingParams.logprobs is set.
    logprobs: SampleLogprobs | None = None
    cumulative_logprob: float | None = None

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    """Everything generated for one prompt."""

    request_id: str
    prompt: str | None  # None when the prompt was given as token ids
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = True
    num_cached_tokens: int = 0  # prompt tokens served by the prefix cache (first sample)


@dataclass
class StreamDelta:
    """What one engine step added to one sample of one request.

    Joining ``text`` over a sample's deltas gives exactly the non-streamed text. Text that
    might still change (an incomplete UTF-8 character, or the beginning of a stop string)
    is held back, so a delta may carry tokens and no text. The last delta of a sample has
    ``finished`` set and carries the whole sample as ``output``.
    """

    request_id: str
    index: int  # sample index within the request's ``n``
    text: str
    token_ids: list[int]
    logprobs: SampleLogprobs | None = None
    finished: bool = False
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    output: CompletionOutput | None = field(default=None, repr=False)
