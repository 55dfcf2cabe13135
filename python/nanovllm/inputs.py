"""The prompt shapes ``LLM`` accepts, normalized to one list.

A prompt is text, a list of token ids, or vLLM's ``{"prompt": text}`` /
``{"prompt_token_ids": ids}``; a conversation is a list of ``{"role", "content"}``
messages. Callers pass one of them or a list of them.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any, cast

__all__ = [
    "Conversation",
    "Message",
    "Prompt",
    "PromptInput",
    "is_conversation",
    "normalize_conversations",
    "normalize_prompts",
]

Message = Mapping[str, Any]
Conversation = Sequence[Message]
# Text, or token ids (int or dict prompts).
Prompt = str | list[int]
PromptInput = str | Sequence[int] | Mapping[str, Any]


def is_conversation(value: Any) -> bool:
    """A non-empty list of message dicts (those carry a "role")."""
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) > 0
        and all(isinstance(m, Mapping) and "role" in m for m in value)
    )


def normalize_prompts(prompts: PromptInput | Sequence[PromptInput]) -> list[Prompt]:
    """One entry per prompt: the text, or the token ids as a list of int."""
    if isinstance(prompts, (str, Mapping)):
        return [_one_prompt(prompts, 0)]
    if not isinstance(prompts, Sequence):
        raise TypeError(_type_message(prompts))
    if len(prompts) > 0 and all(_is_token_id(t) for t in prompts):
        return [_token_ids(prompts, 0)]
    return [_one_prompt(p, i) for i, p in enumerate(prompts)]


def normalize_conversations(
    messages: Conversation | Sequence[Conversation],
) -> list[list[dict[str, Any]]]:
    """One conversation or a list of them -> a list of conversations."""
    if is_conversation(messages):
        return [_copy(cast(Conversation, messages))]
    if isinstance(messages, Sequence) and not isinstance(messages, str) and len(messages) > 0:
        conversations: list[list[dict[str, Any]]] = []
        for i, conversation in enumerate(messages):
            if not is_conversation(conversation):
                raise TypeError(
                    f"conversation {i} is not a list of messages like "
                    '[{"role": "user", "content": "Hi"}]'
                )
            conversations.append(_copy(cast(Conversation, conversation)))
        return conversations
    raise TypeError(
        'messages must be a conversation ([{"role": "user", "content": "Hi"}, ...]) '
        f"or a non-empty list of conversations, got {type(messages).__name__}"
    )


def _copy(conversation: Conversation) -> list[dict[str, Any]]:
    return [dict(message) for message in conversation]


def _one_prompt(prompt: Any, index: int) -> Prompt:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Mapping):
        if "prompt_token_ids" in prompt:
            return _token_ids(prompt["prompt_token_ids"], index)
        if isinstance(prompt.get("prompt"), str):
            return prompt["prompt"]
        raise TypeError(
            f'prompt {index}: a dict prompt needs "prompt" (text) or "prompt_token_ids"'
        )
    if isinstance(prompt, Sequence):
        return _token_ids(prompt, index)
    raise TypeError(f"prompt {index}: {_type_message(prompt)}")


def _token_ids(ids: Any, index: int) -> list[int]:
    if (
        not isinstance(ids, Sequence)
        or isinstance(ids, str)
        or not all(_is_token_id(t) for t in ids)
    ):
        raise TypeError(f"prompt {index}: token-id prompts must be lists of integers")
    return [operator.index(t) for t in ids]


def _is_token_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def _type_message(value: Any) -> str:
    return (
        "prompts must be a string, a list of token ids, a dict with 'prompt' or "
        f"'prompt_token_ids', or a list of those; got {type(value).__name__}"
    )
