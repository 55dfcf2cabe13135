"""The prompt and conversation shapes LLM accepts."""

from __future__ import annotations

from typing import Any

import pytest
from nanovllm.inputs import is_conversation, normalize_conversations, normalize_prompts

HI = [{"role": "user", "content": "Hi"}]


def test_prompt_shapes() -> None:
    assert normalize_prompts("a") == ["a"]
    assert normalize_prompts(["a", "b"]) == ["a", "b"]
    assert normalize_prompts([1, 2, 3]) == [[1, 2, 3]]
    assert normalize_prompts([[1, 2], (3,)]) == [[1, 2], [3]]
    assert normalize_prompts({"prompt_token_ids": [4]}) == [[4]]
    mixed: list[Any] = [{"prompt": "x"}, "y", [5]]
    assert normalize_prompts(mixed) == ["x", "y", [5]]
    assert normalize_prompts([]) == []


@pytest.mark.parametrize("bad", [3.5, None, [1, "a"], [[1.5]], {"text": "x"}, [True, False]])
def test_bad_prompts_are_type_errors(bad: object) -> None:
    with pytest.raises(TypeError, match="prompt"):
        normalize_prompts(bad)  # type: ignore[arg-type]


def test_conversation_shapes() -> None:
    assert is_conversation(HI) and not is_conversation([HI]) and not is_conversation("Hi")
    assert normalize_conversations(HI) == [HI]
    assert normalize_conversations([HI, HI]) == [HI, HI]
    with pytest.raises(TypeError, match="messages"):
        normalize_conversations("Hi")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="conversation 1"):
        normalize_conversations([HI, ["Hi"]])  # type: ignore[arg-type]
