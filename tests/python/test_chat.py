"""LLM.chat goes through the tokenizer's chat template."""

from __future__ import annotations

from typing import Any

from conftest import require_core

require_core()

from nanovllm import SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=16)
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Name a color."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"},
    ],
]


def test_chat_equals_generate_on_the_templated_prompt(llm: Any) -> None:
    tokenizer = llm.get_tokenizer()
    templated = [
        tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
        for c in CONVERSATIONS
    ]
    chatted = llm.chat(CONVERSATIONS, GREEDY, use_tqdm=False)
    generated = llm.generate(templated, GREEDY, use_tqdm=False)
    assert [c.prompt for c in chatted] == templated
    assert [c.prompt_token_ids for c in chatted] == [g.prompt_token_ids for g in generated]
    assert [c.outputs[0].text for c in chatted] == [g.outputs[0].text for g in generated]
    single = llm.chat(CONVERSATIONS[0], GREEDY, use_tqdm=False)
    assert len(single) == 1 and single[0].outputs[0].text == chatted[0].outputs[0].text


def test_capital_of_france(llm: Any) -> None:
    out = llm.chat(CONVERSATIONS[0], SamplingParams(temperature=0, max_tokens=24), use_tqdm=False)
    assert "Paris" in out[0].outputs[0].text


def test_custom_chat_template(llm: Any) -> None:
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    out = llm.chat(CONVERSATIONS[0], GREEDY, use_tqdm=False, chat_template=template)[0]
    assert out.prompt == "user: What is the capital of France?\nassistant:"


def test_streamed_chat_equals_chat(llm: Any) -> None:
    expected = llm.chat(CONVERSATIONS[1], GREEDY, use_tqdm=False)[0].outputs[0].text
    assert "".join(d.text for d in llm.stream(CONVERSATIONS[1], GREEDY)) == expected
