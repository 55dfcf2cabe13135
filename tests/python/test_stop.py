"""Stop strings end a request in the engine and cut the text, even across tokens."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import require_core

require_core()

from nanovllm import SamplingParams

PROMPT = "Here is a short story about a dragon and a knight. Once upon a time"
GREEDY = SamplingParams(temperature=0, max_tokens=24)


@pytest.fixture(scope="module")
def full(llm: Any) -> Any:
    return llm.generate(PROMPT, GREEDY, use_tqdm=False)[0].outputs[0]


def _spanning_stop(llm: Any, token_ids: list[int]) -> str:
    """A stop string made of the end of one output token and the start of the next."""
    tokenizer = llm.get_tokenizer()
    for k in range(3, len(token_ids) - 1):
        before = tokenizer.decode(token_ids[:k])
        after = tokenizer.decode(token_ids[: k + 1])
        left, right = tokenizer.decode([token_ids[k - 1]]), tokenizer.decode([token_ids[k]])
        if (
            after.startswith(before)
            and len(left.strip()) >= 2
            and len(right.strip()) >= 2
            and "\ufffd" not in left + right
        ):
            return left[-2:] + right[:2]
    raise AssertionError("no two neighbouring word tokens in the output")


@pytest.mark.parametrize("include", [False, True])
def test_stop_string_spanning_tokens(llm: Any, full: Any, include: bool) -> None:
    stop = _spanning_stop(llm, full.token_ids)
    at = full.text.index(stop)
    params = GREEDY.clone(stop=["never appears", stop], include_stop_str_in_output=include)
    out = llm.generate(PROMPT, params, use_tqdm=False)[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert out.text == (full.text[: at + len(stop)] if include else full.text[:at])
    # The engine stopped right there: fewer tokens, all of them the unstopped run's.
    assert len(out.token_ids) < len(full.token_ids)
    assert out.token_ids == full.token_ids[: len(out.token_ids)]
    assert llm.get_tokenizer().decode(out.token_ids).find(stop) >= 0


def test_stop_string_in_a_batch_leaves_the_others_running(llm: Any, full: Any) -> None:
    stop = _spanning_stop(llm, full.token_ids)
    stopped, unstopped = llm.generate(
        [PROMPT, PROMPT], [GREEDY.clone(stop=stop), GREEDY], use_tqdm=False
    )
    assert stopped.outputs[0].finish_reason == "stop"
    assert unstopped.outputs[0].text == full.text and unstopped.outputs[0].finish_reason == "length"


def test_stop_string_not_in_output_changes_nothing(llm: Any, full: Any) -> None:
    out = llm.generate(PROMPT, GREEDY.clone(stop="@@@never@@@"), use_tqdm=False)[0].outputs[0]
    assert out.text == full.text and out.finish_reason == "length" and out.stop_reason is None
