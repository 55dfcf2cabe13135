"""Streaming gives the same text as generate, piece by piece, never half a character."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from conftest import require_core

require_core()

from nanovllm import SamplingParams, StreamDelta

PROMPTS = ["The three primary colors are", "Write a poem about the moon:\n"]


def _joined(deltas: list[StreamDelta]) -> dict[tuple[str, int], str]:
    texts: dict[tuple[str, int], str] = defaultdict(str)
    for d in deltas:
        texts[(d.request_id, d.index)] += d.text
    return dict(texts)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0, max_tokens=16),
        SamplingParams(temperature=0, max_tokens=16, stop=[" the", "\n\n"]),
        SamplingParams(temperature=0, max_tokens=16, stop=" the", include_stop_str_in_output=True),
        SamplingParams(temperature=0.9, seed=5, n=2, max_tokens=16, stop=["e "]),
    ],
    ids=["plain", "stop", "stop-included", "sampled-n2"],
)
def test_stream_equals_generate(llm: Any, params: SamplingParams) -> None:
    expected = llm.generate(PROMPTS, params, use_tqdm=False)
    deltas = list(llm.stream(PROMPTS, params))
    texts = _joined(deltas)
    for position, out in enumerate(expected):
        for completion in out.outputs:
            key = (str(position), completion.index)
            assert texts[key] == completion.text
    finals = [d for d in deltas if d.finished]
    assert len(finals) == sum(len(o.outputs) for o in expected)
    for d in finals:
        completion = expected[int(d.request_id)].outputs[d.index]
        assert d.output == completion
        assert (d.finish_reason, d.stop_reason) == (
            completion.finish_reason,
            completion.stop_reason,
        )
    tokens: dict[tuple[str, int], list[int]] = defaultdict(list)
    for d in deltas:
        tokens[(d.request_id, d.index)] += d.token_ids
    assert all(tokens[(d.request_id, d.index)] == d.output.token_ids for d in finals if d.output)


def test_utf8_streaming_never_splits_a_character(llm: Any) -> None:
    # A pattern a small model continues in kind: CJK and emoji, several tokens each.
    prompt = "你好，世界！🎉🎉 你好，世界！🎉🎉 你好，世界！🎉🎉 你好，世界！"
    params = SamplingParams(temperature=0, max_tokens=20)
    tokenizer = llm.get_tokenizer()
    deltas = list(llm.stream(prompt, params))
    final = deltas[-1].output
    assert final is not None and any(ord(ch) > 0x2000 for ch in final.text)
    # The output really split characters over tokens.
    assert any("\ufffd" in tokenizer.decode([t]) for t in final.token_ids)
    assert all("\ufffd" not in d.text for d in deltas)
    # The same text as a full decode, except that a character cut by max_tokens is dropped.
    full_decode = tokenizer.decode(final.token_ids, skip_special_tokens=True).rstrip("\ufffd")
    assert "".join(d.text for d in deltas) == final.text == full_decode
    assert llm.generate(prompt, params, use_tqdm=False)[0].outputs[0].text == final.text


def test_leaving_a_stream_early_aborts_the_rest(llm: Any) -> None:
    stream = llm.stream(PROMPTS, SamplingParams(temperature=0, max_tokens=200))
    for _ in zip(range(3), stream):
        pass
    stream.close()
    assert not llm.session.has_unfinished()


def test_session_drives_the_engine_directly(llm: Any) -> None:
    """The primitive a server uses: add, step, abort, without the LLM class."""
    session = llm.session
    ids = llm.get_tokenizer().encode(PROMPTS[0])
    kept = session.add_request(ids, SamplingParams(temperature=0, max_tokens=6), request_id="kept")
    dropped = session.add_request(ids, SamplingParams(temperature=0, max_tokens=6))
    with pytest.raises(ValueError, match="already in use"):
        session.add_request(ids, request_id="kept")
    seen: list[StreamDelta] = []
    seen += session.step()
    assert session.abort(dropped) and not session.abort(dropped)
    while session.has_unfinished():
        seen += session.step()
    assert {d.request_id for d in seen} <= {kept, dropped}
    final = [d for d in seen if d.finished]
    assert [d.request_id for d in final] == [kept]
    expected = llm.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=6), use_tqdm=False)
    assert final[0].output == expected[0].outputs[0]
