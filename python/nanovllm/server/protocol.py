"""The OpenAI wire format: request models (validated by pydantic) and response bodies.

Requests map onto ``nanovllm.SamplingParams``; a field the client leaves out keeps the
engine's default, so defaults are never restated here. Responses are built as plain dicts
straight from ``StreamDelta`` / ``CompletionOutput``: they are only ever serialized, and
each streamed chunk is on the hot path.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nanovllm.outputs import Logprob, SampleLogprobs
from nanovllm.sampling_params import SamplingParams

# OpenAI fields and vLLM's extra sampling fields that map 1:1 onto SamplingParams.
_SAMPLING_FIELDS = (
    "n",
    "temperature",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "top_k",
    "min_p",
    "repetition_penalty",
    "min_tokens",
    "ignore_eos",
    "stop_token_ids",
    "skip_special_tokens",
    "include_stop_str_in_output",
)


class _Strict(BaseModel):
    # A misspelt field is an error, not a silently ignored wish.
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool = False


class _SamplingRequest(_Strict):
    model: str | None = None
    n: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None  # accepted for compatibility; unused
    # vLLM's extensions
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    ignore_eos: bool | None = None
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool | None = None
    include_stop_str_in_output: bool | None = None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def _sampling_params(self, max_tokens: int | None, logprobs: int | None) -> SamplingParams:
        """Raises ValueError / TypeError naming the field, from SamplingParams' validation."""
        given = {
            name: getattr(self, name)
            for name in _SAMPLING_FIELDS
            if getattr(self, name) is not None
        }
        if max_tokens is not None:
            given["max_tokens"] = max_tokens
        return SamplingParams(logprobs=logprobs, **given)


class CompletionRequest(_SamplingRequest):
    # Text, token ids, or a list of either: one choice set per prompt.
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = None  # None: the engine's default (16, as OpenAI's)
    logprobs: int | None = None

    def sampling_params(self) -> SamplingParams:
        return self._sampling_params(self.max_tokens, self.logprobs)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    # Roles and extra keys (name, tool_call_id, ...) go to the chat template as given.
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[TextPart] | None = None

    def for_template(self) -> dict[str, Any]:
        message = self.model_dump(exclude_none=True)
        if isinstance(self.content, list):
            message["content"] = "\n".join(part.text for part in self.content)
        return message


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    # vLLM's extensions
    add_generation_prompt: bool = True
    chat_template: str | None = None

    def sampling_params(self, max_tokens_default: int) -> SamplingParams:
        """``max_tokens_default`` applies when the client sets no limit (the rest of the
        context, as OpenAI does)."""
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError(
                f"top_logprobs = {self.top_logprobs} is invalid: it needs logprobs = true"
            )
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        max_tokens = next(
            (m for m in (self.max_completion_tokens, self.max_tokens) if m is not None),
            max_tokens_default,
        )
        return self._sampling_params(max_tokens, logprobs)


class TokenizeRequest(_Strict):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


class DetokenizeRequest(_Strict):
    model: str | None = None
    tokens: list[int]


# ----------------------------------------------------------------------- responses


def error_body(
    message: str, type_: str, param: str | None = None, code: str | int | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _top(entry: dict[int, Logprob]) -> list[Logprob]:
    """The requested top candidates, most likely first (the sampled token only if among them)."""
    ranked = [lp for lp in entry.values() if lp.rank is not None]
    return sorted(ranked, key=lambda lp: lp.rank or 0)


class CompletionLogprobs:
    """The legacy completions ``logprobs`` object, built up delta by delta.

    ``text_offset`` counts characters of the tokens' own texts from the start of the choice,
    as OpenAI (and vLLM) do.
    """

    def __init__(self) -> None:
        self._offset = 0

    def add(self, token_ids: Sequence[int], entries: SampleLogprobs) -> dict[str, Any]:
        tokens: list[str] = []
        token_logprobs: list[float] = []
        top_logprobs: list[dict[str, float]] = []
        offsets: list[int] = []
        for token_id, entry in zip(token_ids, entries):
            sampled = entry[token_id]
            text = sampled.decoded_token or ""
            tokens.append(text)
            token_logprobs.append(sampled.logprob)
            top_logprobs.append(
                {lp.decoded_token or "": lp.logprob for lp in [sampled, *_top(entry)]}
            )
            offsets.append(self._offset)
            self._offset += len(text)
        return {
            "tokens": tokens,
            "token_logprobs": token_logprobs,
            "top_logprobs": top_logprobs,
            "text_offset": offsets,
        }


def _chat_token(logprob: Logprob) -> dict[str, Any]:
    text = logprob.decoded_token or ""
    return {"token": text, "logprob": logprob.logprob, "bytes": list(text.encode("utf-8"))}


def chat_logprobs(token_ids: Sequence[int], entries: SampleLogprobs) -> dict[str, Any]:
    """The chat ``logprobs`` object: ``{"content": [...]}``, one entry per token."""
    content = []
    for token_id, entry in zip(token_ids, entries):
        item = _chat_token(entry[token_id])
        item["top_logprobs"] = [_chat_token(lp) for lp in _top(entry)]
        content.append(item)
    return {"content": content}
